"""The optimiser groups of a model's parameters, by their names (the reference's training scripts).

* Two learning rates: `-lr` for the language parameters, `-image_lr` for the others. Each model
  class names its parameters of each rate by prefix (LANGUAGE_PARAMETERS, IMAGE_LR_PARAMETERS; the
  reference listed the language ones by name in config/language_weights.json); a parameter in
  neither is a bug of the model's declaration, never silently given a rate.
* Weight decay 0.01, except 0 for biases and LayerNorm weights.
* `torch.optim.AdamW` with eps 1e-6. The reference used pytorch-transformers' AdamW, which
  applies the weight decay after the Adam update and adds eps to sqrt(v) before the bias
  correction; torch's applies the decay before the update and adds eps after it. Both are
  O(lr^2) or O(eps) apart per step.
"""
import torch
from torch import nn

NO_DECAY_MARKERS = ("bias", "LayerNorm.bias", "LayerNorm.weight")
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-6


def is_language_parameter(model_type: type, name: str) -> bool:
    """True when the reference trains the parameter `name` of a `model_type` (a class of
    models.MODEL_TYPES) with `-lr`, False with `-image_lr`; AssertionError when the class puts it
    under neither. Names may carry the `module.` / `_orig_mod.` prefixes of DDP and torch.compile."""
    name = name.removeprefix("module.").removeprefix("_orig_mod.")
    if name.startswith(model_type.LANGUAGE_PARAMETERS):
        return True
    assert name.startswith(model_type.IMAGE_LR_PARAMETERS), \
        f"{model_type.__name__} gives parameter {name} no learning rate (LANGUAGE_PARAMETERS, IMAGE_LR_PARAMETERS)"
    return False


def has_weight_decay(name: str) -> bool:
    """True unless the parameter is a bias or a LayerNorm weight (the reference's no_decay list)."""
    return not any(marker in name for marker in NO_DECAY_MARKERS)


def configure_optimizer(model: nn.Module, lr: float, image_lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model` (the plain model, not a DDP or torch.compile
    wrapper: its class declares the learning-rate groups) in four groups: language/image rate x
    with/without weight decay. Each group remembers its base rate under 'base_lr'."""
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        language = is_language_parameter(type(model), name)
        decay = has_weight_decay(name)
        key = (language, decay)
        if key not in groups:
            rate = lr if language else image_lr
            groups[key] = {"params": [], "names": [], "lr": rate, "base_lr": rate,
                           "weight_decay": WEIGHT_DECAY if decay else 0.0}
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    return torch.optim.AdamW(list(groups.values()), lr=lr, eps=ADAM_EPS)
