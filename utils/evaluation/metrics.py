"""VisDial ranking metrics: recall@k, mean rank, MRR and NDCG, equal to the reference's including its tie
order (an unstable `torch.sort(descending=True)` over rows of options); docs/reference.md for its two fixes."""
import warnings

import torch

RECALL_CUTOFFS = (1, 5, 10)
NEAR_TIE = 1e-6  # scores closer than this are ordered by the arithmetic's last bits
METRIC_LABELS = (("r@1", "R@1", "{:.4f}"), ("r@5", "R@5", "{:.4f}"), ("r@10", "R@10", "{:.4f}"),
                 ("mean", "Mean rank", "{:.2f}"), ("mrr", "MRR", "{:.4f}"), ("ndcg", "NDCG", "{:.4f}"))


def scores_to_ranks(scores: torch.Tensor) -> torch.Tensor:
    """scores [..., options] -> int64 ranks of the same shape (1: the highest), ties in the reference's order."""
    num_options = scores.shape[-1]
    order = scores.reshape(-1, num_options).sort(dim=1, descending=True).indices
    positions = torch.arange(1, num_options + 1, device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return ranks.view(scores.shape)


def near_tie_swaps(actual: torch.Tensor, expected: torch.Tensor, reference_scores: torch.Tensor,
                   tolerance: float = NEAR_TIE) -> tuple[int, int]:
    """Rank rows [M, options] against the expected ones, where options whose reference scores [M, options]
    chain with gaps below `tolerance` form a group that may take any order -> (options moved inside their
    group, options ranked outside it)."""
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
    """Recall@{1,5,10}, mean rank and MRR of the ground-truth option: the reference's keys `r@1, r@5, r@10,
    mean, mrr` (float32, as the reference) and `r_1_round_k, ..., mrr_round_k` for each round k (float64)."""

    def __init__(self) -> None:
        self._gt_ranks: list[torch.Tensor] = []

    def observe(self, scores: torch.Tensor, gt_option_inds: torch.Tensor) -> None:
        """scores [B, rounds, options], gt_option_inds [B, rounds]."""
        ranks = scores_to_ranks(scores.detach())
        if self._gt_ranks and ranks.shape[1] != self._gt_ranks[0].shape[1]:
            raise ValueError(f"SparseGTMetrics: {ranks.shape[1]} rounds observed after {self._gt_ranks[0].shape[1]}")
        gt_index = gt_option_inds.to(ranks.device).long().view(ranks.shape[0], ranks.shape[1], 1)
        self._gt_ranks.append(ranks.gather(2, gt_index).squeeze(2).cpu())

    def retrieve(self, reset: bool = True) -> dict[str, float]:
        """The accumulated metrics ({} when nothing was observed)."""
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
    """NDCG at k = the options with non-zero relevance, of the annotated round's scores [B, options] and
    relevance [B, options]. An annotation whose relevances are all zero is skipped, with a warning."""

    def __init__(self) -> None:
        self.reset()

    def observe(self, scores: torch.Tensor, relevance: torch.Tensor) -> None:
        scores = scores.detach().reshape(-1, scores.shape[-1])
        relevance = relevance.detach().to(scores.device).float().reshape(scores.shape)
        num_relevant = (relevance != 0).sum(dim=1, keepdim=True)          # [B, 1]
        ranking = scores.sort(dim=1, descending=True).indices
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
        """{"ndcg": mean over annotations}, or {} when none was usable."""
        if self._num_all_zero:
            warnings.warn(f"NDCG: skipped {self._num_all_zero} annotation(s) whose relevances are all zero",
                          stacklevel=2)
        metrics = {"ndcg": self._ndcg_sum / self._count} if self._count else {}
        if reset:
            self.reset()
        return metrics

    def reset(self) -> None:
        self._ndcg_sum = 0.0
        self._count = 0
        self._num_all_zero = 0


def exact_ties(scores: torch.Tensor, gt_option_inds: torch.Tensor) -> dict[str, float]:
    """`tied_rounds`: rounds of scores [dialogs, rounds, options] whose ground truth (gt_option_inds
    [dialogs, rounds]) ties another option, and `r@k_pessimistic`, `mrr_pessimistic` with every tied
    option ranked before it (docs/evaluation.md, "Exact ties")."""
    gt_scores = scores.gather(-1, gt_option_inds.long().reshape(*scores.shape[:-1], 1))
    tied = (scores == gt_scores).sum(-1) > 1
    pessimistic = (scores >= gt_scores).sum(-1).flatten().float()
    metrics = {"tied_rounds": int(tied.sum())}
    metrics.update({f"r@{k}_pessimistic": (pessimistic <= k).float().mean().item() for k in RECALL_CUTOFFS})
    metrics["mrr_pessimistic"] = pessimistic.reciprocal().mean().item()
    return metrics


def visdial_metrics(scores: torch.Tensor, gt_option_inds: torch.Tensor, round_id: torch.Tensor | None = None,
                    gt_relevance: torch.Tensor | None = None) -> dict[str, float]:
    """All val metrics of scores [dialogs, rounds, options], gt_option_inds [dialogs, rounds]; NDCG when
    round_id [dialogs] (1-based, annotated) and gt_relevance [dialogs, options] are given."""
    sparse = SparseGTMetrics()
    sparse.observe(scores, gt_option_inds)
    metrics = sparse.retrieve()
    if round_id is not None and gt_relevance is not None:
        ndcg = NDCG()
        annotated_scores = scores[torch.arange(scores.shape[0]), round_id.view(-1).long() - 1]
        ndcg.observe(annotated_scores, gt_relevance)
        metrics.update(ndcg.retrieve())
    return metrics
