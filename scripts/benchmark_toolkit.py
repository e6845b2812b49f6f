"""The leaderboard toolkit on the toy VisDial: dense fine-tuning with each ranking loss, and an
ensemble of two seeds.

1. generates the toy data (preprocessing/make_toy_data.py, the demo's train split) and preprocesses
   it, as scripts/demo.sh (utils/benchmarking/toy.py);
2. trains the base objective twice, with -seed 0 and -seed 1 (config/presets/toy.yml: the demo's
   run), and evaluates seed 0's on val;
3. fine-tunes seed 0's checkpoint on the dense annotations with each -dense_loss (ce, listmle,
   approxndcg), the same budget and flags for each (-nsp_loss_coeff 0: the ranking loss alone), and
   seed 1's with ce; evaluates each on val (the two ce runs with -save_scores);
4. combines the two seeds' ce checkpoints with scripts/ensemble.py (each -combine).

Prints the val metrics of every model, and writes them to <out>/benchmark_toolkit.json. Nothing is
tuned: the numbers are what this budget gives (an ensemble need not beat its members).

    python scripts/benchmark_toolkit.py [--out benchmark_toolkit_output] [--val_dialogs 50]
        [--base_iterations N (default: the preset's)] [--dense_iterations 120]
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from models.losses import DENSE_LOSSES
from options import COMBINATIONS
from utils.benchmarking.toy import make_toy_visdial
from utils.errors import ArgumentParser, UserError, run_cli
from utils.outputs import resolved, write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS = (("NDCG", "ndcg"), ("MRR", "mrr"), ("R@1", "r@1"), ("R@5", "r@5"), ("R@10", "r@10"), ("Mean", "mean"))


def run(*command: str) -> float:
    """Run a command of this repository (python ...) quietly; its seconds. Its output on failure."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def newest_checkpoint(folder: Path) -> Path:
    return max(folder.glob("visdial_dialog_encoder_*.ckpt"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmark_toolkit_output", help="folder for the data, runs and results")
    parser.add_argument("--val_dialogs", type=int, default=50)
    parser.add_argument("--base_iterations", type=int, help="base training iterations per seed (default: the preset's)")
    parser.add_argument("--dense_iterations", type=int, default=120)
    args = parser.parse_args()
    out = resolved(args.out, "--out")
    data, runs, seconds = out / "data", out / "runs", {}
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; give --out a new folder")
    started = time.perf_counter()
    flags = make_toy_visdial(data, train_dialogs=1000, val_dialogs=args.val_dialogs, test_dialogs=20,
                             whole_image_dialogs=1000)
    seconds["data"] = time.perf_counter() - started

    results = {}

    def train(name: str, seed: int, *extra: str) -> Path:
        seconds[name] = run("train.py", "-config", "config/presets/toy.yml", *flags, "-seed", str(seed),
                            "-save_path", str(runs), "-save_name", name, *extra)
        return newest_checkpoint(runs / name)

    def dense(name: str, seed: int, loss: str, start: Path) -> Path:
        return train(name, seed, "-mode", "dense", "-dense_loss", loss, "-nsp_loss_coeff", "0", "-batch_size", "100",
                     "-lr", "1e-3", "-image_lr", "1e-3", "-warmup_steps", "10", "-max_iterations",
                     str(args.dense_iterations), "-total_steps", str(args.dense_iterations), "-start_path", str(start))

    def evaluate(name: str, checkpoint: Path, *extra: str) -> None:
        seconds[f"evaluate {name}"] = run("evaluate.py", "-split", "val", *flags, "-num_workers", "0",
                                          "-start_path", str(checkpoint), "-save_path", str(out),
                                          "-save_name", name, *extra)
        results[name] = json.loads((out / f"{name}_metrics.json").read_text())

    iterations = ["-max_iterations", str(args.base_iterations), "-total_steps", str(args.base_iterations)]
    base = {seed: train(f"base_seed{seed}", seed, *(iterations if args.base_iterations else [])) for seed in (0, 1)}
    evaluate("base_seed0", base[0])
    for loss in DENSE_LOSSES:
        evaluate(f"dense_{loss}_seed0", dense(f"dense_{loss}_seed0", 0, loss, base[0]),
                 *(["-save_scores", str(out / "seed0_scores.pt")] if loss == "ce" else []))
    evaluate("dense_ce_seed1", dense("dense_ce_seed1", 1, "ce", base[1]), "-save_scores", str(out / "seed1_scores.pt"))
    for combine in COMBINATIONS:
        name = f"ensemble_{combine}"
        seconds[name] = run("scripts/ensemble.py", "-split", "val", "-scores", str(out / "seed0_scores.pt"),
                            str(out / "seed1_scores.pt"), "-combine", combine,
                            "-visdial_processed_val", str(data / "visdial_1.0_val_processed.json"),
                            "-visdial_processed_val_dense_annotations",
                            str(data / "visdial_1.0_val_dense_annotations_processed.json"),
                            "-save_path", str(out), "-save_name", name)
        results[name] = json.loads((out / f"{name}_metrics.json").read_text())

    print(f"toy VisDial, val: {args.val_dialogs} dialogs x 10 rounds (NDCG: one annotated round each); "
          f"base training {args.base_iterations or 'the preset'} iterations per seed; dense fine-tuning {args.dense_iterations} "
          "iterations from the same seed's base checkpoint, -nsp_loss_coeff 0, identical flags for every loss; "
          "ensembles: dense_ce_seed0 + dense_ce_seed1, equal weights")
    print(f"{'model':<24}" + "".join(f"{label:>8}" for label, _ in METRICS))
    for name, metrics in results.items():
        print(f"{name:<24}" + "".join(f"{metrics[key]:>8.4f}" if key != "mean" else f"{metrics[key]:>8.2f}"
                                      for _, key in METRICS))
    print("seconds (wall, on a shared machine: noisy): "
          + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    write_text(out / "benchmark_toolkit.json", json.dumps({"arguments": vars(args), "metrics": results,
                                                           "seconds": seconds}, indent=1))


if __name__ == "__main__":
    run_cli(main)
