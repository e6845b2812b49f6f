"""Optimizer and learning-rate schedule of the reference's training scripts.

* Two learning rates: `-lr` for the language parameters, `-image_lr` for all others. The reference
  lists the language parameters by name in config/language_weights.json; `is_language_parameter`
  states the same rule: the text embeddings, the text transformer layers and the masked-LM head.
  (The text pooler `t_pooler` is not in that list, so it gets the image rate, as in the reference.)
* Weight decay 0.01, except 0 for biases and LayerNorm weights.
* `torch.optim.AdamW` with eps 1e-6. The reference used pytorch-transformers' AdamW, which applies
  the weight decay after the Adam update and adds eps to sqrt(v) before the bias correction;
  torch's applies the decay before the update and adds eps after it. Both are O(lr^2) or
  O(eps) apart per step.
* Schedule: linear warm-up from 0 to the base rate over `warmup_steps`, then linear decay to 0 at
  `total_steps`, every rate floored at `min_lr` (1e-5; the reference's WarmupLinearScheduleNonZero).
"""
import torch
from torch import nn

NO_DECAY_MARKERS = ("bias", "LayerNorm.bias", "LayerNorm.weight")
LANGUAGE_PREFIXES = (
    "bert_pretrained.bert.embeddings.",       # word, position, token-type, separator embeddings
    "bert_pretrained.bert.encoder.layer.",    # text transformer layers (image: v_layer, c_layer)
    "bert_pretrained.cls.predictions.",       # masked-LM head (its decoder is the word embedding)
)
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-6


def is_language_parameter(name: str) -> bool:
    """True when the reference trains the parameter `name` with `-lr` (else `-image_lr`).

    Names may carry the `module.` / `_orig_mod.` prefixes of DDP and torch.compile."""
    name = name.removeprefix("module.").removeprefix("_orig_mod.")
    return name.startswith(LANGUAGE_PREFIXES)


def has_weight_decay(name: str) -> bool:
    """True unless the parameter is a bias or a LayerNorm weight (the reference's no_decay list)."""
    return not any(marker in name for marker in NO_DECAY_MARKERS)


def build_optimizer(model: nn.Module, lr: float, image_lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model` in four groups: language/image rate x
    with/without weight decay. Each group remembers its base rate under 'base_lr'."""
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        language = is_language_parameter(name)
        decay = has_weight_decay(name)
        key = (language, decay)
        if key not in groups:
            rate = lr if language else image_lr
            groups[key] = {"params": [], "names": [], "lr": rate, "base_lr": rate,
                           "weight_decay": WEIGHT_DECAY if decay else 0.0}
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    return torch.optim.AdamW(list(groups.values()), lr=lr, eps=ADAM_EPS)


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
