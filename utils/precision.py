"""Arithmetic precision: the one list of precisions, what `auto` means, and the autocast context."""
import contextlib

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Precision name -> autocast dtype (None: no autocast). Flags also accept `auto`."""


def default_precision(device: torch.device) -> str:
    """bf16 on a GPU that supports it, fp32 otherwise (CPU bf16 is slower than fp32 on many CPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_precision(name: str, device: torch.device) -> str:
    """A precision flag's value with `auto` replaced by `default_precision(device)`."""
    return default_precision(device) if name == "auto" else name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` (fp32: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
