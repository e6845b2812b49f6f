"""Score files (evaluate.py -save_scores; format in docs/evaluation.md, "Ensembles"): written, read,
checked against each other and the dialogs, and combined into an ensemble."""
import math

import torch

from dataloader.datasets import val_option_order
from dataloader.visdial_json import EVALUATED_SPLITS, NUM_ANSWER_OPTIONS, SPLITS, relevance_of
from utils.errors import UserError
from utils.evaluation.metrics import scores_to_ranks
from utils.evaluation.scoring import ScoredDialogs
from utils.inputs import read_checkpoint
from utils.outputs import Writer

FORMAT, VERSION = "visdial-bert option scores", 1
KEYS = ("image_id", "round_id", "option_index")  # files combine only when these are equal


def score_keys(split: str, dialogs: list[dict], num_rounds: int, num_options: int) -> dict[str, torch.Tensor]:
    """The KEYS of scores [len(dialogs), num_rounds, num_options] of the processed `dialogs` of `split`."""
    image_id = torch.tensor([dialog["image_id"] for dialog in dialogs], dtype=torch.long)
    if SPLITS[split].last_round_only:
        round_id = torch.tensor([[dialog["round_id"]] for dialog in dialogs], dtype=torch.long)
        option_index = torch.arange(num_options).expand(len(dialogs), num_rounds, num_options)
    else:
        round_id = torch.arange(1, num_rounds + 1).expand(len(dialogs), num_rounds)
        option_index = torch.tensor([[val_option_order(turn["gt_index"], num_options) for turn in dialog["dialog"]]
                                     for dialog in dialogs], dtype=torch.long).view(-1, num_rounds, num_options)
    return {"image_id": image_id, "round_id": round_id.contiguous(), "option_index": option_index.contiguous()}


def score_file_content(scored: ScoredDialogs, split: str, dialogs: list[dict]) -> dict:
    """A score file's content for `scored`, the first dialogs of `dialogs`."""
    num_dialogs, num_rounds, num_options = scored.scores.shape
    return {"format": FORMAT, "version": VERSION, "split": split, "scores": scored.scores.float().contiguous(),
            **score_keys(split, dialogs[:num_dialogs], num_rounds, num_options)}


def score_file_writer(content: dict) -> Writer:
    return lambda file: torch.save(content, file)


def read_score_file(path) -> dict:
    """A score file's content, checked (UserError naming `path` and the first problem)."""
    content = read_checkpoint(path, "score file")
    if content.get("format") != FORMAT or content.get("version") != VERSION:
        raise UserError(f"{path}: not a score file of evaluate.py -save_scores (format {FORMAT!r}, "
                        f"version {VERSION})")
    if content.get("split") not in EVALUATED_SPLITS:
        raise UserError(f"{path}: split must be {' or '.join(EVALUATED_SPLITS)}, got {content.get('split')!r}")
    for key in ("scores", *KEYS):
        value = content.get(key)
        if isinstance(value, torch.Tensor) and value.layout != torch.strided:
            raise UserError(f"{path}: {key} is a tensor of layout {value.layout}, expected a dense one")
    scores = content.get("scores")
    if not (isinstance(scores, torch.Tensor) and scores.dim() == 3 and scores.is_floating_point()
            and scores.numel() > 0):
        raise UserError(f"{path}: scores must be a float tensor [dialogs, rounds, options]")
    if not (torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()):
        raise UserError(f"{path}: scores must be probabilities in [0, 1]")
    num_dialogs, num_rounds, num_options = scores.shape
    shapes = {"image_id": (num_dialogs,), "round_id": (num_dialogs, num_rounds),
              "option_index": tuple(scores.shape)}
    for key, shape in shapes.items():
        value = content.get(key)
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.long and tuple(value.shape) == shape):
            raise UserError(f"{path}: {key} must be an int64 tensor of shape {list(shape)}")
    options = content["option_index"].sort(dim=-1).values
    if (options[..., 0] < 0).any() or (options[..., -1] >= NUM_ANSWER_OPTIONS).any() or \
            (options.diff(dim=-1) == 0).any():
        raise UserError(f"{path}: option_index must hold distinct positions in 0..{NUM_ANSWER_OPTIONS - 1} per round")
    return content


def check_same_keys(paths: list, contents: list[dict]) -> None:
    """UserError naming the first mismatch unless every file scores the split, dialogs, rounds and options
    of the first."""
    reference_path, reference = paths[0], contents[0]
    for path, content in zip(paths[1:], contents[1:]):
        if content["split"] != reference["split"]:
            raise UserError(f"{path}: scores the {content['split']} split, "
                            f"{reference_path} the {reference['split']} split")
        if content["scores"].shape != reference["scores"].shape:
            raise UserError(f"{path}: scores [dialogs, rounds, options] {list(content['scores'].shape)}, "
                            f"{reference_path} {list(reference['scores'].shape)}")
        for key in KEYS:
            if not torch.equal(content[key], reference[key]):
                where = tuple(int(i) for i in (content[key] != reference[key]).nonzero()[0])
                dialog = where[0]
                place = f"dialog {dialog} (image {int(reference['image_id'][dialog])})"
                if key == "image_id":
                    raise UserError(f"{path}: dialog {dialog} is image {int(content['image_id'][dialog])}, "
                                    f"in {reference_path} image {int(reference['image_id'][dialog])}")
                if key == "round_id":
                    raise UserError(f"{path}: {place}: scores round {int(content['round_id'][where])}, "
                                    f"{reference_path} round {int(reference['round_id'][where])}")
                raise UserError(f"{path}: {place}, scored round {where[1] + 1}: option {where[2]} is answer "
                                f"{int(content['option_index'][where])} of the json, in {reference_path} answer "
                                f"{int(reference['option_index'][where])}")


def check_matches_dialogs(path, content: dict, dialogs: list[dict], dialogs_path) -> None:
    """UserError naming the first mismatch unless the file scores the first `dialogs` of the processed
    split file `dialogs_path` with the keys evaluation gives them."""
    num_dialogs, num_rounds, num_options = content["scores"].shape
    if num_dialogs > len(dialogs):
        raise UserError(f"{path}: scores {num_dialogs} dialogs, {dialogs_path} holds {len(dialogs)}")
    if SPLITS[content["split"]].same_round_count and any(len(dialog["dialog"]) != num_rounds
                                                         for dialog in dialogs[:num_dialogs]):
        raise UserError(f"{path}: scores {num_rounds} rounds per dialog, the dialogs of {dialogs_path} have others")
    expected = score_keys(content["split"], dialogs[:num_dialogs], num_rounds, num_options)
    check_same_keys([dialogs_path, path], [{**content, **expected}, content])


def val_ground_truth(dialogs: list[dict], annotations, num_options: int) -> dict[str, torch.Tensor]:
    """The DIALOG_FIELDS val metrics need for scores of `dialogs` in the val option order: gt_option_inds
    [dialogs, rounds] (all 0) and, given the dense `annotations` (one per dialog), round_id [dialogs] and
    gt_relevance [dialogs, options]."""
    fields = {"image_id": torch.tensor([dialog["image_id"] for dialog in dialogs], dtype=torch.long),
              "gt_option_inds": torch.zeros(len(dialogs), len(dialogs[0]["dialog"]), dtype=torch.long)}
    if annotations is not None:
        relevance = []
        for dialog, annotation in zip(dialogs, annotations):
            turn = dialog["dialog"][annotation["round_id"] - 1]
            order = val_option_order(turn["gt_index"], num_options)
            relevance.append(torch.tensor(relevance_of(annotation), dtype=torch.float32)[order])
        fields["round_id"] = torch.tensor([annotation["round_id"] for annotation in annotations], dtype=torch.long)
        fields["gt_relevance"] = torch.stack(relevance)
    return fields


def combine_scores(scores: list[torch.Tensor], weights: list[float], method: str) -> torch.Tensor:
    """The ensemble of option scores [dialogs, rounds, options] (one per model) with `weights` (0: left out):
    mean_prob  sum_m w_m p_m / sum_m w_m;  mean_logprob  exp(sum_m w_m log p_m / sum_m w_m);
    rank  1 / (sum_m w_m rank_m / sum_m w_m), each model's ranks as evaluation breaks ties."""
    total = math.fsum(weights)
    if method == "mean_prob":
        values = scores
    elif method == "mean_logprob":
        values = [score.double().clamp_min(torch.finfo(torch.float64).tiny).log() for score in scores]
    elif method == "rank":
        values = [scores_to_ranks(score).double() for score in scores]
    else:
        raise ValueError(f"unknown combination {method!r}")
    mean = sum(weight / total * value.double() for weight, value in zip(weights, values))
    combined = {"mean_prob": lambda: mean, "mean_logprob": lambda: mean.exp(), "rank": lambda: 1 / mean}[method]()
    return combined.float()
