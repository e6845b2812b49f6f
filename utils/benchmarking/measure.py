"""Timing, peak memory and FLOP counts of benchmark work, on the CPU or a CUDA device.

GPU work is asynchronous: `timed` synchronises the device before it starts and before it stops
the clock. Peak memory is the CUDA allocator's high-water mark on a GPU, the process's resident
set high-water mark (Linux VmHWM) on the CPU; `reset_peak_memory` starts a new measurement.
"""
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Timing:
    """What `timed` measured: the function's result, wall seconds and this process's CPU seconds."""
    result: Any
    seconds: float
    cpu_seconds: float


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> Timing:
    """Run `function` once and time it, the device's queued work included."""
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    synchronize(device)
    return Timing(result, time.perf_counter() - start, time.process_time() - start_cpu)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (on Linux, writing 5 to clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def memory_bytes(device: torch.device) -> int:
    """Memory in use now: bytes allocated on the GPU, or this process's resident set on the CPU."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _status_kib("VmRSS") * 1024


def peak_memory_bytes(device: torch.device) -> int:
    """The peak since `reset_peak_memory`: allocated GPU bytes, or the resident set on the CPU."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024


def count_flops(function: Callable[[], Any]) -> int:
    """Floating-point operations of one call of `function`, as torch's FlopCounterMode counts them
    (matrix products and attention: 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def describe_device(device: torch.device) -> dict:
    """The device, torch and CUDA versions and, on a GPU, its memory and compute capability."""
    description = {"device": platform.processor() or platform.machine(), "torch": torch.__version__,
                   "cuda": torch.version.cuda or "none", "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        description.update(device=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                           compute_capability=f"{properties.major}.{properties.minor}",
                           multiprocessors=properties.multi_processor_count,
                           bf16=torch.cuda.is_bf16_supported())
    return description
