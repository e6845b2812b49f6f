"""The dense-annotation fine-tuning objective of the paper (section 3.2)."""
import torch
import torch.nn.functional as F


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
