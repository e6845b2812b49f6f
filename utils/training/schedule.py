"""The reference's learning-rate schedule (WarmupLinearScheduleNonZero): linear warm-up to each group's
'base_lr', linear decay to 0 at `total_steps`, floored at `min_lr`."""
import torch


def warmup_linear_rate(base_lr: float, step: int, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    if step < warmup_steps:
        factor = step / max(1, warmup_steps)
    else:
        factor = max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    rate = base_lr * factor
    return rate if rate > min_lr else min_lr


class WarmupLinearSchedule:
    """Sets each param group's 'lr' for a scheduler step; stateless, so resuming is exact. The reference
    steps its scheduler before the optimizer, so iteration i uses `apply(i + 1)`."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float = 1e-5):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr = min_lr

    def rates(self, step: int) -> list[float]:
        return [warmup_linear_rate(group["base_lr"], step, self.warmup_steps, self.total_steps,
                                   self.min_lr) for group in self.optimizer.param_groups]

    def apply(self, step: int) -> list[float]:
        rates = self.rates(step)
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        return rates
