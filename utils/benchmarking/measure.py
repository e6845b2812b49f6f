"""Steady-state timing (every clock reading after a synchronisation), peak memory (the CUDA allocator's, or
the resident set's VmHWM on the CPU) and FLOP counts of benchmark work (docs/performance.md)."""
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SteadyState:
    """A steady state: work units a second and the one-time warm-up apart."""
    rate: float                  # the median of `rates`, one per window
    rates: list[float]
    window_seconds: list[float]
    warm_up_s: float             # the first call's seconds beyond what its `first_work` takes at `rate`
    first_work: float
    cpu_seconds_per_unit: float  # this process's, over the windows

    def describe(self, window_s: float) -> str:
        windows = f"windows of at least {window_s:g} s" if window_s > 0 else "passes"
        return f"median of {len(self.rates)} {windows} ({min(self.rates):,.4g}-{max(self.rates):,.4g})"


def steady_state(function: Callable[[], float], device: torch.device, window_s: float, repeats: int) -> SteadyState:
    """Time `function` (one pass over every shape it will meet; returns the units it did): a cold call
    apart, then `repeats` windows of whole calls, each at least `window_s` seconds."""
    synchronize(device)
    start = time.perf_counter()
    first_work = function()
    synchronize(device)
    first_s = time.perf_counter() - start
    rates, window_seconds, total_work, start_cpu = [], [], 0.0, time.process_time()
    for _ in range(repeats):
        work, start = 0.0, time.perf_counter()
        while True:
            work += function()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= window_s:
                break
        rates.append(work / elapsed)
        window_seconds.append(elapsed)
        total_work += work
    rate = statistics.median(rates)
    return SteadyState(rate, rates, window_seconds, max(0.0, first_s - first_work / rate), first_work,
                       (time.process_time() - start_cpu) / total_work)


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (on Linux, writing 5 to clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def memory_bytes(device: torch.device) -> int:
    """Bytes in use now: allocated on the GPU, this process's resident set on the CPU."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _status_kib("VmRSS") * 1024


def peak_memory_bytes(device: torch.device) -> int:
    """The peak since `reset_peak_memory`: allocated GPU bytes, or the resident set on the CPU."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024


def count_flops(function: Callable[[], Any]) -> int:
    """Floating-point operations of one call of `function` (torch's FlopCounterMode: 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def describe_device(device: torch.device) -> dict:
    """The device (a CPU: its model name, vector extensions and CPUs), torch and CUDA versions."""
    description = {"torch": torch.__version__, "cuda": torch.version.cuda or "none",
                   "cpu_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return {"device": properties.name, **description,
                "gpu_memory_gib": round(properties.total_memory / 2**30, 1), "bf16": torch.cuda.is_bf16_supported(),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(re.findall(r"^(model name|flags)\s*:\s*(.*)$", info, re.M))
    flags = set(fields.get("flags", "").split())
    extensions = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags] or ["no AVX2"]
    return {"device": f"{fields.get('model name', platform.machine())} ({', '.join(extensions)}, "
                      f"{os.cpu_count()} CPUs)", **description}
