"""Val metrics of a model (training's validation and evaluate.py -split val), their table, and the report."""
import warnings
from typing import Optional

import torch
from torch.utils.data import Dataset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import val_option_order
from utils.evaluation.metrics import METRIC_LABELS, exact_ties, scores_to_ranks, visdial_metrics
from utils.evaluation.pointing import round_query
from utils.evaluation.ranker import DialogRanker
from utils.evaluation.report import SAMPLE_DIALOGS, DialogPicture, DialogText, write_report
from utils.evaluation.scoring import ScoredDialogs, score_dataset


def evaluate_val(model: torch.nn.Module, dataset: Dataset, *, tokens_per_batch: Optional[int] = None,
                 precision: str = "fp32", num_workers: int = 0, progress: bool = False) -> dict[str, float]:
    """`val_metrics` of `model` on a val VisdialDataset (on every rank under torchrun)."""
    scored = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=tokens_per_batch,
                           precision=precision, num_workers=num_workers, progress=progress)
    return val_metrics(scored)


def val_metrics(scored: ScoredDialogs) -> dict[str, float]:
    """visdial_metrics of scored val dialogs and their exact ties (metrics.exact_ties; a warning if any)."""
    metrics = visdial_metrics(scored.scores, scored.fields["gt_option_inds"],
                              scored.fields.get("round_id"), scored.fields.get("gt_relevance"))
    ties = exact_ties(scored.scores, scored.fields["gt_option_inds"])
    if ties["tied_rounds"]:
        warnings.warn(tie_line(ties), stacklevel=2)
    return {**metrics, **ties}


def tie_line(metrics: dict[str, float]) -> str:
    pessimistic = ", ".join(f"{label} {metrics[key + '_pessimistic']:.4f}" for key, label, _ in METRIC_LABELS
                            if key + "_pessimistic" in metrics)
    return (f"exact ties: in {metrics['tied_rounds']} rounds the ground truth's score equals another option's, "
            f"ranked in the reference's tie order; with every tied option ranked before it: {pessimistic}")


def format_metrics_table(metrics: dict[str, float]) -> str:
    """The overall metrics one per line (with the exact ties, if any), then one row per round."""
    lines = [f"{label:<10}{metrics[key]:>10.4f}" for key, label, _ in METRIC_LABELS if key in metrics]
    if metrics.get("tied_rounds"):
        lines.append(tie_line(metrics))
    rounds = sorted(int(key.rsplit("_", 1)[1]) for key in metrics if key.startswith("mrr_round_"))
    lines.append(f"{'round':<7}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'Mean':>8}{'MRR':>8}")
    for number in rounds:
        values = [metrics[f"{name}_round_{number}"] for name in ("r_1", "r_5", "r_10", "mean", "mrr")]
        lines.append(f"{number:<7}" + "".join(f"{value:>8.4f}" if i != 3 else f"{value:>8.2f}"
                                              for i, value in enumerate(values)))
    return "\n".join(lines)


def write_val_report(directory: str, metrics: dict, scored: ScoredDialogs, data: dict,
                     type_table_html: str = "", ranker: Optional[DialogRanker] = None,
                     pictures: Optional[dict] = None):
    """The report of scored val dialogs, texts from the processed val json's `data`; with `ranker` (the
    scored ViLBERT) and `pictures` (image id -> file) each sample round's picture shaded by the top
    answer's region weights. Returns the page's path."""
    num_options = scored.scores.shape[2]
    texts = []
    for dialog in data["dialogs"][:scored.scores.shape[0]]:
        rounds = dialog["dialog"]
        texts.append(DialogText(
            image_id=dialog["image_id"], caption=dialog["caption"],
            questions=[data["questions"][turn["question"]] for turn in rounds],
            options=[[data["answers"][turn["answer_options"][position]]
                      for position in val_option_order(turn["gt_index"], num_options)] for turn in rounds]))
    shaded = sample_pictures(ranker, data, scored, texts, pictures or {}) if ranker is not None else None
    return write_report(directory, metrics, scored.scores, scored.fields["gt_option_inds"], texts,
                        scored.fields.get("round_id"), scored.fields.get("gt_relevance"),
                        type_table_html=type_table_html, pictures=shaded)


def sample_pictures(ranker: DialogRanker, data: dict, scored: ScoredDialogs, texts: list[DialogText],
                    files: dict) -> list[DialogPicture]:
    """Each sample dialog's picture file (None if `files` lacks it) and per round the top answer's regions."""
    samples = texts[:SAMPLE_DIALOGS]
    top = torch.argmin(scores_to_ranks(scored.scores[:len(samples)].float()), dim=2)       # [dialogs, rounds]
    queries = [round_query(data, data["dialogs"][d], r, text.options[r][int(top[d, r])])
               for d, text in enumerate(samples) for r in range(len(text.questions))]
    answers = iter(ranking[0] for ranking in ranker.rank_many(queries, explain=True))
    return [DialogPicture(files.get(text.image_id), [[(region.box, region.weight) for region in next(answers).regions]
                                                     for _ in text.questions]) for text in samples]
