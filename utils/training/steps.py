"""One training step of each objective: the loss, its check and its backward pass (docs/training.md).
Both steps always run backward (DDP needs every rank to) and report whether the loss was finite; under
DDP a backward all-reduces the gradients only with `sync_gradients` (the last micro-step)."""
from dataclasses import dataclass, field
from typing import Optional

import torch

from models.losses import RankingLoss, all_zero_relevance, dense_loss, pretraining_loss, tie_break_keys
from utils.distributed import get_world_size, gradient_sync, is_initialized, sum_over_ranks, unwrap
from utils.evaluation.scoring import MODEL_INPUTS, autocast
from utils.random_state import RandomState


@dataclass
class StepSettings:
    device: torch.device
    precision: str = "fp32"
    loss_divisor: float = 1.0  # -batch_multiply: the loss is divided by it before backward, as the reference
    grad_scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False))
    coefficients: dict = field(default_factory=lambda: {"lm": 1.0, "nsp": 1.0, "img": 1.0})
    dense_chunk: int = 20  # sequences a forward pass in dense mode
    ranking: RankingLoss = field(default_factory=RankingLoss)  # -dense_loss


@dataclass
class StepResult:
    """The total loss (before division), its parts, whether it was finite (if not, the gradients must not be
    used), and the annotated rounds the ranking loss left out (relevances all 0)."""
    loss: float
    parts: dict
    finite: bool
    skipped_rounds: int = 0


def model_inputs(batch: dict, device: torch.device, indices: Optional[torch.Tensor] = None) -> dict:
    """The model's keyword inputs from a collated batch, on `device`; with `indices` only those sequences
    (the images stay whole)."""
    inputs = {}
    for name in (*MODEL_INPUTS, "image_index"):
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


def base_step(model: torch.nn.Module, batch: dict, settings: StepSettings, sync_gradients: bool = True) -> StepResult:
    """Forward and backward of the base objective (masked LM + NSP + masked regions) on a collated train
    batch: tokens, segments, attention_mask, lm_labels [N, L], next_sentence_labels [N], image tensors
    [K, ...] with image_index [N], image_label [K, R], image_target [K, R, C]."""
    device = settings.device
    with gradient_sync(model, sync_gradients):
        with autocast(device, settings.precision):
            out = model(**model_inputs(batch, device),
                        lm_labels=batch["lm_labels"].to(device),
                        nsp_labels=batch["next_sentence_labels"].to(device),
                        image_label=batch["image_label"].to(device),
                        image_target=batch["image_target"].to(device),
                        output_lm_scores=False, output_img_scores=False)
        loss, parts = pretraining_loss(out.lm_loss, out.nsp_loss, out.img_loss, settings.coefficients)
        if is_initialized():  # the gradient of the global batch's means, however its labels are split
            _backward(pretraining_loss(out.lm_loss, out.nsp_loss, out.img_loss,
                                       global_batch_coefficients(batch, settings.coefficients))[0], settings)
        else:
            _backward(loss, settings)
    return _result(loss, parts)


def global_batch_coefficients(batch: dict, coefficients: dict) -> dict:
    """The coefficients that turn this process's mean losses into its share of the global batch's means
    (call it on every rank): DDP averages W processes' gradients, so a mean over this process's n
    labels weighted by W * n / (n summed over the processes) gives the global mean's gradient."""
    counts = torch.tensor([(batch["lm_labels"] != -1).sum(), (batch["next_sentence_labels"] != -1).sum(),
                           (batch["image_label"][batch["image_index"]] == 1).sum()], dtype=torch.float64)
    totals = sum_over_ranks(counts)
    shares = torch.where(totals > 0, counts * get_world_size() / totals.clamp(min=1), 0.0).tolist()
    return {name: coefficients[name] * share for name, share in zip(("lm", "nsp", "img"), shares)}


def score_chunk(model: torch.nn.Module, batch: dict, indices: torch.Tensor, settings: StepSettings) -> torch.Tensor:
    """NSP logits [len(indices), 2] (float32) of some sequences of the batch."""
    with autocast(settings.device, settings.precision):
        out = model(**model_inputs(batch, settings.device, indices), output_lm_scores=False, output_img_scores=False)
    return out.nsp_scores.float()


def dense_step(model: torch.nn.Module, batch: dict, settings: StepSettings,
               sync_gradients: bool = True) -> StepResult:
    """Forward and backward of the exact dense loss over all N = K * O sequences of K annotated rounds
    (gt_relevance [K, O], next_sentence_labels [N]), `settings.dense_chunk` at a time: all scored
    without gradients, the loss's gradient taken with respect to the scores, then each chunk scored
    again with its random state restored (the same dropout masks, so the same values) and
    back-propagated with its share of that gradient."""
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
            scores.append(score_chunk(plain_model, batch, indices, settings))
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
            score_chunk(model, batch, indices, settings).backward(scores.grad[indices.to(device)])
    state_after.restore()
    skipped = int(all_zero_relevance(relevance).sum()) if settings.ranking.skips_unannotated_rounds else 0
    return _result(loss, parts, skipped)
