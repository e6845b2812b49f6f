"""Evaluation throughput on this machine: the reference's way of scoring against ours, side by side
in one run (and the model's forward throughput at padded and at realistic lengths).

    python scripts/benchmark_eval.py            # paper config, 1 dialog x 10 rounds x 12 options
    python scripts/benchmark_eval.py --quick    # 1 dialog x 10 rounds x 4 options (about 10 minutes on 2 busy cores)
    python scripts/benchmark_eval.py --budgets 2048 4096 8192 16384 --dialogs 4 --options 25
                                                # our fp32 path per token budget, nothing else

Sequences have realistic VisDial lengths (round r of a dialog is about 15 + 12 r tokens, answers
of 1 to 8 tokens) and 37 image regions. Rows:

* reference path: every sequence padded to 256 tokens, the image copied per sequence, fixed
  chunks, fp32, every head computed (what the reference's evaluation did;
  utils/benchmarking/reference.py);
* ours fp32 / bf16: utils/evaluation/scoring.py (length-sorted token-budget batches, images once, NSP head only).

With ``--budgets`` it times only our fp32 path per token budget (-eval_tokens_per_batch), on the
same batch: how evaluate.py's CPU default was chosen.

Every rate is a steady state (utils/benchmarking/measure.steady_state): a first pass over the whole
batch (its excess over the steady rate is the `warm-up s` column), then the median of --repeats
timed passes; our fp32 path's FLOPs are counted on one more, untimed pass. Peak memory is the process's resident set high-water mark while a path runs.

Also the achieved GFLOP/s of our fp32 path (FLOPs counted by torch's FlopCounterMode) against a
large fp32 matrix product measured in the same run, and whether the fp32 ranks equal the
reference path's. Weights are random but drawn at O(1) scales (Linear N(0, 1/fan_in),
embeddings N(0, 1)) so that scores are spread out as in a trained model. The last line is
machine-readable.
"""
import os
from typing import Callable

import torch

from models import build_model
from utils.benchmarking.agreement import rank_agreement
from utils.benchmarking.measure import (SteadyState, count_flops, peak_memory_bytes, reset_peak_memory, steady_state,
                                        timed)
from utils.benchmarking.reference import score_padded_reference_style, spread_weights
from utils.errors import ArgumentParser, run_cli
from utils.evaluation.scoring import length_batches, score_sequences

REGIONS = 37
REFERENCE_MAX_SEQ_LEN = 256
VISDIAL_VAL_SEQUENCES = 2064 * 10 * 100
CPU = torch.device("cpu")
SEQUENCE_FIELDS = ("tokens", "segments", "attention_mask", "image_index")


def make_dialog_batch(num_dialogs: int, num_options: int, generator: torch.Generator) -> dict:
    """Flat batch of the collate contract: dialogs x 10 rounds x options sequences."""
    lengths = []
    for _ in range(num_dialogs):
        for round_number in range(1, 11):
            history = 15 + 12 * round_number - 4
            lengths += (history + torch.randint(1, 9, (num_options,), generator=generator)).tolist()
    lengths = torch.tensor(lengths)
    width = int(lengths.max())
    attention_mask = torch.arange(width) < lengths.view(-1, 1)
    tokens = torch.randint(1000, 29000, (len(lengths), width), generator=generator) * attention_mask
    segments = (torch.arange(width) // 12 % 2).expand(len(lengths), -1) * attention_mask
    return {
        "tokens": tokens, "segments": segments, "attention_mask": attention_mask,
        "image_index": torch.arange(num_dialogs).repeat_interleave(10 * num_options),
        "image_feat": torch.randn(num_dialogs, REGIONS, 2048, generator=generator).abs(),
        "image_loc": torch.rand(num_dialogs, REGIONS, 5, generator=generator),
        "image_mask": torch.ones(num_dialogs, REGIONS),
    }


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of a large fp32 matrix product on this machine (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(lambda: a @ b, CPU).seconds for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def steady_rates(score: Callable[[], int], repeats: int) -> tuple[SteadyState, float]:
    """The steady state of `score` (one pass over the batch; returns its sequences) with `repeats`
    timed passes, and the peak resident memory in MiB while it ran."""
    reset_peak_memory(CPU)
    steady = steady_state(score, CPU, 0.0, repeats)
    return steady, peak_memory_bytes(CPU) / 2 ** 20


def compare_budgets(model: torch.nn.Module, batch: dict, budgets: list[int], repeats: int) -> None:
    """Print sequences/s of our fp32 path per token budget (steady state), and CPU seconds a sequence."""
    num_sequences = len(batch["tokens"])
    print(f"{num_sequences} sequences, {torch.get_num_threads()} threads, fp32, median of {repeats} passes after a "
          f"first one; load average {os.getloadavg()[0]:.1f} (CPU seconds are less affected by other processes "
          "than wall seconds)")
    print(f"{'tokens per batch':>16}{'forward passes':>16}{'seq/s':>9}{'warm-up s':>11}{'CPU s/seq':>11}")
    lengths = batch["attention_mask"].sum(dim=1)
    for budget in budgets:
        steady, _ = steady_rates(lambda: len(score_sequences(model, batch, budget, "fp32")), repeats)
        passes = len(length_batches(lengths, budget))
        print(f"{budget:>16}{passes:>16}{steady.rate:>9.2f}{steady.warm_up_s:>11.1f}"
              f"{steady.cpu_seconds_per_unit:>11.3f}")


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/bert_base_6layer_6conect.json")
    parser.add_argument("--dialogs", type=int, default=1)
    parser.add_argument("--options", type=int, default=12, help="answer options per round")
    parser.add_argument("--tokens_per_batch", type=int, default=4096,
                        help="token budget of our batches (evaluate.py's default on the CPU)")
    parser.add_argument("--reference_chunk", type=int, default=20, help="sequences per reference call")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path (the rate: their median)")
    parser.add_argument("--quick", action="store_true", help="1 dialog x 4 options")
    parser.add_argument("--budgets", type=int, nargs="+", help="only time our fp32 path at these token budgets")
    args = parser.parse_args()
    if args.quick:
        args.dialogs, args.options = 1, 4
    torch.set_num_threads(os.cpu_count())
    load_average = f"{os.getloadavg()[0]:.1f}"
    generator = torch.Generator().manual_seed(0)
    model = build_model(args.config).eval()
    spread_weights(model, generator)
    batch = make_dialog_batch(args.dialogs, args.options, generator)
    num_sequences = len(batch["tokens"])
    shape = (args.dialogs, 10, args.options)
    if args.budgets:
        compare_budgets(model, batch, args.budgets, args.repeats)
        return

    paths = {"reference path (pad 256, fp32, all heads)": lambda: score_padded_reference_style(
                 model, batch, REFERENCE_MAX_SEQ_LEN, args.reference_chunk, all_heads=True),
             "ours fp32": lambda: score_sequences(model, batch, args.tokens_per_batch, "fp32"),
             "ours bf16": lambda: score_sequences(model, batch, args.tokens_per_batch, "bf16")}
    scores = {}

    def scorer(name: str) -> Callable[[], int]:
        def score() -> int:
            scores[name] = paths[name]()
            return num_sequences
        return score

    measured = {name: steady_rates(scorer(name), args.repeats) for name in paths}
    flops = count_flops(paths["ours fp32"])  # one more pass, untimed: the counter slows what it counts
    peak = matmul_gflops()

    reference_name = next(iter(paths))
    reference_rate = measured[reference_name][0].rate
    reference_cpu = measured[reference_name][0].cpu_seconds_per_unit
    print(f"{num_sequences} sequences ({args.dialogs} dialogs x 10 rounds x {args.options} options), "
          f"{torch.get_num_threads()} threads, config {args.config}, median of {args.repeats} passes after a first "
          f"one, load average {load_average} -> {os.getloadavg()[0]:.1f} (a busy machine slows every row; CPU "
          "seconds are less affected)")
    print(f"{'path':<44}{'seq/s':>8}{'speedup':>9}{'warm-up s':>10}{'CPU s/seq':>11}{'speedup':>9}{'peak MiB':>9}"
          f"  {'VisDial val (2.06 M seq)':>24}  vs reference")
    agreements = {}
    for name, (steady, peak_mib) in measured.items():
        cpu = steady.cpu_seconds_per_unit
        hours = VISDIAL_VAL_SEQUENCES / steady.rate / 3600
        note = "-"
        if name != reference_name:
            agreements[name] = rank_agreement(scores[name].view(shape), scores[reference_name].view(shape))
            note = agreements[name].describe()
        print(f"{name:<44}{steady.rate:>8.2f}{steady.rate / reference_rate:>8.1f}x{steady.warm_up_s:>10.1f}"
              f"{cpu:>11.2f}{reference_cpu / cpu:>8.1f}x{peak_mib:>9.0f}  {hours:>22.1f} h  {note}")
    fp32_rate, bf16_rate = measured["ours fp32"][0].rate, measured["ours bf16"][0].rate
    achieved = flops * fp32_rate / num_sequences / 1e9
    print(f"ours fp32: {achieved:.1f} GFLOP/s achieved; a 4096^3 fp32 matmul: {peak:.1f} GFLOP/s "
          f"({achieved / peak:.0%} of it)")
    fp32_agreement = agreements["ours fp32"]
    print(f"speedup_fp32={fp32_rate / reference_rate:.2f} speedup_bf16={bf16_rate / reference_rate:.2f} "
          f"fp32_ranks_identical={'true' if fp32_agreement.ranks_moved == 0 else 'false'} "
          f"fp32_beyond_near_ties={fp32_agreement.beyond_near_ties} fraction_of_matmul_peak={achieved / peak:.3f}")


if __name__ == "__main__":
    run_cli(main)
