"""Rank candidate answers to your own questions about your own images with a trained checkpoint,
encoded and scored exactly as evaluate.py does (docs/evaluation.md, "Ranking answers in Python").

    ranker = DialogRanker.from_checkpoint("checkpoints-release/basemodel", features="my_features.lmdb")
    ranker.rank(185565, "a man riding a horse", [("is it sunny ?", "yes")], "what color is the horse ?",
                ["brown", "white", "black"])          # -> [("brown", 0.93), ("white", 0.41), ("black", 0.12)]
"""
from __future__ import annotations

from numbers import Integral
from typing import Iterable, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch

from dataloader.collate import collate_dialog_batch
from dataloader.feature_formats import open_image_features
from dataloader.feature_record import NUM_CLASSES
from dataloader.rounds import RoundEncoder, image_inputs, image_record_from_arrays
from dataloader.tokenizer import load_tokenizer
from models import build_model, checked_model_config, model_class
from options import EvalOptions, SharedOptions, check_parameters, resolve_precision
from utils.errors import UserError, note_on_stderr
from utils.evaluation.explain import ExplainedAnswer, RegionWeight
from utils.evaluation.scoring import resolve_tokens_per_batch, score_sequences

ROUNDS_PER_CHUNK = 16
"""Rounds encoded and collated together; their sequences are length-sorted as one pool."""

Image = Union[int, Mapping]
Ranking = list[tuple[str, float]]
"""(answer, probability) pairs, best first; with explain=True ExplainedAnswer triples."""


class RankingQuery(NamedTuple):
    """One round to rank: the arguments of `DialogRanker.rank`."""

    image: Image
    caption: str
    history: Sequence[tuple[str, str]]
    question: str
    candidates: Sequence[str]


def resolve_device(device) -> torch.device:
    """`device` as a torch.device: None or "auto" is a GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device {device!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device}: no GPU is available here")
    return device


class DialogRanker:
    """Ranks candidate answers of dialog rounds with a model (`from_checkpoint`: from files).

    Parameters
    ----------
    model : a model of models.MODEL_TYPES on its device (put in eval mode)
    tokenizer : the BertTokenizer of dataloader/tokenizer.load_tokenizer
    features : open image features (dataloader/feature_formats.open_image_features) for images given
        by id, or None (images then come as arrays)
    max_seq_len, max_rounds, precision, tokens_per_batch : as -max_seq_len, -visdial_tot_rounds,
        -precision and -eval_tokens_per_batch of evaluate.py
    """

    def __init__(self, model: torch.nn.Module, tokenizer, features=None, *, max_seq_len: int = 256,
                 max_rounds: int = 11, precision: str = "auto", tokens_per_batch: int = 0):
        _check_sizes(max_seq_len, max_rounds, tokens_per_batch)
        device = next(model.parameters()).device
        self.precision = resolve_precision(precision, device, evaluation=True)
        self.tokens_per_batch = resolve_tokens_per_batch(tokens_per_batch, device)
        self.model = model.eval()
        self.encoder = RoundEncoder(tokenizer, max_seq_len, max_rounds)
        self.features = features
        self.feature_size = features.feature_size if features is not None else model.config.v_feature_size

    @classmethod
    def from_checkpoint(cls, path, *, model_config=SharedOptions.model_config, vocab=SharedOptions.vocab,
                        features=None, device=None, precision: str = "auto", model_type: str = "vilbert",
                        max_seq_len: int = 256, max_rounds: int = 11,
                        tokens_per_batch: int = 0, note=None) -> "DialogRanker":
        """A ranker with the weights of the checkpoint `path` (loaded strictly) in the model of
        `model_config` (checked against `vocab`, max_seq_len and `features` first). features: a path
        in any format of dataloader/feature_formats.py, an open store, or None; what a format lacks
        goes to `note` (default: stderr). device: "cpu", "cuda", "cuda:N", or None / "auto" for a
        GPU when there is one. Every problem is one UserError line naming the file."""
        _check_sizes(max_seq_len, max_rounds, tokens_per_batch)  # before anything is read
        model_class(model_type)
        device = resolve_device(device)
        resolve_precision(precision, device, evaluation=True)  # a precision the device cannot run is refused before any reading
        tokenizer = load_tokenizer(str(vocab))
        if features is not None and not hasattr(features, "image_ids"):
            features = open_image_features(features, note or note_on_stderr)
        config = checked_model_config(model_config, model_type, len(tokenizer), vocab, max_seq_len, features,
                                      NUM_CLASSES)
        model = build_model(config, model_type, path)
        return cls(model.to(device), tokenizer, features, max_seq_len=max_seq_len, max_rounds=max_rounds,
                   precision=precision, tokens_per_batch=tokens_per_batch)

    def rank(self, image: Image, caption: str, history: Sequence[tuple[str, str]], question: str,
             candidates: Sequence[str], explain: bool = False) -> Ranking:
        """The candidates with their probabilities, best first (equal ones in the given order).
        image: an id of the feature store, or one image's arrays (features [n, F], boxes [n, 4] in
        pixels, image_w, image_h); history: (question, answer) pairs, oldest first. explain: each
        answer as an ExplainedAnswer with the weight of every real region (region 0 the whole image)."""
        return self._rank_chunk([RankingQuery(image, caption, history, question, candidates)], {}, explain)[0]

    def rank_many(self, queries: Iterable[RankingQuery | Sequence | Mapping], explain: bool = False) -> list[Ranking]:
        """`rank` for many rounds (each a RankingQuery, a tuple of rank's five arguments or a dict
        of them), scored together in length-sorted batches; a problem names the query's position."""
        queries = [_as_query(query, number) for number, query in enumerate(queries)]
        rankings, images = [], {}
        for start in range(0, len(queries), ROUNDS_PER_CHUNK):
            rankings += self._rank_chunk(queries[start:start + ROUNDS_PER_CHUNK], images, explain, first_number=start)
        return rankings

    def scores_without(self, query: RankingQuery, regions: Sequence[int]) -> torch.Tensor:
        """The probabilities of the query's candidates [1 + len(regions), candidates]: row 0 with every
        region, row 1 + k with region `regions[k]` masked as padding is (the image attention mask:
        no token or region attends to it). UserError for a region the image does not have."""
        inputs, _ = self._image_inputs(query.image, {})
        real = int(inputs["image_mask"].sum())
        absent = [region for region in regions
                  if not (isinstance(region, Integral) and not isinstance(region, bool) and 0 <= region < real)]
        if absent:
            raise UserError(f"region {absent[0]!r} is not a region of this image (0..{real - 1})")
        item = {**self.encoder.encode(query.caption, query.history, query.question, query.candidates), **inputs}
        masks = np.repeat(item["image_mask"][None], 1 + len(regions), axis=0)
        masks[np.arange(1, 1 + len(regions)), list(regions)] = 0
        batch = collate_dialog_batch([{**item, "image_mask": mask} for mask in masks])
        return score_sequences(self.model, batch, self.tokens_per_batch, self.precision).view(len(masks), -1)

    def image_record(self, image: Image):
        """The reader's record of `image` (an id of the store, or arrays); UserError when the id is
        not in the store or the arrays do not fit (the record check, the features' width)."""
        if _is_image_id(image):
            if self.features is None:
                raise UserError(f"image {image} is given by id, but this ranker has no feature store "
                                "(from_checkpoint(..., features=STORE))")
            return self.features[int(image)]  # UserError when the store lacks it
        return image_record_from_arrays(image, self.feature_size)

    def _rank_chunk(self, queries: list[RankingQuery], images: dict, explain: bool = False,
                    first_number: int | None = None) -> list[Ranking]:
        items, boxes = [], []
        for number, query in enumerate(queries):
            try:
                inputs, image_boxes = self._image_inputs(query.image, images)
                items.append({**self.encoder.encode(query.caption, query.history, query.question, query.candidates),
                              **inputs})
                boxes.append(image_boxes)
            except UserError as error:
                if first_number is None:
                    raise
                raise UserError(f"query {first_number + number}: {error}") from None
        batch = collate_dialog_batch(items)
        sizes = [len(query.candidates) for query in queries]
        weights = torch.zeros(sum(sizes), batch["image_mask"].shape[1]) if explain else None
        scores = score_sequences(self.model, batch, self.tokens_per_batch, self.precision, weights)
        rankings = []
        round_weights = weights.split(sizes) if explain else [None] * len(queries)
        for query, round_scores, image_boxes, weight in zip(queries, scores.split(sizes), boxes, round_weights):
            order = torch.argsort(round_scores, descending=True, stable=True).tolist()
            if not explain:
                rankings.append([(query.candidates[index], float(round_scores[index])) for index in order])
                continue
            rankings.append([ExplainedAnswer(query.candidates[index], float(round_scores[index]),
                                             tuple(RegionWeight(region, box, float(weight[index, region]))
                                                   for region, box in enumerate(image_boxes)))
                             for index in order])
        return rankings

    def _image_inputs(self, image: Image, images: dict) -> tuple[dict, list]:
        """The image inputs of `image` and the pixel boxes of its real regions (an id read once per `images`)."""
        if not _is_image_id(image):
            return _inputs_and_boxes(self.image_record(image))
        if int(image) not in images:
            images[int(image)] = _inputs_and_boxes(self.image_record(image))
        return images[int(image)]


def _check_sizes(max_seq_len, max_rounds, tokens_per_batch) -> None:
    check_parameters(EvalOptions, max_seq_len=("max_seq_len", max_seq_len),
                     max_rounds=("visdial_tot_rounds", max_rounds),
                     tokens_per_batch=("eval_tokens_per_batch", tokens_per_batch))


def _inputs_and_boxes(record) -> tuple[dict, list]:
    """The image inputs of a record and the pixel boxes of its regions that the inputs keep."""
    inputs = image_inputs(record)
    kept = int(inputs["image_mask"].sum())
    return inputs, [tuple(float(value) for value in box[:4]) for box in record["image_location_ori"][:kept]]


def _is_image_id(image) -> bool:
    return isinstance(image, Integral) and not isinstance(image, bool)


def _as_query(query, number: int) -> RankingQuery:
    if isinstance(query, Mapping):
        unknown = set(query) - set(RankingQuery._fields)
        missing = set(RankingQuery._fields) - set(query)
        if unknown or missing:
            raise UserError(f"query {number}: needs the keys {', '.join(RankingQuery._fields)}"
                            + (f"; unknown: {', '.join(map(str, sorted(unknown, key=str)))}" if unknown else ""))
        return RankingQuery(**query)
    if isinstance(query, Sequence) and not isinstance(query, str) and len(query) == len(RankingQuery._fields):
        return RankingQuery(*query)
    raise UserError(f"query {number}: expected ({', '.join(RankingQuery._fields)}), got {type(query).__name__}")
