"""Timing, peak memory and FLOP counts of benchmark work, on the CPU or a CUDA device.

GPU work is asynchronous: `timed` synchronises the device before it starts and before it stops
the clock. `steady_state` is how every throughput figure is measured: a first call that meets every
shape the work will meet (its excess over the steady rate is the one-time warm-up, reported
apart), then the median rate of several synchronised windows of whole calls. Peak memory is the CUDA allocator's high-water mark on a GPU, the process's resident
set high-water mark (Linux VmHWM) on the CPU; `reset_peak_memory` starts a new measurement.
"""
import platform
import resource
import statistics
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


@dataclass
class SteadyState:
    """What `steady_state` measured: `rate` (work units a second, the median of `rates`, one per
    window), `warm_up_s` (the first call's seconds beyond what its work takes at that rate: the
    one-time cost of first shapes, plans, allocator and workers), this process's CPU seconds per
    work unit over the windows, and the first call's `Timing`."""
    rate: float
    rates: list[float]
    warm_up_s: float
    cpu_seconds_per_unit: float
    first: Timing

    def describe(self, window_s: float) -> str:
        """How the figure was measured, for a row's note."""
        spread = f"{min(self.rates):,.4g}-{max(self.rates):,.4g}"
        windows = f"windows of at least {window_s:g} s" if window_s > 0 else "passes"
        return f"median of {len(self.rates)} {windows} ({spread})"


def steady_state(function: Callable[[], float], device: torch.device, window_s: float,
                 repeats: int) -> SteadyState:
    """Time `function` in its steady state. `function` does one pass of the work, meeting every
    shape the measurement cares about, and returns how much it did (sequences, steps).

    The first call runs cold and is timed apart; then `repeats` windows, each of whole calls until
    at least `window_s` seconds have passed (at least one call), synchronised with the device.
    """
    first = timed(function, device)
    rates, total_work, start_cpu = [], 0.0, time.process_time()
    for _ in range(repeats):
        work = 0.0
        synchronize(device)
        start = time.perf_counter()
        while True:
            work += function()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= window_s:
                break
        rates.append(work / elapsed)
        total_work += work
    rate = statistics.median(rates)
    return SteadyState(rate, rates, max(0.0, first.seconds - first.result / rate),
                       (time.process_time() - start_cpu) / total_work, first)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (DataLoader workers, subprocesses)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


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
