"""Your own dialog rounds (a caption, a history of (question, answer) pairs, a question, candidate
answers, an image) as model inputs, encoded exactly as the datasets encode VisDial's."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dataloader.encoding import encode_image, encode_prefix, pack_sequences
from dataloader.feature_formats import record_from_arrays
from dataloader.feature_store import ImageRecord, build_image_record
from dataloader.preprocess import rounds_to_drop
from dataloader.tokenizer import encode_texts, special_token_ids
from utils.errors import UserError
from utils.inputs import is_text

IMAGE_FIELDS = ("image_feat", "image_loc", "image_mask")
"""The image inputs that scoring reads (encode_image also builds the region targets and labels)."""


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class RoundEncoder:
    """Encodes rounds for one tokenizer, `max_seq_len` and `max_rounds` (-visdial_tot_rounds: the
    rounds a sequence keeps, the caption counting as one)."""

    def __init__(self, tokenizer, max_seq_len: int = 256, max_rounds: int = 11):
        if not 2 <= max_rounds <= 11:
            raise UserError(f"max_rounds (-visdial_tot_rounds) must be in 2..11, got {max_rounds}")
        self.tokenizer = tokenizer
        self.special = special_token_ids(tokenizer)
        self.max_seq_len = max_seq_len
        self.max_rounds = max_rounds

    def encode(self, caption: str, history: Sequence[tuple[str, str]], question: str,
               candidates: Sequence[str]) -> dict:
        """The sequences of one round, one per candidate, as an evaluation item holds them:
        int64 arrays tokens, segments, lm_labels (all -1) [n, L], sep_indices [n, S], hist_len [n]
        (n = len(candidates)). Rounds are cut from the front of the history while the longest
        candidate does not fit (the test split's rule). UserError for no or repeated candidates, a
        text that is no valid string, or a round that does not fit even without history."""
        history = _checked_round(caption, history, question, candidates)
        texts = [caption, *(text for turn in history for text in turn), question, *candidates]
        ids = [np.asarray(tokens, dtype=np.int64) for tokens in encode_texts(self.tokenizer, texts)]
        caption_ids, history_ids = ids[0], ids[1:1 + 2 * len(history)]
        question_ids, candidate_ids = ids[1 + 2 * len(history)], ids[2 + 2 * len(history):]
        turns = [(len(history_ids[2 * k]), len(history_ids[2 * k + 1])) for k in range(len(history))]
        longest = max(range(len(candidate_ids)), key=lambda number: len(candidate_ids[number]))
        dropped = rounds_to_drop(len(caption_ids), turns, len(question_ids), len(candidate_ids[longest]),
                                 self.max_seq_len)
        if dropped is None:
            needed = len(caption_ids) + len(question_ids) + len(candidate_ids[longest]) + 4
            raise UserError(f"the caption, the question and the longest candidate {_shown(candidates[longest])} "
                            f"need {needed} tokens, more than max_seq_len {self.max_seq_len} even without history")
        prefix = encode_prefix([caption_ids, *history_ids[2 * dropped:], question_ids], self.max_rounds,
                               self.special["CLS"], self.special["SEP"])
        item = pack_sequences([prefix], [(0, tokens) for tokens in candidate_ids], self.special["SEP"])
        del item["lengths"]
        item["lm_labels"] = np.full_like(item["tokens"], -1)
        return item


def _checked_round(caption, history, question, candidates) -> list[tuple[str, str]]:
    """The history as a list of (question, answer) after checking every field's type; UserError."""
    if not isinstance(caption, str):
        raise UserError(f"the caption must be a string, got {type(caption).__name__}")
    if not isinstance(question, str):
        raise UserError(f"the question must be a string, got {type(question).__name__}")
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise UserError(f"the candidates must be a list of answers, got {type(candidates).__name__}")
    if not candidates:
        raise UserError("no candidate answers to rank")
    first_position = {}
    for number, candidate in enumerate(candidates):
        if not isinstance(candidate, str):
            raise UserError(f"candidate {number} must be a string, got {type(candidate).__name__}")
        if candidate in first_position:
            raise UserError(f"candidate {number} {_shown(candidate)} repeats candidate {first_position[candidate]}")
        first_position[candidate] = number
    if isinstance(history, str) or not isinstance(history, Sequence):
        raise UserError(f"the history must be a list of (question, answer) pairs, got {type(history).__name__}")
    for number, turn in enumerate(history):
        if isinstance(turn, str) or not isinstance(turn, Sequence) or len(turn) != 2 \
                or not all(isinstance(text, str) for text in turn):
            raise UserError(f"history entry {number} must be a (question, answer) pair of strings, got {turn!r:.60}")
    texts = {"the caption": caption, "the question": question,
             **{f"candidate {number}": text for number, text in enumerate(candidates)},
             **{f"history entry {number}": " ".join(turn) for number, turn in enumerate(history)}}
    for name, text in texts.items():
        if not is_text(text):
            raise UserError(f"{name} {_shown(text)} is not valid text (it holds a lone UTF-16 surrogate)")
    return [tuple(turn) for turn in history]


def image_record_from_arrays(arrays: Mapping, feature_size: int | None) -> ImageRecord:
    """An image given as the arrays of the .npz schema (`record_from_arrays`: a dict, or
    `numpy.load("<id>.npz")`) -> the record a feature store's reader returns for it."""
    if not isinstance(arrays, Mapping):
        raise UserError(f"an image is an image id or a mapping of arrays (features, boxes, image_w, image_h), "
                        f"got {type(arrays).__name__}")
    return build_image_record(record_from_arrays(arrays, 0, "image arrays", feature_size))


def image_inputs(record: ImageRecord) -> dict:
    """The image inputs of an evaluation item: image_feat [37, F], image_loc [37, 5], image_mask [37]
    float32 (the first 37 regions, no masking: what the val and test items hold)."""
    encoded = encode_image(record, 0.0, np.random.default_rng(0))
    return {name: encoded[name] for name in IMAGE_FIELDS}

