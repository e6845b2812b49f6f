"""The paper's table on the toy VisDial: base, +dense and +dense+NSP over several seeds, beside the
paper's numbers and a random ranking's; the last line printed is machine-readable.

    python scripts/toy_paper_table.py [--out toy_paper_table_output] [--seeds 3] [--val_dialogs 200] [--jobs 2]
                                      [--dense_flags "-dense_target_temperature 1"]
"""
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from dataloader.visdial_json import NUM_ANSWER_OPTIONS, load_dense_annotations, load_visdial_json
from options import TrainOptions, parse_options
from utils.benchmarking.toy import make_toy_visdial
from utils.errors import ArgumentParser, UserError, bounded, report_problems, run_cli
from utils.evaluation.metrics import visdial_metrics
from utils.evaluation.score_files import val_ground_truth
from utils.outputs import Output, check_outputs, resolved, write_json
from utils.training.checkpoints import CheckpointManager

REPO_ROOT = Path(__file__).resolve().parents[1]
ROWS = {"base": ("base", "config/presets/toy.yml"), "+dense": ("dense", "config/presets/toy_dense.yml"),
        "+dense+NSP": ("dense_nsp", "config/presets/toy_dense_nsp.yml")}  # row -> (run name, preset)
METRICS = {"NDCG": "ndcg", "MRR": "mrr", "R@1": "r@1", "mean rank": "mean"}
PAPER = {"base": (0.6387, 0.6750, 0.5385, 3.32), "+dense": (0.7447, 0.5074, 0.3795, 6.28),
         "+dense+NSP": (0.6808, 0.6392, 0.5078, 4.28)}  # VisDial v1.0 test-std, the original README
MARK = ".made-by-toy_paper_table"
WRITTEN = {MARK, "data", "runs", "logs", "evaluations", "toy_paper_table.json"}
"""What the script writes into --out: nothing else there is ever deleted."""
CHANCE_DRAWS = 100


def prepare_folder(out: Path) -> None:
    """Refuse an --out that is or holds a preset, or a non-empty folder this script did not make;
    empty one it made."""
    check_outputs([Output("--out", out, is_folder=True)],
                  {f"preset {path}": REPO_ROOT / path for _, path in ROWS.values()})
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        raise UserError(f"{out}: --out is not empty and was not made by this script (no {MARK} in it); "
                        "give a new folder")
    if out.exists() and (foreign := sorted(path.name for path in out.iterdir() if path.name not in WRITTEN)):
        raise UserError(f"{out}: holds {', '.join(foreign[:3])}, which this script did not write; not emptied "
                        "(move it away or give a new folder)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / MARK).touch()


def checked_dense_flags(text: str) -> list[str]:
    """--dense_flags as train.py arguments; a UserError when train.py would refuse them with either
    fine-tuning preset."""
    try:
        flags = shlex.split(text)
        problems = [problem for _, preset in list(ROWS.values())[1:] for problem in parse_options(
            ["-config", str(REPO_ROOT / preset), *flags], TrainOptions).problems()]
    except (ValueError, UserError) as error:
        problems = [str(error)]
    report_problems([f"--dense_flags: {problem}" for problem in dict.fromkeys(problems)])
    return flags


def chance(paths: dict, draws: int) -> dict:
    """Val metrics of a uniformly random ranking (`paths`: data flag -> path), the mean of `draws` draws."""
    dialogs = load_visdial_json(paths["-visdial_processed_val"], "val", processed=True)["data"]["dialogs"]
    annotations = load_dense_annotations(paths["-visdial_processed_val_dense_annotations"])
    fields = val_ground_truth(dialogs, annotations, NUM_ANSWER_OPTIONS)
    generator = torch.Generator().manual_seed(0)
    runs = [visdial_metrics(torch.rand((*fields["gt_option_inds"].shape, NUM_ANSWER_OPTIONS), generator=generator),
                            fields["gt_option_inds"], fields["round_id"], fields["gt_relevance"]) for _ in range(draws)]
    return {key: statistics.mean(run[key] for run in runs) for key in runs[0]}


def paper_pattern(summary: dict) -> bool:
    """+dense raises NDCG by 0.10 or more and lowers MRR; +dense+NSP keeps half of that gain or more,
    with an MRR above +dense's (`summary`: row -> metric -> (mean, spread))."""
    base, dense, nsp = (summary[row] for row in ROWS)
    gain = dense["ndcg"][0] - base["ndcg"][0]
    return (gain >= 0.10 and dense["mrr"][0] < base["mrr"][0] and nsp["ndcg"][0] - base["ndcg"][0] >= gain / 2
            and nsp["mrr"][0] > dense["mrr"][0])


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    positive = bounded(int, 1)
    parser.add_argument("--out", "-out", default="toy_paper_table_output", help="folder for data, runs and results")
    parser.add_argument("--seeds", "-seeds", type=positive, default=3, help="training seeds 0 .. N-1")
    parser.add_argument("--val_dialogs", "-val_dialogs", type=positive, default=200,
                        help="val dialogs (one densely annotated round each)")
    parser.add_argument("--jobs", "-jobs", type=positive, default=2, help="commands run at a time, one thread each")
    parser.add_argument("--dense_flags", "-dense_flags", default="", help="train.py flags added to both fine-tunings")
    args = parser.parse_args(argv)
    dense_flags = checked_dense_flags(args.dense_flags)
    out = resolved(args.out, "--out")
    prepare_folder(out)
    started = time.perf_counter()
    runs, logs, evaluations = out / "runs", out / "logs", out / "evaluations"
    logs.mkdir()
    flags = make_toy_visdial(out / "data", train_dialogs=1000, val_dialogs=args.val_dialogs, test_dialogs=20,
                             whole_image_dialogs=1000)
    slots = threading.Semaphore(args.jobs)

    def run(name: str, *command: str) -> None:
        with slots, open(logs / f"{name}.log", "w") as log:
            result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        if result.returncode:
            raise UserError(f"{command[0]} failed ({name}); its output: {logs / name}.log")

    def train_and_evaluate(row: str, seed: int, *extra: str) -> tuple[Path, dict]:
        """Train `row`'s run of `seed` (`extra`: more train.py flags) and evaluate it on val."""
        name = f"{ROWS[row][0]}_seed{seed}"
        run(name, "train.py", "-config", ROWS[row][1], *flags, *extra, "-seed", str(seed), "-save_path", str(runs),
            "-save_name", name)
        checkpoint = CheckpointManager(runs / name).newest()
        run(f"evaluate_{name}", "evaluate.py", "-split", "val", *flags, "-num_workers", "0", "-start_path",
            str(checkpoint), "-save_path", str(evaluations), "-save_name", name)
        return checkpoint, json.loads((evaluations / f"{name}_metrics.json").read_text())

    def seed_metrics(seed: int) -> dict:
        base, metrics = train_and_evaluate("base", seed)
        with ThreadPoolExecutor(2) as pool:
            tuned = {row: pool.submit(train_and_evaluate, row, seed, *dense_flags, "-start_path", str(base))
                     for row in list(ROWS)[1:]}
        return {"base": metrics, **{row: job.result()[1] for row, job in tuned.items()}}

    with ThreadPoolExecutor(args.seeds) as pool:
        per_seed = list(pool.map(seed_metrics, range(args.seeds)))
    random_ranking = chance(dict(zip(flags[::2], flags[1::2])), CHANCE_DRAWS)
    summary = {row: {key: (statistics.mean(seed[row][key] for seed in per_seed),
                           statistics.stdev(seed[row][key] for seed in per_seed) if args.seeds > 1 else 0.0)
                     for key in METRICS.values()} for row in ROWS}
    pattern = "yes" if paper_pattern(summary) else "no"
    seconds = time.perf_counter() - started
    cpu_seconds = sum(getattr(resource.getrusage(who), field) for field in ("ru_utime", "ru_stime")
                      for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

    print(f"toy VisDial val: {args.val_dialogs} dialogs (NDCG: one annotated round each); seeds 0-{args.seeds - 1}, "
          "mean ± standard deviation; the paper: VisDial v1.0 test-std")
    print(f"{'':<16}" + "".join(f"{label:>16}" for label in METRICS) + "   paper:"
          + "".join(f"{label:>10}" for label in METRICS))
    for row in ROWS:
        print(f"{row:<16}" + "".join(f"{mean:>9.4f} ± {spread:.3f}" for mean, spread in summary[row].values())
              + "        " + "".join(f"{value:>10.4f}" for value in PAPER[row]))
    print(f"{'random ranking':<16}" + "".join(f"{random_ranking[key]:>9.4f}       " for key in METRICS.values()))
    gain = summary["+dense"]["ndcg"][0] - summary["base"]["ndcg"][0]
    print(f"paper's pattern: {pattern} (+dense NDCG {gain:+.4f}); {seconds:.0f} s wall, {cpu_seconds:.0f} CPU s")
    write_json(out / "toy_paper_table.json", {"arguments": vars(args), "per_seed": per_seed, "summary": summary,
                                              "random_ranking": random_ranking, "paper": PAPER,
                                              "paper_pattern": pattern, "cpu_seconds": cpu_seconds})
    print("toy_paper_table: " + " ".join(f"{ROWS[row][0]}_{key}={summary[row][key][0]:.4f}" for row in ROWS
                                         for key in ("ndcg", "mrr"))
          + f" random_ndcg={random_ranking['ndcg']:.4f} paper_pattern={pattern} seconds={seconds:.0f}")


if __name__ == "__main__":
    run_cli(main)
