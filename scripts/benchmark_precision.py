"""fp32 against lower precisions on one trained checkpoint's val scores, through evaluate.py's engine
(docs/performance.md, "Precision on evidence").

    python scripts/benchmark_precision.py -start_path CHECKPOINT [evaluate.py's flags] \\
        [--compare bf16 tf32 fp16] [--out precision.json]

fp32 runs with TF32 off; tf32 is fp32 with a GPU's TF32 matrix products; bf16 and fp16 are autocast.
Default --compare: bf16 on the CPU, bf16 and tf32 on a GPU.
"""
import argparse
import time
from pathlib import Path

import torch

from dataloader.collate import collate_dialog_batch
from dataloader.visdial_json import SPLITS
from options import EvalOptions, parse_options, resolve_precision
from utils.benchmarking.agreement import rank_agreement
from utils.distributed import setup_distributed, teardown_distributed
from utils.errors import ArgumentParser, UserError, report_problems, run_cli
from utils.evaluation.run import load_model, load_split
from utils.evaluation.scoring import ScoredDialogs, score_dataset
from utils.evaluation.validation import val_metrics
from utils.outputs import Output, check_outputs, write_json

METRICS = (("NDCG", "ndcg"), ("MRR", "mrr"), ("R@1", "r@1"), ("R@5", "r@5"), ("R@10", "r@10"), ("Mean", "mean"))
COMPARABLE = ("bf16", "tf32", "fp16")
MRR_TOLERANCE = 0.001  # a precision that moves val MRR by more is not used for evaluation


def score(model: torch.nn.Module, dataset, options: EvalOptions, precision: str) -> tuple[ScoredDialogs, float]:
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    start = time.perf_counter()
    try:
        scored = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=options.eval_tokens_per_batch,
                               precision="fp32" if precision == "tf32" else precision,
                               num_workers=options.num_workers, progress=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return scored, time.perf_counter() - start


def compare_precisions(model: torch.nn.Module, dataset, options: EvalOptions, precisions: list[str]) -> dict:
    """{precision: {metrics, seconds, and against fp32: deltas, max_score_difference, ranks_moved,
    beyond_near_ties, options, share_beyond_near_ties}} of fp32 and each of `precisions`."""
    reference, seconds = score(model, dataset, options, "fp32")
    results = {"fp32": {"metrics": val_metrics(reference), "seconds": seconds}}
    for precision in precisions:
        scored, seconds = score(model, dataset, options, precision)
        metrics, agreement = val_metrics(scored), rank_agreement(scored.scores, reference.scores)
        results[precision] = {
            "metrics": metrics, "seconds": seconds,
            "deltas": {key: metrics[key] - results["fp32"]["metrics"][key] for _, key in METRICS if key in metrics},
            "max_score_difference": agreement.max_score_difference, "ranks_moved": agreement.ranks_moved,
            "beyond_near_ties": agreement.beyond_near_ties, "options": agreement.options,
            "share_beyond_near_ties": agreement.share_beyond_near_ties}
    return results


def format_results(results: dict) -> str:
    keys = [(label, key) for label, key in METRICS if key in results["fp32"]["metrics"]]
    lines = [f"{'precision':<14}" + "".join(f"{label:>9}" for label, _ in keys)
             + f"{'max |d score|':>15}{'ranks beyond near-ties':>26}{'s':>8}"]
    for precision, result in results.items():
        lines.append(f"{precision:<14}" + "".join(f"{result['metrics'][key]:>9.4f}" for _, key in keys)
                     + (f"{result['max_score_difference']:>15.1e}{result['beyond_near_ties']:>11,} of "
                        f"{result['options']:,} ({result['share_beyond_near_ties']:.2%})" if precision != "fp32"
                        else f"{'-':>15}{'-':>26}") + f"{result['seconds']:>8.1f}")
        if precision != "fp32":
            lines.append(f"{'  - fp32':<14}" + "".join(f"{result['deltas'][key]:>+9.4f}" for _, key in keys))
    moved = {precision: abs(result["deltas"]["mrr"]) for precision, result in results.items() if precision != "fp32"}
    lines.append("; ".join(f"{precision} moves MRR by {delta:.4f}: "
                           + ("more than" if delta > MRR_TOLERANCE else "within") + f" {MRR_TOLERANCE}"
                           for precision, delta in moved.items()))
    lines.append(" ".join(f"{precision}_mrr_delta={result['deltas']['mrr']:+.5f} "
                          f"{precision}_share_beyond_near_ties={result['share_beyond_near_ties']:.5f}"
                          for precision, result in results.items() if precision != "fp32"))
    return "\n".join(lines)


def main(argv=None) -> None:
    description, epilog = __doc__.split("\n\n", 1)
    parser = ArgumentParser(description=description, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", nargs="+", choices=COMPARABLE, help="the precisions compared with fp32")
    parser.add_argument("--out", default="", help="JSON file of every result")
    extra, evaluate_flags = parser.parse_known_args(argv)
    options = parse_options(["-split", "val", *evaluate_flags], EvalOptions)
    if SPLITS[options.split].last_round_only:
        raise UserError(f"-split {options.split}: the comparison needs the val split's metrics (-split val)")
    report_problems(options.problems())
    if extra.out:
        check_outputs([Output("--out", Path(extra.out), what="the result file")], options.input_paths())
    context = setup_distributed()
    try:
        precisions = extra.compare or (["bf16", "tf32"] if context.device.type == "cuda" else ["bf16"])
        if "tf32" in precisions and context.device.type != "cuda":
            raise UserError("--compare tf32: TF32 is a GPU's arithmetic; this machine has no CUDA GPU")
        for precision in set(precisions) - {"tf32"}:
            try:
                resolve_precision(precision, context.device, evaluation=True)  # fp16 needs a CUDA device
            except UserError as error:
                raise UserError(f"--compare {precision}: {error}") from None
        dataset = load_split(options)
        model = load_model(options, dataset, context.device)
        results = compare_precisions(model, dataset, options, precisions)
    finally:
        teardown_distributed()
    print(f"{options.start_path}: {len(dataset)} val dialogs on {context.device} (torch {torch.__version__})")
    print(format_results(results))
    if extra.out:
        write_json(extra.out, {"checkpoint": options.start_path, "device": str(context.device),
                               "torch": torch.__version__, "results": results})


if __name__ == "__main__":
    run_cli(main)
