"""Does ViLBERT learn binding on the toy VisDial, and do its region weights show what it uses?

For every seed, trains ViLBERT and the language-only baseline with the same curriculum, the same
data and the same budget (BINDING_CURRICULUM: three train.py runs of config/presets/toy.yml, the demo's preset,
each starting from the one before), side by side on one thread each, then scores both on val per
question type (evaluate.py -question_types: MRR over the 100 options and a random ranking's;
ViLBERT's pointing score and deletion test, utils/evaluation/pointing.py) and asks ViLBERT, with
scripts/chat.py, the binding questions of the first val dialog. Prints one row per seed and the
mean: binding MRR of both models and of chance, pointing and deletion beside chance, and the
training CPU seconds of each model (user + system of its three train.py processes).

The curriculum (docs/learning.md says why and what else was tried): binding questions alone on
two-object scenes with three regions, the negatives drawn among the answer's own kind
(-num_options 6); then the demo's toy VisDial with more binding dialogs, still among the answer's
kind; then the same data with the preset's -num_options 20, whose negatives include answers of
other kinds (a number to a colour question) and paraphrases.

    OMP_NUM_THREADS=1 python scripts/binding_study.py --out binding_study [--seeds 0 1 2] [--val_dialogs 100]
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from dataloader.question_types import load_question_types
from utils.benchmarking.toy import make_toy_visdial
from utils.errors import ArgumentParser, UserError, run_cli
from utils.outputs import resolved, write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESET = "config/presets/toy.yml"
MODELS = ("vilbert", "language_only")
TOY_SETS = {  # name -> (-whole_image_dialogs, the other make_toy_data.py flags besides the seed and dialog counts)
    "easy": (0, ["-question_types", "binding", "-min_objects", "2", "-max_objects", "2", "-boxes_per_image", "3",
                 "-binding_dialogs", "2000"]),
    "demo": (1000, ["-binding_dialogs", "1000"]),
}


@dataclass(frozen=True)
class Stage:
    """One train.py run of the curriculum: its toy set, iterations, -num_options and warm-up."""
    toy_set: str
    iterations: int
    num_options: int
    warmup_steps: int


BINDING_CURRICULUM = (Stage("easy", 2000, 6, 150), Stage("demo", 4500, 6, 50), Stage("demo", 1500, 20, 50))


def train_curriculum(model: str, seed: int, curriculum: list[Stage], flags: dict, runs: Path) -> tuple[Path, float]:
    """Train `model` through the `curriculum`, each stage from the checkpoint of the one before;
    returns the last checkpoint and the user + system CPU seconds of the train.py processes.
    Exits on a failure, naming the stage's log."""
    start, cpu_seconds = [], 0.0
    for number, stage in enumerate(curriculum, start=1):
        name = f"{model}_stage{number}"
        with open(runs / f"{name}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "train.py", "-config", PRESET, *flags[stage.toy_set], "-seed", str(seed),
                 "-model_type", model, "-num_options", str(stage.num_options),
                 "-max_iterations", str(stage.iterations), "-total_steps", str(stage.iterations),
                 "-warmup_steps", str(stage.warmup_steps), "-save_path", str(runs), "-save_name", name, *start],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            sys.exit(f"failed: training {model}, seed {seed}, stage {number} (log: {runs / name}.log)")
        cpu_seconds += usage.ru_utime + usage.ru_stime
        start = ["-start_path", str(runs / name / f"visdial_dialog_encoder_{stage.iterations}.ckpt")]
    return Path(start[1]), cpu_seconds


def run(*command: str, stdin: str = "") -> str:
    """Run a command of this repository (python ...) with `stdin`; its standard output. Its output
    on failure."""
    result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, input=stdin, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def chat_answers(checkpoint: Path, folder: Path) -> list[tuple[str, str, str]]:
    """(question, ViLBERT's answer, the ground truth) for the binding rounds of the first val dialog
    of the toy set in `folder`, asked in a scripts/chat.py session about its image, each question
    alone (:reset before it)."""
    data = json.loads((folder / "visdial_1.0_val_processed.json").read_text())["data"]
    types = load_question_types(folder / "visdial_1.0_val_question_types.json")
    dialog = data["dialogs"][0]
    binding = [turn for number, turn in enumerate(dialog["dialog"], start=1)
               if types.of(dialog["image_id"], number) == "binding"]
    questions = [data["questions"][turn["question"]] for turn in binding]
    output = run("scripts/chat.py", "-start_path", str(checkpoint), "-json", "-visdial_tot_rounds", "2",
                 "-model_config", str(folder / "model_config.json"), "-vocab", str(folder / "vocab.txt"),
                 "-visdial_image_feats", str(folder / "visdial_img_feat.lmdb"),
                 "-dialogs", str(folder / "visdial_1.0_val_processed.json"), "-image_id", str(dialog["image_id"]),
                 stdin="".join(f":reset\n{question}\n" for question in questions))
    answers = [event["answer"] for event in map(json.loads, output.splitlines()) if event["event"] == "turn"]
    return [(question, answer, data["answers"][turn["answer"]])
            for question, answer, turn in zip(questions, answers, binding)]


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="binding_study", help="a new folder for the data, runs and results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--val_dialogs", type=int, default=100, help="val dialogs of the demo's set (10 rounds each)")
    parser.add_argument("--iterations", type=int, nargs=len(BINDING_CURRICULUM),
                        default=[stage.iterations for stage in BINDING_CURRICULUM],
                        help="the iterations of each stage (a quick check of the script: 20 20 20)")
    args = parser.parse_args()
    if min(args.iterations) < 1:
        raise UserError(f"--iterations must be at least 1 each, got {' '.join(map(str, args.iterations))}")
    curriculum = [replace(stage, iterations=count) for stage, count in zip(BINDING_CURRICULUM, args.iterations)]
    if min(args.seeds) < 0 or len(set(args.seeds)) < len(args.seeds):
        raise UserError(f"--seeds must be distinct numbers >= 0, got {' '.join(map(str, args.seeds))}")
    if args.val_dialogs < 1:
        raise UserError(f"--val_dialogs must be at least 1, got {args.val_dialogs}")
    out = resolved(args.out, "--out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: --out exists and is not an empty folder; give a new one")
    rows = {}
    for seed in args.seeds:
        started = time.perf_counter()
        flags = {name: make_toy_visdial(out / f"seed{seed}" / name, train_dialogs=1000, val_dialogs=args.val_dialogs,
                                        test_dialogs=20, whole_image_dialogs=whole_image, seed=seed,
                                        extra=[*extra, "-no_images"])
                 for name, (whole_image, extra) in TOY_SETS.items()}
        runs = out / f"seed{seed}" / "runs"
        runs.mkdir(parents=True)
        with ThreadPoolExecutor(len(MODELS)) as pool:   # side by side, one process each
            trained = dict(zip(MODELS, pool.map(lambda model: train_curriculum(model, seed, curriculum, flags, runs), MODELS)))
        metrics = {}
        for model, (checkpoint, _) in trained.items():
            run("evaluate.py", "-split", "val", *flags["demo"], "-model_type", model, "-num_workers", "0",
                "-start_path", str(checkpoint), "-save_path", str(out / f"seed{seed}"), "-save_name", model,
                "-question_types", str(out / f"seed{seed}" / "demo" / "visdial_1.0_val_question_types.json"))
            metrics[model] = json.loads((out / f"seed{seed}" / f"{model}_metrics.json").read_text())
        chat = chat_answers(trained["vilbert"][0], out / f"seed{seed}" / "demo")
        rows[seed] = {"vilbert": metrics["vilbert"], "language_only": metrics["language_only"],
                      "cpu_seconds": {model: cpu for model, (_, cpu) in trained.items()},
                      "chat": chat, "wall_seconds": time.perf_counter() - started}
        print(f"seed {seed}: " + "; ".join(f"{question} -> {answer} ({'right' if answer == truth else 'wrong: ' + truth})"
                                           for question, answer, truth in chat), flush=True)
    print_table(rows, args.val_dialogs)
    write_text(out / "binding_study.json", json.dumps({"arguments": vars(args), "rows": rows}, indent=1))


COLUMNS = (("ViLBERT", lambda row: row["vilbert"]["mrr_type_binding"]),
           ("lang-only", lambda row: row["language_only"]["mrr_type_binding"]),
           ("random", lambda row: row["vilbert"]["random_mrr_type_binding"]),
           ("ratio", lambda row: row["vilbert"]["mrr_type_binding"] / row["language_only"]["mrr_type_binding"]),
           ("pointing", lambda row: row["vilbert"]["pointing_binding"]),
           ("chance", lambda row: row["vilbert"]["pointing_chance_binding"]),
           ("deletion", lambda row: row["vilbert"]["deletion_binding"]),
           ("chance", lambda row: row["vilbert"]["deletion_chance_binding"]),
           ("CPU s V", lambda row: row["cpu_seconds"]["vilbert"]),
           ("CPU s L", lambda row: row["cpu_seconds"]["language_only"]))


def print_table(rows: dict, val_dialogs: int) -> None:
    """The binding rounds of val per seed, then the mean and the spread (max - min) over seeds."""
    print(f"binding rounds of val ({val_dialogs} dialogs): MRR over the 100 options of ViLBERT, the "
          "language-only model and a random ranking; ViLBERT's pointing and deletion scores beside chance; "
          "training CPU seconds (user + system, all stages) of each model")
    print(f"{'seed':<8}" + "".join(f"{label:>10}" for label, _ in COLUMNS))
    values = {seed: [value(row) for _, value in COLUMNS] for seed, row in rows.items()}
    for seed, row in values.items():
        print(f"{seed:<8}" + "".join(f"{value:>10.3f}" if index < 8 else f"{value:>10.0f}"
                                     for index, value in enumerate(row)))
    columns = list(zip(*values.values()))
    for label, reduce in (("mean", lambda column: sum(column) / len(column)),
                          ("spread", lambda column: max(column) - min(column))):
        print(f"{label:<8}" + "".join(f"{reduce(column):>10.3f}" if index < 8 else f"{reduce(column):>10.0f}"
                                      for index, column in enumerate(columns)))


if __name__ == "__main__":
    run_cli(main)
