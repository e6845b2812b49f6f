"""One training step of each objective: the loss, its check, and its backward pass.

* Base training (`base_step`): masked LM + NSP + masked regions, weighted by the
  `-lm_loss_coeff`, `-nsp_loss_coeff`, `-img_loss_coeff` coefficients (the reference's train.py).
  Each loss is a mean over its labels (masked tokens, NSP labels, masked regions); under torchrun
  it is the mean over the labels of the global batch, whatever their split between processes, so
  the gradients equal those of one process holding the whole batch (`global_batch_coefficients`).
* Dense-annotation finetuning (`dense_step`): a ranking loss over all options of the annotated
  round (`-dense_loss`: by default the reference's cross-entropy between log_softmax of the class-0
  NSP logits and softmax of the relevance; or ListMLE, or approxNDCG: models/losses.py), plus
  `-nsp_loss_coeff` times the NSP loss (the reference's dense_annotation_finetuning.py, which could
  fit only 80 of the 100 options). Here the loss covers every option exactly, with peak memory
  set by `-dense_chunk`:

  0. (ListMLE) draw this step's random order among options of equal relevance;
  1. score all N options chunk by chunk without gradients, recording the random state before
     each chunk (dropout draws from it);
  2. compute the loss from the N scores and its gradient with respect to the scores (any loss
     that is a function of the scores works: only d loss / d scores is needed);
  3. for each chunk, restore its random state, recompute its scores with gradients (the same
     dropout masks, so the same values) and back-propagate that chunk's share of the gradient.

  The parameter gradients equal those of one graph over all N scores (tests/test_dense_loss.py).

Both steps always run their backward pass (DDP needs every rank to) and report whether the loss
was finite; the training loop then stops or skips the optimizer step (`-nan_policy`). Under
DistributedDataParallel a backward all-reduces the gradients only when `sync_gradients` is true
(the last micro-step before an optimizer step).
"""
from dataclasses import dataclass, field
from typing import Optional

import torch

from models.losses import RankingLoss, all_zero_relevance, dense_loss, pretraining_loss, tie_break_keys
from utils.distributed import get_world_size, gradient_sync, is_initialized, sum_over_ranks, unwrap
from utils.evaluation.scoring import autocast
from utils.random_state import RandomState

MODEL_INPUT_FIELDS = ("tokens", "segments", "attention_mask", "image_feat", "image_loc",
                      "image_mask", "image_index")


@dataclass
class StepSettings:
    """How a step computes and scales its loss.

    loss_divisor: the loss is divided by this before backward (`-batch_multiply`, as the
    reference). grad_scaler: scales the loss in fp16 (disabled otherwise: it passes the loss
    through). coefficients: the loss weights by name ('lm', 'nsp', 'img'). dense_chunk: sequences
    per forward pass in dense mode. ranking: the ranking loss of dense mode (-dense_loss).
    """
    device: torch.device
    precision: str = "fp32"
    loss_divisor: float = 1.0
    grad_scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False))
    coefficients: dict = field(default_factory=lambda: {"lm": 1.0, "nsp": 1.0, "img": 1.0})
    dense_chunk: int = 20
    ranking: RankingLoss = field(default_factory=RankingLoss)


@dataclass
class StepResult:
    """What a step computed: the total loss (before division), its parts, whether it was finite
    (if not, the accumulated gradients must not be used), and the annotated rounds the ranking loss
    left out because their relevances are all 0."""
    loss: float
    parts: dict
    finite: bool
    skipped_rounds: int = 0


def model_inputs(batch: dict, device: torch.device, indices: Optional[torch.Tensor] = None) -> dict:
    """The model's keyword inputs from a collated batch, on `device`.

    indices: keep only these sequences (the images stay whole; image_index still points into them).
    """
    inputs = {}
    for name in MODEL_INPUT_FIELDS:
        value = batch[name]
        if indices is not None and name in ("tokens", "segments", "attention_mask", "image_index"):
            value = value[indices]
        inputs[name] = value.to(device, non_blocking=True)
    return inputs


def _result(loss: torch.Tensor, parts: dict, skipped_rounds: int = 0) -> StepResult:
    return StepResult(loss.item(), {name: value.item() for name, value in parts.items()},
                      bool(torch.isfinite(loss)), skipped_rounds)


def _backward(loss: torch.Tensor, settings: StepSettings) -> None:
    settings.grad_scaler.scale(loss / settings.loss_divisor).backward()


def base_step(model: torch.nn.Module, batch: dict, settings: StepSettings,
              sync_gradients: bool = True) -> StepResult:
    """Forward and backward of the base objective on one collated train batch.

    The batch follows the collate contract: tokens/segments/attention_mask/lm_labels [N, L],
    next_sentence_labels [N], image tensors [K, ...] with image_index [N], image_label [K, R],
    image_target [K, R, C]. The language-only model ignores the image inputs and has no region loss.
    sync_gradients: under DDP, whether this backward should all-reduce the gradients.
    """
    with gradient_sync(model, sync_gradients):
        return _base_forward_backward(model, batch, settings)


def _base_forward_backward(model: torch.nn.Module, batch: dict, settings: StepSettings) -> StepResult:
    device = settings.device
    with autocast(device, settings.precision):
        out = model(**model_inputs(batch, device),
                    lm_labels=batch["lm_labels"].to(device),
                    nsp_labels=batch["next_sentence_labels"].to(device),
                    image_label=batch["image_label"].to(device),
                    image_target=batch["image_target"].to(device),
                    output_lm_scores=False, output_img_scores=False)
    loss, parts = pretraining_loss(out.lm_loss, out.nsp_loss, out.img_loss, settings.coefficients)
    if is_initialized():
        loss_of_global_batch, _ = pretraining_loss(out.lm_loss, out.nsp_loss, out.img_loss,
                                                   global_batch_coefficients(batch, settings.coefficients))
        _backward(loss_of_global_batch, settings)
    else:
        _backward(loss, settings)
    return _result(loss, parts)


def global_batch_coefficients(batch: dict, coefficients: dict) -> dict:
    """The loss coefficients that turn this process's mean losses into its share of the means over
    the global batch (under torchrun; call it on every rank).

    DistributedDataParallel averages the gradients of the W processes. A loss that is a mean over
    this process's n labels, weighted by W * n / (n summed over the processes), therefore
    contributes the gradient of the mean over every label of the global batch. Labels: masked
    tokens (lm_labels != -1), NSP labels (!= -1) and masked regions (image_label == 1, per sequence).
    """
    counts = torch.tensor([(batch["lm_labels"] != -1).sum(), (batch["next_sentence_labels"] != -1).sum(),
                           (batch["image_label"][batch["image_index"]] == 1).sum()], dtype=torch.float64)
    totals = sum_over_ranks(counts)
    shares = torch.where(totals > 0, counts * get_world_size() / totals.clamp(min=1), 0.0).tolist()
    return {name: coefficients[name] * share for name, share in zip(("lm", "nsp", "img"), shares)}


def _score_chunk(model: torch.nn.Module, batch: dict, indices: torch.Tensor,
                 settings: StepSettings) -> torch.Tensor:
    """NSP logits [len(indices), 2] (float32) of some sequences of the batch."""
    with autocast(settings.device, settings.precision):
        out = model(**model_inputs(batch, settings.device, indices),
                    output_lm_scores=False, output_img_scores=False)
    return out.nsp_scores.float()


def dense_step(model: torch.nn.Module, batch: dict, settings: StepSettings,
               sync_gradients: bool = True) -> StepResult:
    """Forward and backward of the exact dense loss over all options, `settings.dense_chunk`
    sequences at a time (see the module docstring).

    The batch holds the N = K * O sequences of K annotated rounds (collate contract, dense
    split): gt_relevance [K, O], next_sentence_labels [N]. sync_gradients: under DDP, whether
    this backward should all-reduce the gradients (False while accumulating).
    """
    device = settings.device
    num_sequences = batch["tokens"].shape[0]
    relevance = batch["gt_relevance"].to(device).float()
    num_rounds, num_options = relevance.shape
    chunks = list(torch.arange(num_sequences).split(settings.dense_chunk))
    plain_model = unwrap(model)  # no DDP hooks on the passes without gradients
    tie_keys = tie_break_keys(settings.ranking, num_rounds, num_options)

    states = []
    with torch.no_grad():
        scores = []
        for indices in chunks:
            states.append(RandomState.capture())
            scores.append(_score_chunk(plain_model, batch, indices, settings))
    state_after = RandomState.capture()

    scores = torch.cat(scores).requires_grad_()
    loss, parts = dense_loss(scores.view(num_rounds, num_options, 2), relevance,
                             batch["next_sentence_labels"].to(device), settings.coefficients["nsp"],
                             settings.ranking, tie_keys)
    _backward(loss, settings)
    for number, (indices, state) in enumerate(zip(chunks, states)):
        last = number == len(chunks) - 1
        state.restore()
        with gradient_sync(model, sync_gradients and last):
            _score_chunk(model, batch, indices, settings).backward(scores.grad[indices.to(device)])
    state_after.restore()
    skipped = int(all_zero_relevance(relevance).sum()) if settings.ranking.skips_unannotated_rounds else 0
    return _result(loss, parts, skipped)
