"""Every training objective of the paper, computed from the model's scores and hidden states.

Labels follow the reference: masked-LM labels hold the original token id at masked positions and
-1 elsewhere; NSP labels are 0 ("the answer belongs to the dialog") or 1 ("a random answer"), -1
ignored; a region labelled 1 is one whose class distribution is predicted. Where the reference
returns nan for a batch without anything to predict, these return 0 (a conscious fix).

* Base training: `masked_lm_loss`, `next_sentence_loss`, `masked_region_loss`, weighted and
  summed by `pretraining_loss`.
* Dense fine-tuning (section 3.2 of the paper): `dense_relevance_loss`, plus the NSP loss in
  `dense_loss`.
"""
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


def dense_relevance_loss(nsp_scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the model's distribution over the options of a round and the
    softmax of their dense relevance, as the reference computes it.

    nsp_scores [B, O, 2] NSP logits of the O options of B rounds; relevance [B, O] raw
    relevance (0 ... 1). The model's distribution is log_softmax over options of the class-0
    logit; the target is softmax(relevance) (nearly flat: the reference's choice). Returns
    KL(target || model) summed over options and averaged over B (0-d).
    """
    log_probs = F.log_softmax(nsp_scores[..., 0].float(), dim=1)
    target = F.softmax(relevance.float(), dim=1)
    return F.kl_div(log_probs, target, reduction="batchmean")


def dense_loss(nsp_scores: torch.Tensor, relevance: torch.Tensor, nsp_labels: torch.Tensor,
               nsp_coefficient: float) -> tuple[torch.Tensor, dict]:
    """The dense fine-tuning loss of K annotated rounds with O options each.

    nsp_scores [K, O, 2] logits; relevance [K, O] raw relevance; nsp_labels [K * O] (0 for the
    ground-truth option). Returns (ce_loss + nsp_coefficient * nsp_loss, {'ce_loss', 'nsp_loss'}).
    """
    ce_loss = dense_relevance_loss(nsp_scores, relevance)
    nsp_loss = next_sentence_loss(nsp_scores.reshape(-1, 2), nsp_labels.reshape(-1))
    return ce_loss + nsp_coefficient * nsp_loss, {"ce_loss": ce_loss, "nsp_loss": nsp_loss}
