"""How far two scorings of the same answer options agree: the largest score difference, and the
EvalAI ranks that move beyond near-ties (options whose scores lie within the tolerance may swap)."""
from dataclasses import dataclass

import torch

from utils.evaluation.metrics import NEAR_TIE, near_tie_swaps, scores_to_ranks


@dataclass
class RankAgreement:
    """`ranks_moved` of `options` rank differently, `beyond_near_ties` outside their near-tie group."""
    max_score_difference: float
    ranks_moved: int
    beyond_near_ties: int
    options: int
    tolerance: float

    @property
    def share_beyond_near_ties(self) -> float:
        return self.beyond_near_ties / self.options

    def describe(self) -> str:
        return (f"max |d score| {self.max_score_difference:.1e}; {self.ranks_moved} of {self.options:,} ranks "
                f"differ, {self.beyond_near_ties} beyond near-ties (scores within {self.tolerance:.1e})")


def rank_agreement(scores: torch.Tensor, reference_scores: torch.Tensor,
                   tolerance: float = NEAR_TIE) -> RankAgreement:
    """Compare `scores` with `reference_scores`, both [..., options]; near-ties are taken in the
    reference scores."""
    options = reference_scores.shape[-1]
    reference_rows, rows = reference_scores.reshape(-1, options).float(), scores.reshape(-1, options).float()
    ranks, reference_ranks = scores_to_ranks(rows), scores_to_ranks(reference_rows)
    _, beyond = near_tie_swaps(ranks, reference_ranks, reference_rows, tolerance)
    return RankAgreement(float((rows - reference_rows).abs().max()), int((ranks != reference_ranks).sum()), beyond,
                         rows.numel(), tolerance)
