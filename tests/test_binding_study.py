"""scripts/binding_study.py end to end on its --smoke sizes: the table is the metrics evaluate.py
wrote, the chat asks the binding questions of the first val dialog; a used --out is refused before any work."""
import json
import re
import subprocess
import sys

import pytest


def study(repo_root, environment, *argv):
    return subprocess.run([sys.executable, "scripts/binding_study.py", *argv], cwd=repo_root, capture_output=True,
                          text=True, timeout=900, env={**environment, "PYTHONPATH": str(repo_root)})


def test_smoke_run_prints_the_metrics_it_measured(repo_root, tmp_path, single_thread_env):
    result = study(repo_root, single_thread_env, "--out", str(tmp_path / "study"), "--seeds", "3", "--smoke")
    assert result.returncode == 0, result.stderr[-2000:]
    folder = tmp_path / "study" / "seed3"
    vilbert, language_only = (json.loads((folder / f"{model}_metrics.json").read_text())
                              for model in ("vilbert", "language_only"))
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("3 "))
    expected = [vilbert["mrr_type_binding"], language_only["mrr_type_binding"], vilbert["random_mrr_type_binding"],
                vilbert["mrr_type_binding"] / language_only["mrr_type_binding"], vilbert["pointing_binding"],
                vilbert["pointing_chance_binding"], vilbert["deletion_binding"], vilbert["deletion_chance_binding"]]
    assert [float(value) for value in row[1:9]] == pytest.approx(expected, abs=5e-4)
    assert min(float(value) for value in row[9:]) > 0                           # CPU seconds of each model
    val = json.loads((folder / "mixed" / "visdial_1.0_val.json").read_text())["data"]
    types = json.loads((folder / "mixed" / "visdial_1.0_val_question_types.json").read_text())["rounds"]
    first = val["dialogs"][0]
    asked = [val["questions"][first["dialog"][entry["round_id"] - 1]["question"]] for entry in types
             if entry["image_id"] == first["image_id"] and entry["question_type"] == "binding"]
    chat = re.search(r"^seed 3 chat: (.*)$", result.stdout, re.M)[1].split("; ")
    assert [line.split(" -> ")[0] for line in chat] == asked and len(asked) == 2
    saved = json.loads((tmp_path / "study" / "binding_study.json").read_text())["rows"]["3"]
    assert [question for question, _, _ in saved["chat"]] == asked


def test_a_used_out_folder_is_refused_before_any_work(repo_root, tmp_path, single_thread_env):
    (tmp_path / "notes.txt").write_text("mine")
    result = study(repo_root, single_thread_env, "--out", str(tmp_path), "--smoke")
    assert result.returncode == 2 and result.stderr == f"error: {tmp_path}: --out is not empty; give a new folder\n"
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
