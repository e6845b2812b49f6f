"""VisDial ranking metrics: recall@k, mean rank, MRR (sparse ground truth) and NDCG (dense relevance).

Metrics are small objects with ``observe`` / ``retrieve`` / ``reset``, shared by the validation that
runs during training and by ``evaluate.py``. The numbers equal the reference implementation's
(``utils/visdial_metrics.py`` of visdial-bert), including its tie order: ranks come from an unstable
``torch.sort(..., descending=True)`` over rows of options, exactly as the reference sorts them.

Two reference bugs are fixed on purpose: NDCG accepts a batch of one dialog (the reference crashed),
and an annotation whose relevances are all zero is skipped and counted in a warning (the reference
gave nan).
"""
import warnings

import torch

RECALL_CUTOFFS = (1, 5, 10)
NEAR_TIE = 1e-6
"""Scores closer than this are a near-tie: their order depends on the arithmetic's last bits."""


def _best_first(rows: torch.Tensor) -> torch.Tensor:
    """Option indices of each row of scores [M, options], highest score first (reference tie order)."""
    return rows.sort(dim=1, descending=True).indices


def scores_to_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Turn scores into 1-based ranks (1 = highest score) along the last dimension.

    Parameters
    ----------
    scores: float tensor [..., num_options] (e.g. [dialogs, rounds, options]).

    Returns
    -------
    int64 tensor of the same shape; ``ranks[..., j]`` is the rank of option j. Ties are broken by
    ``torch.sort(descending=True)`` on the rows flattened to [-1, num_options], as the reference.
    """
    num_options = scores.shape[-1]
    order = _best_first(scores.reshape(-1, num_options))
    positions = torch.arange(1, num_options + 1, device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return ranks.view(scores.shape)


def near_tie_swaps(actual: torch.Tensor, expected: torch.Tensor, reference_scores: torch.Tensor,
                   tolerance: float = NEAR_TIE) -> tuple[int, int]:
    """Compare rank rows [M, options] to the expected ranks up to near-ties of the reference scores.

    Options whose reference scores [M, options] form a chain with gaps below `tolerance` are one
    near-tie group; within a group any order is accepted. Returns (options whose rank differs
    inside their group, options whose rank lies outside the ranks of their group).
    """
    order = reference_scores.sort(dim=1, descending=True)
    new_group = torch.ones_like(order.values, dtype=torch.long)
    new_group[:, 1:] = (order.values[:, :-1] - order.values[:, 1:] >= tolerance).long()
    group_of_sorted = new_group.cumsum(dim=1)
    group = torch.empty_like(group_of_sorted).scatter_(1, order.indices, group_of_sorted)
    # an option is placed correctly when the group at its rank (expected order) is its own group
    group_at_rank = torch.empty_like(group).scatter_(1, expected - 1, group)
    placed_in_group = group_at_rank.gather(1, actual - 1) == group
    moved = actual != expected
    return int((moved & placed_in_group).sum()), int((~placed_in_group).sum())


class SparseGTMetrics:
    """Recall@{1,5,10}, mean rank and MRR of the ground-truth option, overall and per round.

    ``observe(scores [B, rounds, options], gt_option_inds [B, rounds])`` accumulates;
    ``retrieve()`` returns the reference's keys: ``r@1, r@5, r@10, mean, mrr`` (computed in float32
    as the reference) and ``r_1_round_k, r_5_round_k, r_10_round_k, mean_round_k, mrr_round_k`` for
    k = 1..rounds (float64).

    Example
    -------
    >>> metrics = SparseGTMetrics()
    >>> metrics.observe(torch.rand(2, 10, 100), torch.zeros(2, 10, dtype=torch.long))
    >>> sorted(metrics.retrieve())[:3]
    ['mean', 'mean_round_1', 'mean_round_10']
    """

    def __init__(self) -> None:
        self._gt_ranks: list[torch.Tensor] = []

    def observe(self, scores: torch.Tensor, gt_option_inds: torch.Tensor) -> None:
        """Record the rank of each round's ground-truth option (scores [B, R, O], gt [B, R])."""
        ranks = scores_to_ranks(scores.detach())
        if self._gt_ranks and ranks.shape[1] != self._gt_ranks[0].shape[1]:
            raise ValueError(
                f"SparseGTMetrics: {ranks.shape[1]} rounds observed after {self._gt_ranks[0].shape[1]}"
            )
        gt_index = gt_option_inds.to(ranks.device).long().view(ranks.shape[0], ranks.shape[1], 1)
        self._gt_ranks.append(ranks.gather(2, gt_index).squeeze(2).cpu())

    def retrieve(self, reset: bool = True) -> dict[str, float]:
        """Return the accumulated metrics (empty dict when nothing was observed)."""
        if not self._gt_ranks:
            return {}
        gt_ranks = torch.cat(self._gt_ranks)                 # [dialogs, rounds]
        overall = gt_ranks.flatten().float()
        metrics = {f"r@{k}": (overall <= k).float().mean().item() for k in RECALL_CUTOFFS}
        metrics["mean"] = overall.mean().item()
        metrics["mrr"] = overall.reciprocal().mean().item()

        per_round = gt_ranks.double()
        round_values = {f"r_{k}": (per_round <= k).double().mean(0) for k in RECALL_CUTOFFS}
        round_values["mean"] = per_round.mean(0)
        round_values["mrr"] = per_round.reciprocal().mean(0)
        for round_index in range(gt_ranks.shape[1]):
            for name, values in round_values.items():
                metrics[f"{name}_round_{round_index + 1}"] = values[round_index].item()
        if reset:
            self.reset()
        return metrics

    def reset(self) -> None:
        self._gt_ranks = []


class NDCG:
    """Normalised discounted cumulative gain at k = number of options with non-zero relevance.

    ``observe(scores [B, options], relevance [B, options])`` takes the scores of the annotated round
    only; ``retrieve()`` returns ``{"ndcg": mean over annotations}``. Annotations whose relevances are
    all zero have no defined NDCG: they are skipped and counted, and ``retrieve`` warns about them.
    """

    def __init__(self) -> None:
        self.reset()

    def observe(self, scores: torch.Tensor, relevance: torch.Tensor) -> None:
        """Accumulate the NDCG of each row (scores and relevance [B, options], any B >= 1)."""
        scores = scores.detach().reshape(-1, scores.shape[-1])
        relevance = relevance.detach().to(scores.device).float().reshape(scores.shape)
        num_relevant = (relevance != 0).sum(dim=1, keepdim=True)          # [B, 1]
        ranking = _best_first(scores)
        discounts = torch.log2(torch.arange(scores.shape[1], device=scores.device).float() + 2)
        in_top_k = torch.arange(scores.shape[1], device=scores.device) < num_relevant
        gains = relevance.gather(1, ranking) / discounts
        best_gains = relevance.sort(dim=1, descending=True).values / discounts
        dcg = (gains * in_top_k).sum(dim=1)
        best_dcg = (best_gains * in_top_k).sum(dim=1)

        annotated = num_relevant.squeeze(1) > 0
        self._ndcg_sum += (dcg[annotated] / best_dcg[annotated]).double().sum().item()
        self._count += int(annotated.sum())
        self._num_all_zero += int((~annotated).sum())

    def retrieve(self, reset: bool = True) -> dict[str, float]:
        """Return ``{"ndcg": value}``, or an empty dict when no usable annotation was observed."""
        if self._num_all_zero:
            warnings.warn(
                f"NDCG: skipped {self._num_all_zero} annotation(s) whose relevances are all zero",
                stacklevel=2,
            )
        metrics = {"ndcg": self._ndcg_sum / self._count} if self._count else {}
        if reset:
            self.reset()
        return metrics

    def reset(self) -> None:
        self._ndcg_sum = 0.0
        self._count = 0
        self._num_all_zero = 0


def exact_ties(scores: torch.Tensor, gt_option_inds: torch.Tensor) -> dict[str, float]:
    """How exact ties with the ground truth's score move the sparse metrics: `tied_rounds`, the rounds
    of scores [dialogs, rounds, options] whose ground truth (gt_option_inds [dialogs, rounds]) ties
    another option, which the reference's sort orders as it happens to (val puts the ground truth
    at option 0), and `r@1_pessimistic`, ..., `mrr_pessimistic` with every tied option ranked
    before it."""
    gt_scores = scores.gather(-1, gt_option_inds.long().reshape(*scores.shape[:-1], 1))
    tied = (scores == gt_scores).sum(-1) > 1
    pessimistic = (scores >= gt_scores).sum(-1).flatten().float()
    metrics = {"tied_rounds": int(tied.sum())}
    metrics.update({f"r@{k}_pessimistic": (pessimistic <= k).float().mean().item() for k in RECALL_CUTOFFS})
    metrics["mrr_pessimistic"] = pessimistic.reciprocal().mean().item()
    return metrics


def visdial_metrics(
    scores: torch.Tensor,
    gt_option_inds: torch.Tensor,
    round_id: torch.Tensor | None = None,
    gt_relevance: torch.Tensor | None = None,
) -> dict[str, float]:
    """All val metrics of scores [dialogs, rounds, options] in one call.

    ``gt_option_inds`` [dialogs, rounds]; ``round_id`` [dialogs] (1-based annotated round) and
    ``gt_relevance`` [dialogs, options] give NDCG; without them the result has no ``ndcg`` key.
    """
    sparse = SparseGTMetrics()
    sparse.observe(scores, gt_option_inds)
    metrics = sparse.retrieve()
    if round_id is not None and gt_relevance is not None:
        ndcg = NDCG()
        annotated_scores = scores[torch.arange(scores.shape[0]), round_id.view(-1).long() - 1]
        ndcg.observe(annotated_scores, gt_relevance)
        metrics.update(ndcg.retrieve())
    return metrics
