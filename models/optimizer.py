"""The optimiser of a model: AdamW in four groups, `-lr` / `-image_lr` (by the parameter-name prefixes
each model class declares) x weight decay 0.01 / none (biases, LayerNorm); docs/training.md."""
import torch
from torch import nn

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight")
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-6


def is_language_parameter(model_type: type, name: str) -> bool:
    """True when parameter `name` of a `model_type` (a class of models.MODEL_TYPES) trains at `-lr`, False
    at `-image_lr`; AssertionError when the class declares neither. DDP / compile prefixes are ignored."""
    name = name.removeprefix("module.").removeprefix("_orig_mod.")
    if name.startswith(model_type.LANGUAGE_PARAMETERS):
        return True
    assert name.startswith(model_type.IMAGE_LR_PARAMETERS), \
        f"{model_type.__name__} gives parameter {name} no learning rate (LANGUAGE_PARAMETERS, IMAGE_LR_PARAMETERS)"
    return False


def configure_optimizer(model: nn.Module, lr: float, image_lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model` (unwrapped: its class declares the groups); each
    group keeps its base rate under 'base_lr'."""
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        language = is_language_parameter(type(model), name)
        decay = not any(marker in name for marker in NO_DECAY_MARKERS)
        key = (language, decay)
        if key not in groups:
            rate = lr if language else image_lr
            groups[key] = {"params": [], "names": [], "lr": rate, "base_lr": rate,
                           "weight_decay": WEIGHT_DECAY if decay else 0.0}
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    return torch.optim.AdamW(list(groups.values()), lr=lr, eps=ADAM_EPS)
