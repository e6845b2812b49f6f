"""Evaluation throughput: the reference's way of scoring against ours, side by side in one run.

    python scripts/benchmark_eval.py            # paper config, 1 dialog x 10 rounds x 12 options
    python scripts/benchmark_eval.py --quick    # 1 dialog x 10 rounds x 4 options (under 2 minutes)

Sequences have realistic VisDial lengths (round r of a dialog is about 15 + 12 r tokens, answers
of 1 to 8 tokens) and 37 image regions. Rows:

* reference path: every sequence padded to 256 tokens, the image copied per sequence, fixed
  chunks, fp32, every head computed (what the reference's evaluation did);
* ours fp32 / bf16: utils/evaluation/scoring.py (length-sorted token-budget batches, images once, NSP head only).

Also the achieved GFLOP/s of our fp32 path (FLOPs counted by torch's FlopCounterMode) against a
large fp32 matrix product measured in the same run, and whether the fp32 ranks equal the
reference path's. Weights are random but drawn at O(1) scales (Linear N(0, 1/fan_in),
embeddings N(0, 1)) so that scores are spread out as in a trained model. The last line is
machine-readable.
"""
import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import build_model
from utils.evaluation.metrics import scores_to_ranks
from utils.evaluation.scoring import ranking_scores, score_sequences

REGIONS = 37
REFERENCE_MAX_SEQ_LEN = 256
VISDIAL_VAL_SEQUENCES = 2064 * 10 * 100


@torch.inference_mode()
def score_padded_reference_style(model: torch.nn.Module, batch: dict, max_seq_len: int,
                                 sequences_per_call: int, all_heads: bool = True) -> torch.Tensor:
    """The reference's way of scoring, the baseline of this benchmark (and of tests/test_scoring.py).

    Every sequence padded to ``max_seq_len``, the image copied per sequence, fixed chunks of
    ``sequences_per_call``, fp32, the LM and region heads computed too unless ``all_heads`` is
    False. Same batch and output as ``score_sequences``.
    """
    device = next(model.parameters()).device
    num_sequences, length = batch["tokens"].shape

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, max_seq_len - length))

    tokens, segments = padded(batch["tokens"]), padded(batch["segments"])
    attention_mask = padded(batch["attention_mask"].long()).bool()
    image_index = batch["image_index"]
    scores = []
    for start in range(0, num_sequences, sequences_per_call):
        rows = slice(start, start + sequences_per_call)
        output = model(
            tokens[rows].to(device), segments[rows].to(device), attention_mask[rows].to(device),
            batch["image_feat"][image_index[rows]].to(device),
            batch["image_loc"][image_index[rows]].to(device),
            batch["image_mask"][image_index[rows]].to(device),
            output_lm_scores=all_heads, output_img_scores=all_heads,
        )
        scores.append(ranking_scores(output.nsp_scores).cpu())
    return torch.cat(scores)


def spread_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Redraw weights at O(1) scales so that scores differ clearly between options."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, module.in_features ** -0.5, generator=generator)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0, 1, generator=generator)


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


def timed(function):
    """(result, wall seconds, CPU seconds of this process over all threads)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of a large fp32 matrix product on this machine (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/bert_base_6layer_6conect.json")
    parser.add_argument("--dialogs", type=int, default=1)
    parser.add_argument("--options", type=int, default=12, help="answer options per round")
    parser.add_argument("--tokens_per_batch", type=int, default=4096,
                        help="token budget of our batches (smaller than evaluate.py's 16384 because the "
                             "pool of sequences here is small: it keeps batches within a few rounds)")
    parser.add_argument("--reference_chunk", type=int, default=20, help="sequences per reference call")
    parser.add_argument("--quick", action="store_true", help="1 dialog x 4 options")
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

    warm_up = {k: v[:4] if k in ("tokens", "segments", "attention_mask", "image_index") else v
               for k, v in batch.items()}
    for precision in ("fp32", "bf16"):
        score_sequences(model, warm_up, args.tokens_per_batch, precision)
    reference, reference_s, reference_cpu = timed(lambda: score_padded_reference_style(
        model, batch, REFERENCE_MAX_SEQ_LEN, args.reference_chunk, all_heads=True))
    with FlopCounterMode(display=False) as counter:  # counts per op; its overhead is negligible here
        ours_fp32, fp32_s, fp32_cpu = timed(lambda: score_sequences(model, batch, args.tokens_per_batch, "fp32"))
    ours_bf16, bf16_s, bf16_cpu = timed(lambda: score_sequences(model, batch, args.tokens_per_batch, "bf16"))
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
    main()
