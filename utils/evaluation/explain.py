"""Which image regions an answer's sequence looked at (ViLBERT's text-to-image co-attention
averaged over the current round's tokens, all heads and all co-attention layers), and whether
they point at the right ones. The rules and their reasons: docs/explain.md."""
from __future__ import annotations

from typing import NamedTuple

import torch


class RegionWeight(NamedTuple):
    """One image region: its index (0: the whole image), box (x1, y1, x2, y2 in pixels) and weight."""

    region: int
    box: tuple[float, float, float, float]
    weight: float


class ExplainedAnswer(NamedTuple):
    """A ranked answer with its probability and the weight of every real region of its image."""

    answer: str
    probability: float
    regions: tuple[RegionWeight, ...]

    def top_regions(self, count: int) -> list[RegionWeight]:
        """The `count` regions of highest weight, highest first (equal ones in region order)."""
        return sorted(self.regions, key=lambda region: -region.weight)[:count]


def current_round_tokens(segments: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """bool [N, L]: the tokens of the last question and the answer, without their [SEP]s.

    segments [N, L] alternate per utterance and each utterance's [SEP] carries its segment
    (dataloader/encoding.py), so these are the last two runs of equal segment ids of the real
    tokens (attention_mask [N, L], 1 or True for a real token), each without its last token.
    """
    real = attention_mask.bool()
    changes = torch.zeros_like(real)
    changes[:, 1:] = (segments[:, 1:] != segments[:, :-1]) & real[:, 1:]
    run = changes.long().cumsum(dim=1)                                  # [N, L] run number from the start
    last_run = (run * real).max(dim=1, keepdim=True).values
    ends_run = torch.ones_like(real)
    ends_run[:, :-1] = changes[:, 1:] | ~real[:, 1:]
    return real & (run >= last_run - 1) & ~ends_run


def region_weights(coattention: torch.Tensor, segments: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """coattention [N, C, heads, L, R] text-to-image probabilities, segments and attention_mask
    [N, L] -> float32 weights [N, R] (docs/explain.md: the current round's tokens, all heads
    and layers, equally), each row summing to 1."""
    tokens = current_round_tokens(segments, attention_mask).float()    # [N, L]
    per_token = coattention.float().mean(dim=(1, 2))                    # [N, L, R]
    weights = (tokens[:, :, None] * per_token).sum(dim=1) / tokens.sum(dim=1, keepdim=True).clamp(min=1)
    return weights / weights.sum(dim=1, keepdim=True)


def points_at(weights: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Whether the region of highest weight is relevant: weights [M, R], relevant bool [M, R] -> bool [M]."""
    return relevant.gather(1, weights.argmax(dim=1, keepdim=True)).squeeze(1)


def pointing_chance(relevant: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The hit rate of a uniformly random real region: relevant, real bool [M, R] -> float64 [M]."""
    return relevant.sum(dim=1).double() / real.sum(dim=1).double()


def deletion_outcomes(drops: torch.Tensor, chosen: torch.Tensor,
                      objects: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The deletion test of M rounds: does masking the chosen region lower the right answer's score
    more than masking an object region would?

    drops [M, R]: how much the score fell with region r alone masked (read at `chosen` and where
    `objects` is True); chosen [M]: the region of highest weight; objects bool [M, R]: the object
    regions, at least two per round. Returns float64 [M] twice: the share of the object regions
    other than the chosen one whose deletion lowers the score strictly less (the expected outcome
    of a random one), and the same share for a uniformly random object region in the chosen one's
    place (chance: 0.5 less half the ties).
    """
    chosen_drop = drops.gather(1, chosen[:, None])                                     # [M, 1]
    others = objects.clone()
    others[torch.arange(len(chosen)), chosen] = False
    hits = ((chosen_drop > drops) & others).sum(dim=1).double() / others.sum(dim=1).double()
    pairs = objects[:, :, None] & objects[:, None, :]                                  # [M, R, R]
    beats = (drops[:, :, None] > drops[:, None, :]) & pairs                            # a's drop > b's
    count = objects.sum(dim=1).double()
    return hits, beats.sum(dim=(1, 2)).double() / (count * (count - 1))
