"""Every training objective of the paper (base: masked LM, NSP, masked regions; dense: a ranking
loss over a round's options plus NSP). Labels as the reference's: masked-LM labels hold the token
id at masked positions, -1 elsewhere; NSP 0 (the answer belongs), 1 (a random one), -1 ignored; a
region labelled 1 is predicted. A batch with nothing to predict gives 0 (the reference: nan)."""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def masked_lm_loss(head: nn.Module, sequence_output: torch.Tensor, lm_labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the tokens whose label is not -1.

    head: the masked-LM head ([M, H] -> [M, vocab]); sequence_output [N, L, H]; lm_labels [N, L].
    Only the labelled positions go through the (vocabulary-sized) head. No labelled token: 0.
    """
    labelled = lm_labels != -1
    if not labelled.any():
        return sequence_output.sum() * 0.0
    scores = head(sequence_output[labelled])
    return F.cross_entropy(scores.float(), lm_labels[labelled])


def next_sentence_loss(nsp_scores: torch.Tensor, nsp_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the NSP logits [N, 2] against labels [N] (0: belongs, 1: random, -1 ignored)."""
    return F.cross_entropy(nsp_scores.float(), nsp_labels, ignore_index=-1)


def masked_region_loss(head: nn.Module, sequence_v: torch.Tensor, image_label: torch.Tensor,
                       image_target: torch.Tensor, predict_feature: bool = False) -> torch.Tensor:
    """Masked-region loss over the regions labelled 1, as the reference computes it.

    head: the region head ([M, Hv] -> [M, classes]); sequence_v [N, R, Hv]; image_label [N, R];
    image_target [N, R, classes]. Class targets (default): KL(target || softmax(scores)) summed
    over classes and regions, divided by the number of labelled regions (padding regions labelled
    1 add 0 to the sum but count in the divisor, as in the reference). With `predict_feature`,
    mean squared error per labelled feature element. No labelled region: 0.
    """
    labelled = image_label == 1
    if not labelled.any():
        return sequence_v.sum() * 0.0
    scores = head(sequence_v[labelled]).float()
    target = image_target[labelled].float()
    if predict_feature:
        return F.mse_loss(scores, target, reduction="sum") / target.numel()
    return F.kl_div(F.log_softmax(scores, dim=-1), target, reduction="sum") / labelled.sum()


def pretraining_loss(lm_loss: torch.Tensor, nsp_loss: torch.Tensor, img_loss, coefficients: dict):
    """The base objective: coefficients['lm'] * lm + coefficients['nsp'] * nsp (+ coefficients['img']
    * img when the model has an image stream; img_loss None otherwise).

    Returns (the weighted sum, {'lm_loss', 'nsp_loss'[, 'img_loss']}).
    """
    parts = {"lm_loss": lm_loss, "nsp_loss": nsp_loss}
    loss = coefficients["lm"] * lm_loss.float() + coefficients["nsp"] * nsp_loss.float()
    if img_loss is not None:
        parts["img_loss"] = img_loss
        loss = loss + coefficients["img"] * img_loss.float()
    return loss, parts


@dataclass(frozen=True)
class RankingLoss:
    """The ranking loss over the options of an annotated round that dense fine-tuning minimises.

    name: a key of DENSE_LOSSES (`ce`, the reference's, `listmle` or `approxndcg`; another name is
    a ValueError here); temperature: how smoothly approxNDCG turns score differences into ranks
    (-approxndcg_temperature); target_temperature: ce's target is softmax(relevance /
    target_temperature) (-dense_target_temperature; 1.0 is the reference's).
    """
    name: str = "ce"
    temperature: float = 1.0
    target_temperature: float = 1.0

    def __post_init__(self):
        if self.name not in DENSE_LOSSES:
            raise ValueError(f"unknown ranking loss {self.name!r} (DENSE_LOSSES: {', '.join(DENSE_LOSSES)})")

    @property
    def skips_unannotated_rounds(self) -> bool:
        """Whether rounds whose relevances are all 0 are left out (listmle, approxndcg: neither has
        an order to learn from them; ce keeps the reference's uniform target)."""
        return DENSE_LOSSES[self.name].skips_unannotated_rounds


def option_log_odds(nsp_scores: torch.Tensor) -> torch.Tensor:
    """The score evaluation ranks options by, as a logit: NSP logits [..., 2] -> [...] class-0 minus
    class-1 logit (softmax(nsp_scores)[..., 0] is its sigmoid), in float32 or better."""
    scores = nsp_scores.to(torch.promote_types(nsp_scores.dtype, torch.float32))
    return scores[..., 0] - scores[..., 1]


def all_zero_relevance(relevance: torch.Tensor) -> torch.Tensor:
    """Rounds [B] (of relevance [B, O]) whose relevances are all 0: no ranking is better than another."""
    return (relevance == 0).all(dim=-1)


def tie_break_keys(ranking: RankingLoss, num_rounds: int, num_options: int) -> Optional[torch.Tensor]:
    """ListMLE's order among options of equal relevance: uniform keys [K, O] (the lower key first),
    drawn from torch's CPU generator, which the run seeds with -seed and every checkpoint saves, so
    a resumed run draws the same order. None for the other losses, which draw nothing."""
    return torch.rand(num_rounds, num_options) if DENSE_LOSSES[ranking.name].draws_tie_keys else None


def dense_relevance_loss(nsp_scores: torch.Tensor, relevance: torch.Tensor,
                         target_temperature: float = 1.0) -> torch.Tensor:
    """The reference's dense loss (`ce`): ListNet's top-one loss between the model's distribution
    over the options of a round and the softmax of their dense relevance.

    nsp_scores [B, O, 2] NSP logits of the O options of B rounds; relevance [B, O] raw
    relevance (0 ... 1). The model's distribution is log_softmax over options of the class-0
    logit; the target is softmax(relevance / target_temperature). At 1.0 (the reference's) it is
    nearly flat: 3 options of relevance 1 among 100 get 0.026 each, the others 0.009, so flat
    scores almost satisfy it; a smaller temperature sharpens it. Returns KL(target || model)
    summed over options and averaged over B (0-d): ListNet's cross-entropy minus the target's
    entropy, a constant, so the gradients are ListNet's.
    """
    log_probs = F.log_softmax(nsp_scores[..., 0].float(), dim=1)
    target = F.softmax(relevance.float() / target_temperature, dim=1)
    return F.kl_div(log_probs, target, reduction="batchmean")


def listmle_loss(scores: torch.Tensor, relevance: torch.Tensor, tie_keys: torch.Tensor) -> torch.Tensor:
    """ListMLE (Xia et al. 2008): the negative log-likelihood, under the Plackett-Luce model of the
    scores, of the options sorted by relevance, best first.

    scores, relevance, tie_keys [B, O]; options of equal relevance are ordered by their tie key
    (lower first). With pi that order, returns [B]:
    sum_i ( log sum_{j >= i} exp(s_pi(j)) - s_pi(i) ).
    """
    by_key = tie_keys.to(scores.device).argsort(dim=1)
    by_relevance = relevance.gather(1, by_key).argsort(dim=1, descending=True, stable=True)
    ordered = scores.gather(1, by_key.gather(1, by_relevance))
    suffix_log_sums = ordered.flip(1).logcumsumexp(dim=1).flip(1)
    return (suffix_log_sums - ordered).sum(dim=1)


def approx_ndcg_loss(scores: torch.Tensor, relevance: torch.Tensor, temperature: float) -> torch.Tensor:
    """1 - approxNDCG (Qin, Liu, Li 2010): NDCG over all O options with each option's rank replaced
    by its smooth approximation 1 + sum_{j != i} sigmoid((s_j - s_i) / temperature).

    scores, relevance [B, O] (every round needs a non-zero relevance). The gain of an option is its
    relevance, as in VisDial's NDCG; the discount 1 / log2(1 + rank). Returns [B], in [0, 1) up to
    the approximation.
    """
    differences = (scores[:, None, :] - scores[:, :, None]) / temperature     # [B, i, j]: s_j - s_i
    ranks = 0.5 + torch.sigmoid(differences).sum(dim=2)                      # sigmoid(0) = 0.5 on i = j
    dcg = (relevance / torch.log2(1 + ranks)).sum(dim=1)
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=scores.dtype)
    ideal_dcg = (relevance.sort(dim=1, descending=True).values / torch.log2(1 + positions)).sum(dim=1)
    return 1 - dcg / ideal_dcg


def _on_annotated_log_odds(per_round: Callable) -> Callable:
    """A ranking loss of `ranking_loss`'s signature from `per_round(scores [B', O], relevance [B', O],
    ranking, tie_keys [B', O] or None) -> [B']`: options scored by their log-odds
    (`option_log_odds`, the order evaluation ranks by), rounds whose relevances are all 0 left out
    (`all_zero_relevance`), the mean over the rest (0 when no round is left)."""
    def loss(nsp_scores, relevance, ranking, tie_keys):
        scores = option_log_odds(nsp_scores)
        kept = ~all_zero_relevance(relevance)
        if not kept.any():
            return scores.sum() * 0.0
        keys = None if tie_keys is None else tie_keys[kept.to(tie_keys.device)]
        return per_round(scores[kept], relevance[kept].to(scores.dtype), ranking, keys).mean()
    return loss


def _listmle_per_round(scores, relevance, ranking, tie_keys):
    if tie_keys is None:
        raise ValueError("listmle needs tie_keys (tie_break_keys)")
    return listmle_loss(scores, relevance, tie_keys)


@dataclass(frozen=True)
class DenseLoss:
    """An entry of DENSE_LOSSES. loss(nsp_scores [B, O, 2], relevance [B, O], ranking, tie_keys
    [B, O] or None) -> 0-d, the mean over rounds; skips_unannotated_rounds: rounds whose relevances
    are all 0 are left out; draws_tie_keys: the loss orders ties by `tie_break_keys`."""
    loss: Callable
    skips_unannotated_rounds: bool
    draws_tie_keys: bool = False


DENSE_LOSSES = {
    "ce": DenseLoss(lambda nsp_scores, relevance, ranking, tie_keys: dense_relevance_loss(
        nsp_scores, relevance, ranking.target_temperature), skips_unannotated_rounds=False),
    "listmle": DenseLoss(_on_annotated_log_odds(_listmle_per_round), skips_unannotated_rounds=True,
                         draws_tie_keys=True),
    "approxndcg": DenseLoss(_on_annotated_log_odds(
        lambda scores, relevance, ranking, tie_keys: approx_ndcg_loss(scores, relevance, ranking.temperature)),
        skips_unannotated_rounds=True),
}
"""The ranking losses of dense fine-tuning (-dense_loss), by name."""


def ranking_loss(nsp_scores: torch.Tensor, relevance: torch.Tensor, ranking: RankingLoss,
                 tie_keys: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The ranking loss `ranking` (its DENSE_LOSSES entry) of B rounds, averaged over rounds (0-d).

    nsp_scores [B, O, 2] NSP logits; relevance [B, O]; tie_keys [B, O] for listmle
    (`tie_break_keys`). ce is the reference's `dense_relevance_loss`; listmle and approxndcg go
    through `_on_annotated_log_odds`.
    """
    return DENSE_LOSSES[ranking.name].loss(nsp_scores, relevance, ranking, tie_keys)


def dense_loss(nsp_scores: torch.Tensor, relevance: torch.Tensor, nsp_labels: torch.Tensor,
               nsp_coefficient: float, ranking: RankingLoss = RankingLoss(),
               tie_keys: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """The dense fine-tuning loss of K annotated rounds with O options each.

    nsp_scores [K, O, 2] logits; relevance [K, O] raw relevance; nsp_labels [K * O] (0 for the
    ground-truth option); ranking and tie_keys as in `ranking_loss`. Returns (ranking loss +
    nsp_coefficient * nsp_loss, {'<name>_loss', 'nsp_loss'}), e.g. {'ce_loss', 'nsp_loss'}.
    """
    rank_loss = ranking_loss(nsp_scores, relevance, ranking, tie_keys)
    nsp_loss = next_sentence_loss(nsp_scores.reshape(-1, 2), nsp_labels.reshape(-1))
    return rank_loss + nsp_coefficient * nsp_loss, {f"{ranking.name}_loss": rank_loss, "nsp_loss": nsp_loss}
