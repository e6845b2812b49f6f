"""The paper's table on the toy VisDial: the base model, + dense fine-tuning, + dense fine-tuning
with NSP, over several seeds, beside the paper's numbers and a random ranking's.

1. generates the toy VisDial of scripts/demo.sh (utils/benchmarking/toy.py) with --val_dialogs val
   dialogs (one densely annotated round each: NDCG's sample);
2. for each seed 0 .. --seeds - 1: trains the base objective (config/presets/toy.yml), then
   fine-tunes that checkpoint with config/presets/toy_dense.yml and config/presets/toy_dense_nsp.yml;
3. evaluates every model on val, and the ensemble of the seeds' +dense runs (scripts/ensemble.py);
4. prints NDCG, MRR, R@1 and mean rank per row (mean ± standard deviation over seeds) beside the
   paper's (VisDial v1.0 test-std, the original README) and a uniformly random ranking's, and
   whether the paper's pattern holds: +dense raises NDCG by at least 0.10 and lowers MRR, and
   +dense+NSP keeps at least half of that gain with an MRR above +dense's.

--dense_flags adds train.py flags to both fine-tunings (`--dense_flags "-dense_target_temperature 1"`:
the reference's target), checked with the presets before any work; the script's own -seed,
-save_path, -save_name and -start_path come after them. --jobs commands run at a time, each on one
thread. Writes <out>/toy_paper_table.json and each command's output to <out>/logs/; the last line
printed is machine-readable. --out must be new, empty, or made by this script (then emptied first).

    python scripts/toy_paper_table.py [--out toy_paper_table_output] [--seeds 3] [--val_dialogs 200] [--jobs 2]
                                      [--dense_flags "-lr 3e-4 ..."]
"""
import argparse
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
from utils.benchmarking.toy import make_toy_visdial
from options import TrainOptions, parse_options
from utils.errors import ArgumentParser, UserError, report_problems, run_cli
from utils.evaluation.metrics import visdial_metrics
from utils.evaluation.score_files import val_ground_truth
from utils.files import resolved, write_json
from utils.outputs import Output, check_outputs

REPO_ROOT = Path(__file__).resolve().parents[1]
ROWS = {"base": ("base", "config/presets/toy.yml"), "+dense": ("dense", "config/presets/toy_dense.yml"),
        "+dense+NSP": ("dense_nsp", "config/presets/toy_dense_nsp.yml")}
"""Row -> (run name, preset)."""
METRICS = {"NDCG": "ndcg", "MRR": "mrr", "R@1": "r@1", "mean rank": "mean"}
PAPER = {"base": (0.6387, 0.6750, 0.5385, 3.32), "+dense": (0.7447, 0.5074, 0.3795, 6.28),
         "+dense+NSP": (0.6808, 0.6392, 0.5078, 4.28)}
"""VisDial v1.0 test-std (the original README): NDCG, MRR, R@1, mean rank."""
MARK = ".made-by-toy_paper_table"
CHANCE_DRAWS = 100


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def prepare_folder(out: Path) -> None:
    """Refuse an --out that is, or holds, a preset, or a non-empty folder this script did not make;
    empty one it made."""
    check_outputs([Output("--out", out, is_folder=True)],
                  {f"preset {path}": REPO_ROOT / path for _, path in ROWS.values()})
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        raise UserError(f"{out}: --out is not empty and was not made by this script (no {MARK} in it); "
                        "give a new folder")
    if out.exists():
        shutil.rmtree(out)
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
    """Val metrics of a uniformly random ranking of the toy's val split (`paths`: its data flags ->
    paths): the mean over `draws` draws of random scores."""
    dialogs = load_visdial_json(paths["-visdial_processed_val"], "val", processed=True)["data"]["dialogs"]
    annotations = load_dense_annotations(paths["-visdial_processed_val_dense_annotations"])
    fields = val_ground_truth(dialogs, annotations, NUM_ANSWER_OPTIONS)
    shape = (*fields["gt_option_inds"].shape, NUM_ANSWER_OPTIONS)
    generator = torch.Generator().manual_seed(0)
    runs = [visdial_metrics(torch.rand(shape, generator=generator), fields["gt_option_inds"], fields["round_id"],
                            fields["gt_relevance"]) for _ in range(draws)]
    return {key: statistics.mean(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", "-out", default="toy_paper_table_output", help="folder for data, runs and results")
    parser.add_argument("--seeds", "-seeds", type=positive_int, default=3, help="training seeds 0 .. N-1")
    parser.add_argument("--val_dialogs", "-val_dialogs", type=positive_int, default=200)
    parser.add_argument("--jobs", "-jobs", type=positive_int, default=2, help="commands run at a time")
    parser.add_argument("--dense_flags", "-dense_flags", default="", help="train.py flags added to both fine-tunings")
    args = parser.parse_args()
    dense_flags = checked_dense_flags(args.dense_flags)
    out = resolved(args.out, "--out")
    prepare_folder(out)
    started = time.perf_counter()
    data, runs, logs, evaluations = out / "data", out / "runs", out / "logs", out / "evaluations"
    logs.mkdir()
    flags = make_toy_visdial(data, train_dialogs=1000, val_dialogs=args.val_dialogs, test_dialogs=20,
                             whole_image_dialogs=1000)
    slots = threading.Semaphore(args.jobs)

    def run(name: str, *command: str) -> None:
        """python command... in the repository, on one thread once a slot is free; output in logs/<name>.log."""
        with slots, open(logs / f"{name}.log", "w") as log:
            result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        if result.returncode:
            raise UserError(f"{' '.join(command[:1])} failed ({name}); its output: {logs / name}.log")

    def train_and_evaluate(row: str, seed: int, *extra: str) -> tuple[Path, dict]:
        """Train `row`'s run of `seed` (with the flags `extra`: a fine-tuning's -start_path) and evaluate it."""
        name = f"{ROWS[row][0]}_seed{seed}"
        run(name, "train.py", "-config", ROWS[row][1], *flags, *extra, "-seed", str(seed), "-save_path", str(runs),
            "-save_name", name)
        checkpoint = max((runs / name).glob("visdial_dialog_encoder_[0-9]*.ckpt"),
                         key=lambda path: int(path.stem.rsplit("_", 1)[1]))
        run(f"evaluate_{name}", "evaluate.py", "-split", "val", *flags, "-num_workers", "0", "-start_path",
            str(checkpoint), "-save_path", str(evaluations), "-save_name", name,
            "-save_scores", str(evaluations / f"{name}_scores.pt"))
        return checkpoint, json.loads((evaluations / f"{name}_metrics.json").read_text())

    def seed_metrics(seed: int) -> dict:
        base, metrics = train_and_evaluate("base", seed)
        with ThreadPoolExecutor(2) as pool:
            tuned = {row: pool.submit(train_and_evaluate, row, seed, *dense_flags, "-start_path", str(base))
                     for row in list(ROWS)[1:]}
        return {"base": metrics, **{row: job.result()[1] for row, job in tuned.items()}}

    with ThreadPoolExecutor(args.seeds) as pool:
        per_seed = list(pool.map(seed_metrics, range(args.seeds)))
    data_paths = dict(zip(flags[::2], flags[1::2]))
    run("ensemble", "scripts/ensemble.py", "-split", "val", "-save_path", str(evaluations), "-save_name",
        "dense_ensemble", "-scores", *[str(evaluations / f"dense_seed{seed}_scores.pt") for seed in range(args.seeds)],
        *[argument for flag in ("-visdial_processed_val", "-visdial_processed_val_dense_annotations")
          for argument in (flag, data_paths[flag])])
    others = {f"+dense, ensemble of {args.seeds}": json.loads(
        (evaluations / "dense_ensemble_metrics.json").read_text()), "random ranking": chance(data_paths, CHANCE_DRAWS)}

    summary = {row: {key: (statistics.mean(seed[row][key] for seed in per_seed),
                           statistics.stdev(seed[row][key] for seed in per_seed) if args.seeds > 1 else 0.0)
                     for key in METRICS.values()} for row in ROWS}
    gain = summary["+dense"]["ndcg"][0] - summary["base"]["ndcg"][0]
    pattern = (gain >= 0.10 and summary["+dense"]["mrr"][0] < summary["base"]["mrr"][0]
               and summary["+dense+NSP"]["ndcg"][0] - summary["base"]["ndcg"][0] >= gain / 2
               and summary["+dense+NSP"]["mrr"][0] > summary["+dense"]["mrr"][0])
    seconds = time.perf_counter() - started
    cpu_seconds = sum(getattr(resource.getrusage(who), field) for field in ("ru_utime", "ru_stime")
                      for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

    print(f"toy VisDial val: {args.val_dialogs} dialogs x 10 rounds (NDCG: one annotated round each); seeds 0-"
          f"{args.seeds - 1}: mean ± standard deviation; the paper: VisDial v1.0 test-std")
    print(f"{'':<22}" + "".join(f"{label:>16}" for label in METRICS) + "   paper:"
          + "".join(f"{label:>10}" for label in METRICS))
    for row in ROWS:
        print(f"{row:<22}" + "".join(f"{mean:>9.4f} ± {spread:.3f}" for mean, spread in summary[row].values())
              + "        " + "".join(f"{value:>10.4f}" for value in PAPER[row]))
    for label, metrics in others.items():
        print(f"{label:<22}" + "".join(f"{metrics[key]:>9.4f}       " for key in METRICS.values()))
    print(f"paper's pattern: {'yes' if pattern else 'no'} (+dense NDCG gain {gain:+.4f}); {seconds:.0f} s wall, "
          f"{cpu_seconds:.0f} CPU s")
    write_json(out / "toy_paper_table.json", {
        "arguments": vars(args), "per_seed": per_seed, "summary": summary, "others": others, "paper": PAPER,
        "paper_pattern": pattern, "seconds": seconds, "cpu_seconds": cpu_seconds})
    print("toy_paper_table: " + " ".join(f"{ROWS[row][0]}_{key}={summary[row][key][0]:.4f}" for row in ROWS
                                         for key in ("ndcg", "mrr"))
          + f" random_ndcg={others['random ranking']['ndcg']:.4f} paper_pattern={'yes' if pattern else 'no'} "
          f"seconds={seconds:.0f} cpu_seconds={cpu_seconds:.0f}")

if __name__ == "__main__":
    run_cli(main)
