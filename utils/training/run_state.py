"""The state of a training run: the model and everything that changes while it trains."""
from dataclasses import dataclass

import torch
from torch import nn

from models.optimizer import configure_optimizer
from options import TrainOptions
from utils.training.schedule import WarmupLinearSchedule


@dataclass
class Progress:
    """Where the run is, besides weights and optimizer state: iterations done (the reference's
    iter_id of the next one), the epoch and its batches consumed, whether the losses since the last
    optimizer step were finite, the best val MRR (-1: none yet), train records read and skipped as
    unreadable, optimizer steps skipped for a non-finite loss and for an fp16 overflow."""
    iteration: int = 0
    epoch: int = 0
    position: int = 0
    window_finite: bool = True
    best_mrr: float = -1.0
    records_read: int = 0
    skipped_records: int = 0
    skipped_steps: int = 0
    overflow_steps: int = 0


@dataclass
class RunState:
    """The model and everything that changes while it trains."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: WarmupLinearSchedule
    grad_scaler: torch.amp.GradScaler
    progress: Progress

    @classmethod
    def start(cls, model: nn.Module, options: TrainOptions, precision: str) -> "RunState":
        """A new run's state: the optimizer groups of the model, the schedule, the grad scaler
        (enabled in fp16 only, on the model's device) and progress at 0."""
        optimizer = configure_optimizer(model, options.lr, options.image_lr)
        schedule = WarmupLinearSchedule(optimizer, options.warmup_steps, options.total_steps, options.min_lr)
        device = next(model.parameters()).device
        return cls(model, optimizer, schedule, torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                   Progress())

    def step_optimizer(self, iteration: int, grad_clip: float = 0.0) -> bool:
        """Apply the accumulated gradients at the rate of scheduler step `iteration + 1`, through
        the grad scaler (unscaled first, then clipped to `grad_clip` when it is positive), and
        clear them. Returns False when the scaler skipped the step because the fp16 gradients
        overflowed (it has then halved its scale); always True without fp16."""
        self.schedule.apply(iteration + 1)
        scaler = self.grad_scaler
        scaler.unscale_(self.optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return not scaler.is_enabled() or scaler.get_scale() >= scale
