"""The optimiser groups of the model's parameters, by their names (the reference's training scripts),
like nanoGPT's `configure_optimizers`, next to the parameters it groups.
"""
import torch
from torch import nn


# ---------------------------------------------------------------------------------------------
# Optimiser groups, by parameter name (the reference's training scripts)
# ---------------------------------------------------------------------------------------------
#
# * Two learning rates: `-lr` for the language parameters, `-image_lr` for all others. The
#   reference lists the language parameters by name in config/language_weights.json;
#   `is_language_parameter` states the same rule: the text embeddings, the text transformer layers
#   and the masked-LM head. (The text pooler `t_pooler` is not in that list, so it gets the image
#   rate, as in the reference.)
# * Weight decay 0.01, except 0 for biases and LayerNorm weights.
# * `torch.optim.AdamW` with eps 1e-6. The reference used pytorch-transformers' AdamW, which
#   applies the weight decay after the Adam update and adds eps to sqrt(v) before the bias
#   correction; torch's applies the decay before the update and adds eps after it. Both are
#   O(lr^2) or O(eps) apart per step.

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


def configure_optimizer(model: nn.Module, lr: float, image_lr: float) -> torch.optim.AdamW:
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
