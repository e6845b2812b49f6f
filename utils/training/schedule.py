"""The learning-rate schedule of the reference's training scripts.

Linear warm-up from 0 to each parameter group's base rate over `warmup_steps`, then linear decay
to 0 at `total_steps`, every rate floored at `min_lr` (1e-5; the reference's
WarmupLinearScheduleNonZero). The groups and their base rates come from
`models.optimizer.configure_optimizer`.
"""
import torch


def warmup_linear_rate(base_lr: float, step: int, warmup_steps: int, total_steps: int,
                       min_lr: float) -> float:
    """The learning rate after `step` scheduler steps (the reference's WarmupLinearScheduleNonZero)."""
    if step < warmup_steps:
        factor = step / max(1, warmup_steps)
    else:
        factor = max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    rate = base_lr * factor
    return rate if rate > min_lr else min_lr


class WarmupLinearSchedule:
    """Sets each param group's 'lr' from its 'base_lr' for a given scheduler step.

    The reference steps its scheduler once per iteration *before* the optimizer step, so the
    optimizer step of iteration i uses the rate of step i + 1; `apply(i + 1)` reproduces that.
    The schedule has no state of its own: the iteration number determines it, which makes
    resuming exact.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 1e-5):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr = min_lr

    def rates(self, step: int) -> list[float]:
        """The learning rate of every param group after `step` scheduler steps."""
        return [warmup_linear_rate(group["base_lr"], step, self.warmup_steps, self.total_steps,
                                   self.min_lr) for group in self.optimizer.param_groups]

    def apply(self, step: int) -> list[float]:
        """Set every group's rate for `step` and return the rates."""
        rates = self.rates(step)
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        return rates
