"""Forward throughput and peak memory of the model on this machine.

    python scripts/benchmark_model.py                 # the paper config, fp32, batch 20
    python scripts/benchmark_model.py --runs 5 --config config/bert_base_6layer_6conect.json

Rows: (a) every sequence padded to 256 tokens, with all heads (what the reference computes)
and scoring only; (b) realistic VisDial lengths: round r of a dialog is about 15 + 12 r
tokens, one batch per round padded to its own length, scoring only. Median of `--runs` timed
runs after one warm-up; random weights (speed does not depend on them).
"""
import statistics
import time
from pathlib import Path

import torch

from models import build_model
from utils.errors import ArgumentParser, run_cli

REGIONS = 37


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Start a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def make_batch(batch_size: int, length: int, real_length: int, generator: torch.Generator):
    """Random dialog sequences of `real_length` tokens padded to `length`, one image each."""
    tokens = torch.randint(1000, 29000, (batch_size, length), generator=generator)
    attention = (torch.arange(length) < real_length).expand(batch_size, -1)
    tokens = tokens * attention
    segments = (torch.arange(length) // 12 % 2).expand(batch_size, -1) * attention
    feat = torch.randn(batch_size, REGIONS, 2048, generator=generator).abs()
    loc = torch.rand(batch_size, REGIONS, 5, generator=generator)
    mask = torch.ones(batch_size, REGIONS)
    return tokens, segments, attention, feat, loc, mask


def time_forward(model, batches, all_heads: bool, runs: int):
    """Median seconds to score every batch once, and the peak memory while doing so."""
    def one_pass():
        with torch.inference_mode():
            for batch in batches:
                model(*batch, output_lm_scores=all_heads, output_img_scores=all_heads)

    one_pass()
    reset_peak_rss()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_rss_mib()


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/bert_base_6layer_6conect.json")
    parser.add_argument("--batch_size", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads (default: all cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    model = build_model(args.config).eval()

    padded = [make_batch(args.batch_size, 256, 256, generator)]
    realistic = [make_batch(args.batch_size, 15 + 12 * r, 15 + 12 * r, generator)
                 for r in range(1, 11)]
    rows = [("(a) padded to 256, all heads", padded, True),
            ("(a) padded to 256, scoring only", padded, False),
            ("(b) realistic lengths (15+12r), scoring only", realistic, False)]

    print(f"config {args.config}, fp32, batch {args.batch_size}, {REGIONS} regions, "
          f"{args.threads} threads, median of {args.runs} runs")
    print(f"{'setting':<48} {'sequences/s':>12} {'peak RSS MiB':>13}")
    for name, batches, all_heads in rows:
        seconds, peak = time_forward(model, batches, all_heads, args.runs)
        sequences = args.batch_size * len(batches)
        print(f"{name:<48} {sequences / seconds:>12.2f} {peak:>13.0f}")


if __name__ == "__main__":
    run_cli(main)
