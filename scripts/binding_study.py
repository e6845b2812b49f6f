"""Does ViLBERT learn binding on the toy VisDial, and do its region weights show what it uses? Trains
ViLBERT and the language-only baseline through the same curriculum, side by side on one thread each,
and prints their binding MRR on the demo's val, ViLBERT's pointing and deletion scores and its chat
answers (docs/learning.md#binding says what the curriculum is and why).

    OMP_NUM_THREADS=1 python scripts/binding_study.py --out binding_study [--seeds 0 1 2]
    python scripts/binding_study.py --out /tmp/binding_check --seeds 0 --smoke   # the mechanics, tiny
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dataloader.question_types import load_question_types
from dataloader.visdial_json import load_visdial_json
from utils.benchmarking.toy import make_toy_visdial
from utils.errors import ArgumentParser, UserError, bounded, run_cli
from utils.outputs import Output, check_outputs, resolved, write_text
from utils.training.checkpoints import CheckpointManager

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vilbert", "language_only")
TOY_SETS = {  # name -> dialog counts, more make_toy_data.py flags; "mixed" is scripts/demo.sh's set and binding dialogs
    "easy": ({"train_dialogs": 1000, "val_dialogs": 1, "test_dialogs": 1, "binding_dialogs": 2000},
             ["-question_types", "binding", "-min_objects", "2", "-max_objects", "2", "-boxes_per_image", "3"]),
    "mixed": ({"train_dialogs": 1000, "whole_image_dialogs": 1000, "val_dialogs": 30, "test_dialogs": 20,
               "binding_dialogs": 1000}, []),
}
CURRICULUM = (("easy", 2000, 6, 150), ("mixed", 4500, 6, 50), ("mixed", 1500, 20, 50))
"""Stages: toy set, iterations, -num_options, -warmup_steps; each starts from the one before."""
SMOKE = 8
"""--smoke: dialogs of every count and iterations of every stage."""


def run(*command: str, stdin: str = "") -> str:
    """Run a command of this repository (python ...) with `stdin`; its standard output. Exits with
    its output's end on failure."""
    result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, input=stdin, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def train_curriculum(model: str, seed: int, flags: dict, runs: Path, smoke: bool) -> tuple[Path, float]:
    """Train `model` through CURRICULUM -> its last checkpoint and the user + system CPU seconds of
    the train.py processes."""
    start, cpu_seconds = [], 0.0
    for number, (toy_set, iterations, options, warmup) in enumerate(CURRICULUM, start=1):
        iterations, name = SMOKE if smoke else iterations, f"{model}_stage{number}"
        with open(runs / f"{name}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "train.py", "-config", "config/presets/toy.yml", *flags[toy_set], "-seed", str(seed),
                 "-model_type", model, "-num_options", str(options), "-max_iterations", str(iterations),
                 "-total_steps", str(iterations), "-warmup_steps", str(min(warmup, iterations)),
                 "-save_path", str(runs), "-save_name", name, *start],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"failed: training {model}, seed {seed}, stage {number} (log: {runs / name}.log)")
        cpu_seconds += usage.ru_utime + usage.ru_stime
        start = ["-start_path", str(CheckpointManager(runs / name).checkpoint(iterations))]
    return Path(start[1]), cpu_seconds


def chat_answers(checkpoint: Path, folder: Path) -> list[tuple[str, str, str]]:
    """(question, ViLBERT's answer, the ground truth) for the binding rounds of the first val dialog
    of the toy set in `folder`, its questions asked in order in a scripts/chat.py session as the
    demo asks them (each top answer goes into the history)."""
    data = load_visdial_json(folder / "visdial_1.0_val_processed.json", "val", processed=True)["data"]
    types = load_question_types(folder / "visdial_1.0_val_question_types.json")
    dialog = data["dialogs"][0]
    binding = [number for number in range(len(dialog["dialog"]))
               if types.of(dialog["image_id"], number + 1) == "binding"]
    questions = [data["questions"][turn["question"]] for turn in dialog["dialog"][:binding[-1] + 1]]
    output = run("scripts/chat.py", "-start_path", str(checkpoint), "-json", "-visdial_tot_rounds", "2",
                 "-model_config", str(folder / "model_config.json"), "-vocab", str(folder / "vocab.txt"),
                 "-visdial_image_feats", str(folder / "visdial_img_feat.lmdb"),
                 "-dialogs", str(folder / "visdial_1.0_val_processed.json"), "-image_id", str(dialog["image_id"]),
                 stdin="".join(f"{question}\n" for question in questions))
    answers = [event["answer"] for event in map(json.loads, output.splitlines()) if event["event"] == "turn"]
    return [(questions[number], answers[number], data["answers"][dialog["dialog"][number]["answer"]])
            for number in binding]


def study_seed(seed: int, folder: Path, smoke: bool) -> dict:
    """One seed: the toy sets, both models' curricula, their val metrics (the mixed set's, per
    question type) and ViLBERT's chat answers."""
    flags = {}
    for name, (counts, extra) in TOY_SETS.items():
        counts = {key: min(count, SMOKE) if smoke else count for key, count in counts.items()}
        binding = counts.pop("binding_dialogs")
        flags[name] = make_toy_visdial(folder / name, seed=seed, **counts,
                                       extra=[*extra, "-binding_dialogs", str(binding), "-no_images"])
    runs = folder / "runs"
    runs.mkdir()
    with ThreadPoolExecutor(len(MODELS)) as pool:
        trained = dict(zip(MODELS, pool.map(lambda model: train_curriculum(model, seed, flags, runs, smoke), MODELS)))
    row = {"cpu_seconds": {model: cpu for model, (_, cpu) in trained.items()}}
    for model, (checkpoint, _) in trained.items():
        run("evaluate.py", "-split", "val", *flags["mixed"], "-model_type", model, "-num_workers", "0",
            "-start_path", str(checkpoint), "-save_path", str(folder), "-save_name", model,
            "-question_types", str(folder / "mixed" / "visdial_1.0_val_question_types.json"))
        row[model] = json.loads((folder / f"{model}_metrics.json").read_text())
    row["chat"] = chat_answers(trained["vilbert"][0], folder / "mixed")
    return row


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


def print_table(rows: dict) -> None:
    """The binding rounds of val per seed, then the mean and the spread (max - min) over seeds."""
    print("binding rounds of the demo's val: MRR over the 100 options of ViLBERT, the language-only "
          "model and a random ranking; ViLBERT's pointing and deletion scores beside chance; training CPU seconds "
          "(user + system, all stages) of each model")
    print(f"{'seed':<8}" + "".join(f"{label:>10}" for label, _ in COLUMNS))
    lines = {str(seed): [value(row) for _, value in COLUMNS] for seed, row in rows.items()}
    columns = list(zip(*lines.values()))
    lines["mean"] = [sum(column) / len(column) for column in columns]
    lines["spread"] = [max(column) - min(column) for column in columns]
    for label, values in lines.items():
        print(f"{label:<8}" + "".join(f"{value:>10.0f}" if index >= 8 else f"{value:>10.3f}"
                                      for index, value in enumerate(values)))


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a new (or empty) folder for the data, runs and results")
    parser.add_argument("--seeds", type=bounded(int, 0), nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE} dialogs a count and iterations a stage")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < len(args.seeds):
        raise UserError(f"--seeds must be distinct, got {' '.join(map(str, args.seeds))}")
    out = resolved(args.out, "--out")
    check_outputs([Output("--out", out, is_folder=True, what="the study folder")], {})
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: --out is not empty; give a new folder")
    rows = {}
    for seed in args.seeds:
        rows[seed] = study_seed(seed, out / f"seed{seed}", args.smoke)
        print(f"seed {seed} chat: " + "; ".join(f"{question} -> {answer} ({'right' if answer == truth else 'wrong'})"
                                                 for question, answer, truth in rows[seed]["chat"]), flush=True)
    print_table(rows)
    write_text(out / "binding_study.json", json.dumps({"arguments": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    run_cli(main)
