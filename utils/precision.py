"""Arithmetic precision: the one list of precisions, what `auto` means, and the autocast context."""
import contextlib

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Precision name -> autocast dtype (None: no autocast). Flags also accept `auto`."""


def default_precision(device: torch.device, evaluation: bool = False) -> str:
    """What `auto` means: bf16 for training on a GPU that supports it; fp32 for evaluation (bf16 moved
    a trained model's val MRR by 0.0021, more than the 0.001 allowed: scripts/benchmark_precision.py)
    and on the CPU (CPU bf16 is slower than fp32 on many CPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported() and not evaluation:
        return "bf16"
    return "fp32"


def resolve_precision(name: str, device: torch.device, evaluation: bool = False) -> str:
    """A precision flag's value with `auto` replaced by `default_precision(device, evaluation)`."""
    return default_precision(device, evaluation) if name == "auto" else name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` (fp32: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
