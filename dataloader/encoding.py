"""Tokenised dialogs and image records -> model inputs (the reference's encode_input /
encode_image_input), built with numpy and without padding to max_seq_len."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_REGIONS = 37
REGION_MASK_PROB = 0.15        # the reference masks regions at 0.15 whatever -mask_prob says
REGION_ZEROING_PROB = 0.9      # a masked region's features become 0 with this probability


class TokenTable:
    """Token ids of a list of strings, stored flat (cheap to pickle to DataLoader workers):
    `table[i]` -> int64 array of the ids of string i."""

    def __init__(self, token_lists: list[list[int]]):
        lengths = np.fromiter((len(ids) for ids in token_lists), dtype=np.int64, count=len(token_lists))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.fromiter((token for ids in token_lists for token in ids), dtype=np.int64,
                               count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index]:self.offsets[index + 1]]

    def length(self, index) -> np.ndarray | int:
        """Token count of string(s) `index` (an int or an index array)."""
        return self.offsets[np.asarray(index) + 1] - self.offsets[np.asarray(index)]


@dataclass
class EncodedPrefix:
    """`[CLS] u1 [SEP] ... uk [SEP]`: the part a group of sequences shares (all but the last utterance)."""

    tokens: np.ndarray        # [P]
    segments: np.ndarray      # [P]
    sep_positions: np.ndarray  # [k]
    next_segment: int         # segment of the final utterance


def encode_prefix(utterances: list[np.ndarray], max_rounds: int, cls_id: int, sep_id: int) -> EncodedPrefix:
    """Encode the shared utterances of contexts whose final utterance comes later. `[CLS]` and u1
    get the start segment, then it alternates per utterance. A context (len(utterances) + 1
    utterances; the caption counts as a round) of more than max_rounds rounds keeps its last
    2 * max_rounds utterances and starts at segment 0 (the reference's `pruneRounds`), else at 1."""
    context_length = len(utterances) + 1
    start_segment = 1
    if context_length // 2 + 1 > max_rounds:
        utterances = utterances[context_length - 2 * max_rounds:]
        start_segment = 0
    pieces, segments, sep_positions = [np.array([cls_id])], [np.array([start_segment])], []
    position = 0
    for number, utterance in enumerate(utterances):
        segment = start_segment ^ (number & 1)
        pieces += [utterance, np.array([sep_id])]
        segments.append(np.full(len(utterance) + 1, segment))
        position += len(utterance) + 1
        sep_positions.append(position)
    return EncodedPrefix(np.concatenate(pieces).astype(np.int64), np.concatenate(segments).astype(np.int64),
                         np.array(sep_positions, dtype=np.int64), start_segment ^ (len(utterances) & 1))


def pack_sequences(prefixes: list[EncodedPrefix], finals: list[tuple[int, np.ndarray]], sep_id: int) -> dict:
    """Complete each (prefix index, final utterance) into a sequence, padded to the longest: int64
    tokens / segments [n, L], sep_indices [n, S] (the [SEP]s' positions), hist_len [n] (utterances
    - 1), lengths [n]; 0-padded."""
    count = len(finals)
    prefix_of_row = np.array([prefix_index for prefix_index, _ in finals], dtype=np.int64)
    final_lengths = np.array([len(final) for _, final in finals], dtype=np.int64)
    prefix_lengths = np.array([len(prefix.tokens) for prefix in prefixes], dtype=np.int64)
    prefix_seps = np.array([len(prefix.sep_positions) for prefix in prefixes], dtype=np.int64)
    lengths = prefix_lengths[prefix_of_row] + final_lengths + 1
    hist_len = prefix_seps[prefix_of_row]
    tokens = np.zeros((count, int(lengths.max())), dtype=np.int64)
    segments = np.zeros_like(tokens)
    sep_indices = np.zeros((count, int(hist_len.max()) + 1), dtype=np.int64)
    for prefix_index, prefix in enumerate(prefixes):
        rows = np.flatnonzero(prefix_of_row == prefix_index)
        tokens[rows, :len(prefix.tokens)] = prefix.tokens
        segments[rows, :len(prefix.tokens)] = prefix.segments
        sep_indices[rows, :len(prefix.sep_positions)] = prefix.sep_positions
    for row, (prefix_index, final) in enumerate(finals):
        prefix = prefixes[prefix_index]
        start, end = len(prefix.tokens), lengths[row] - 1
        tokens[row, start:end] = final
        tokens[row, end] = sep_id
        segments[row, start:end + 1] = prefix.next_segment
        sep_indices[row, hist_len[row]] = end
    return {"tokens": tokens, "segments": segments, "sep_indices": sep_indices, "hist_len": hist_len,
            "lengths": lengths}


def mask_tokens(tokens: np.ndarray, sep_indices: np.ndarray, hist_len: np.ndarray, mask_prob: float,
                mask_id: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Masked-LM corruption: each utterance token (not [CLS], [SEP] or padding) becomes [MASK] with
    probability mask_prob (no 80/10/10 split, as the reference). Returns (tokens [n, L], labels
    [n, L]: the original id at masked positions, -1 elsewhere)."""
    count, width = tokens.shape
    real = np.arange(width)[None, :] <= sep_indices[np.arange(count), hist_len][:, None]
    is_sep = np.zeros_like(real)
    np.put_along_axis(is_sep, sep_indices, True, axis=1)  # padding entries (0) mark [CLS], excluded anyway
    eligible = real & ~is_sep
    eligible[:, 0] = False
    chosen = eligible & (rng.random(tokens.shape) < mask_prob)
    labels = np.where(chosen, tokens, -1)
    return np.where(chosen, mask_id, tokens), labels


def encode_image(record: dict, mask_prob: float, rng: np.random.Generator,
                 max_regions: int = MAX_REGIONS) -> dict:
    """A feature-store record -> float32 image_feat [R, F], image_loc [R, 5], image_mask [R],
    image_target [R, 1601] and int64 image_label [R] (R = max_regions, the first rows kept). A kept
    row is masked with probability mask_prob (label 1, features zeroed with probability 0.9), else
    -1; one random row in 1..R-1 is then forced to 1 (a padding row too, as the reference), row 0 to 0."""
    rows = min(int(record["num_boxes"]), max_regions)
    features = np.zeros((max_regions, record["features"].shape[1]), dtype=np.float32)
    features[:rows] = record["features"][:rows]
    locations = np.zeros((max_regions, 5), dtype=np.float32)
    locations[:rows] = record["image_location"][:rows]
    targets = np.zeros((max_regions, record["cls_prob"].shape[1]), dtype=np.float32)
    targets[:rows] = record["cls_prob"][:rows]
    labels = np.full(max_regions, -1, dtype=np.int64)
    draws = rng.random(rows)
    masked = draws < mask_prob
    labels[:rows][masked] = 1
    zeroed = np.flatnonzero(masked & (draws / max(mask_prob, 1e-12) < REGION_ZEROING_PROB))
    features[zeroed] = 0
    labels[rng.integers(1, max_regions)] = 1
    labels[0] = 0
    mask = np.zeros(max_regions, dtype=np.float32)
    mask[:rows] = 1
    return {"image_feat": features, "image_loc": locations, "image_mask": mask, "image_target": targets,
            "image_label": labels}
