"""Evaluation throughput: the reference's way of scoring against ours, side by side in one run.

    python scripts/benchmark_eval.py            # paper config, 1 dialog x 10 rounds x 12 options
    python scripts/benchmark_eval.py --quick    # 1 dialog x 10 rounds x 4 options (under 2 minutes)
    python scripts/benchmark_eval.py --budgets 2048 4096 8192 16384 --dialogs 4 --options 25
                                                # our fp32 path per token budget, nothing else

Sequences have realistic VisDial lengths (round r of a dialog is about 15 + 12 r tokens, answers
of 1 to 8 tokens) and 37 image regions. Rows:

* reference path: every sequence padded to 256 tokens, the image copied per sequence, fixed
  chunks, fp32, every head computed (what the reference's evaluation did;
  utils/benchmarking/reference.py);
* ours fp32 / bf16: utils/evaluation/scoring.py (length-sorted token-budget batches, images once, NSP head only).

With ``--budgets`` it times only our fp32 path, once per token budget (-eval_tokens_per_batch), on
the same batch: how evaluate.py's CPU default was chosen.

Also the achieved GFLOP/s of our fp32 path (FLOPs counted by torch's FlopCounterMode) against a
large fp32 matrix product measured in the same run, and whether the fp32 ranks equal the
reference path's. Weights are random but drawn at O(1) scales (Linear N(0, 1/fan_in),
embeddings N(0, 1)) so that scores are spread out as in a trained model. The last line is
machine-readable.
"""
import os

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import build_model
from utils.benchmarking.measure import timed
from utils.benchmarking.reference import score_padded_reference_style, spread_weights
from utils.errors import ArgumentParser, run_cli
from utils.evaluation.metrics import scores_to_ranks
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


def compare_budgets(model: torch.nn.Module, batch: dict, budgets: list[int]) -> None:
    """Print sequences/s of our fp32 path per token budget, by wall time and by CPU time."""
    num_sequences = len(batch["tokens"])
    print(f"{num_sequences} sequences, {torch.get_num_threads()} threads, fp32; load average "
          f"{os.getloadavg()[0]:.1f} (CPU seconds are less affected by other processes than wall seconds)")
    print(f"{'tokens per batch':>16}{'forward passes':>16}{'seq/s':>9}{'CPU s/seq':>11}")
    lengths = batch["attention_mask"].sum(dim=1)
    score_sequences(model, {name: value[:8] if name in SEQUENCE_FIELDS else value for name, value in batch.items()},
                    budgets[0], "fp32")  # warm-up
    for budget in budgets:
        timing = timed(lambda: score_sequences(model, batch, budget, "fp32"), CPU)
        passes = len(length_batches(lengths, budget))
        print(f"{budget:>16}{passes:>16}{num_sequences / timing.seconds:>9.2f}"
              f"{timing.cpu_seconds / num_sequences:>11.3f}")


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/bert_base_6layer_6conect.json")
    parser.add_argument("--dialogs", type=int, default=1)
    parser.add_argument("--options", type=int, default=12, help="answer options per round")
    parser.add_argument("--tokens_per_batch", type=int, default=4096,
                        help="token budget of our batches (evaluate.py's default on the CPU)")
    parser.add_argument("--reference_chunk", type=int, default=20, help="sequences per reference call")
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
        compare_budgets(model, batch, args.budgets)
        return

    warm_up = {name: value[:4] if name in SEQUENCE_FIELDS else value for name, value in batch.items()}
    for precision in ("fp32", "bf16"):
        score_sequences(model, warm_up, args.tokens_per_batch, precision)
    timings = {"reference": timed(lambda: score_padded_reference_style(
        model, batch, REFERENCE_MAX_SEQ_LEN, args.reference_chunk, all_heads=True), CPU)}
    with FlopCounterMode(display=False) as counter:  # counts per op; its overhead is negligible here
        timings["fp32"] = timed(lambda: score_sequences(model, batch, args.tokens_per_batch, "fp32"), CPU)
    timings["bf16"] = timed(lambda: score_sequences(model, batch, args.tokens_per_batch, "bf16"), CPU)
    (reference, reference_s, reference_cpu), (ours_fp32, fp32_s, fp32_cpu), (ours_bf16, bf16_s, bf16_cpu) = (
        (timing.result, timing.seconds, timing.cpu_seconds) for timing in timings.values())
    peak = matmul_gflops()

    reference_ranks = scores_to_ranks(reference.view(shape))
    fp32_moved = int((scores_to_ranks(ours_fp32.view(shape)) != reference_ranks).sum())
    bf16_moved = int((scores_to_ranks(ours_bf16.view(shape)) != reference_ranks).sum())
    achieved = counter.get_total_flops() / fp32_s / 1e9
    rows = [("reference path (pad 256, fp32, all heads)", reference_s, "-"),
            ("ours fp32", fp32_s, f"{fp32_moved} ranks moved, max |d score| "
                                  f"{(ours_fp32 - reference).abs().max():.1e}"),
            ("ours bf16", bf16_s, f"{bf16_moved} ranks moved, max |d score| "
                                  f"{(ours_bf16 - reference).abs().max():.1e}")]
    print(f"{num_sequences} sequences ({args.dialogs} dialogs x 10 rounds x {args.options} options), "
          f"{torch.get_num_threads()} threads, config {args.config}, load average {load_average}"
          f" -> {os.getloadavg()[0]:.1f} (a busy machine slows every row; CPU seconds are less affected)")
    print(f"{'path':<44}{'seq/s':>8}{'speedup':>9}{'CPU s/seq':>11}{'speedup':>9}"
          f"  {'VisDial val (2.06 M seq)':>24}  vs reference")
    for (name, seconds, note), cpu_seconds in zip(rows, (reference_cpu, fp32_cpu, bf16_cpu)):
        rate = num_sequences / seconds
        hours = VISDIAL_VAL_SEQUENCES / rate / 3600
        print(f"{name:<44}{rate:>8.2f}{reference_s / seconds:>8.1f}x{cpu_seconds / num_sequences:>11.2f}"
              f"{reference_cpu / cpu_seconds:>8.1f}x  {hours:>22.1f} h  {note}")
    print(f"ours fp32: {achieved:.1f} GFLOP/s achieved; a 4096^3 fp32 matmul: {peak:.1f} GFLOP/s "
          f"({achieved / peak:.0%} of it)")
    print(f"speedup_fp32={reference_s / fp32_s:.2f} speedup_bf16={reference_s / bf16_s:.2f} "
          f"fp32_ranks_identical={'true' if fp32_moved == 0 else 'false'} "
          f"fraction_of_matmul_peak={achieved / peak:.3f}")


if __name__ == "__main__":
    run_cli(main)
