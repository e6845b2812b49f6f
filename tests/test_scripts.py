"""Every script at the door: found by walking the tree, so a new script is held to the same contract.

* `-h` prints the script's own usage and exits 0 doing nothing (every Python command line and every
  shell script of scripts/, which print their header comment).
* Every numeric flag of a command line refuses, naming itself, a value it cannot mean (-1, 0, nan,
  inf) before any file is read or written; the values a flag takes on purpose are listed in
  MEANINGFUL, so that a new flag has to say what it takes.
"""
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils import errors
from utils.errors import UserError, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMAND_LINES = sorted(path.relative_to(REPO_ROOT).as_posix() for folder in (".", "scripts", "preprocessing")
                       for path in (REPO_ROOT / folder).glob("*.py") if '__name__ == "__main__"' in path.read_text())
SHELL_SCRIPTS = sorted(path.name for path in (REPO_ROOT / "scripts").glob("*.sh"))
MEANINGFUL = {  # command line -> flag -> the values of (-1, 0) it takes
    "train.py": {"-num_train_samples": {"0"}, "-num_val_samples": {"0"}, "-num_workers": {"0"},
                 "-max_iterations": {"0"}, "-lr": {"0"}, "-image_lr": {"0"}, "-min_lr": {"0"},
                 "-warmup_steps": {"0"}, "-grad_clip": {"0"}, "-num_negative_samples": {"0"}, "-mask_prob": {"0"},
                 "-lm_loss_coeff": {"0"}, "-nsp_loss_coeff": {"0"}, "-img_loss_coeff": {"0"}, "-seed": {"0"},
                 "-val_every": {"-1", "0"}, "-enable_visdom": {"-1", "0"}, "-tensorboard": {"-1", "0"}},
    "evaluate.py": {"-num_train_samples": {"0"}, "-num_val_samples": {"0"}, "-num_workers": {"0"},
                    "-eval_tokens_per_batch": {"0"}},
    "scripts/chat.py": {"-eval_tokens_per_batch": {"0"}, "-image_id": {"-1", "0"}, "-seed": {"-1", "0"}},
    "preprocessing/make_toy_data.py": {"-seed": {"0"}, "-whole_image_dialogs": {"0"}, "-binding_dialogs": {"0"},
                                       "-dense_train_fraction": {"0"}, "-image_signal": {"0"}, "-noise": {"0"}},
    "scripts/benchmark.py": {"--workers": {"0"}},
    "scripts/binding_study.py": {"--seeds": {"0"}},
}
MEANINGFUL["scripts/benchmark_precision.py"] = MEANINGFUL["evaluate.py"]  # it takes evaluate.py's flags


def module_of(script: str):
    return importlib.import_module(script[:-len(".py")].replace("/", "."))


# ---- -h ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", COMMAND_LINES)
def test_every_command_line_answers_h_with_its_usage(script, tmp_path, single_thread_env):
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), "-h"], cwd=tmp_path, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=120,
                            env={**single_thread_env, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {Path(script).name}"), result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_shell_script_answers_h_with_its_header(script, flag, tmp_path):
    """In a copy of scripts/ (a script works in its checkout): nothing written there or in the
    working folder, the header comment printed."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "scripts", checkout / "scripts", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    before = sorted(checkout.rglob("*"))
    (tmp_path / "work").mkdir()
    result = subprocess.run(["bash", str(checkout / "scripts" / script), flag], cwd=tmp_path / "work",
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    header = [line[2:] for line in (REPO_ROOT / "scripts" / script).read_text().splitlines()[1:3]]
    assert result.returncode == 0 and result.stdout.splitlines()[:2] == header, result.stderr
    assert f"scripts/{script}" in result.stdout and sorted(checkout.rglob("*")) == before
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("script, arguments, line", [
    ("gpu_check.sh", ["-x"], "error: -x: unknown flag (-h prints the usage of gpu_check.sh)"),
    ("gpu_check.sh", [], "error: gpu_check.sh takes 1 argument(s), got 0 (-h prints its usage)"),
    ("download_preprocessed.sh", ["now"], "error: download_preprocessed.sh takes 0 argument(s), got 1 "
                                          "(-h prints its usage)"),
    ("demo.sh", ["--fast"], "error: --fast: unknown flag (-h prints the usage of demo.sh)"),
])
def test_a_shell_script_refuses_arguments_it_does_not_take(script, arguments, line, tmp_path):
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), *arguments], cwd=tmp_path,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2 and result.stderr == line + "\n" and list(tmp_path.iterdir()) == []


# ---- numeric flags ----------------------------------------------------------------------------

class _Parsed(Exception):
    pass


def numeric_flags(script: str, monkeypatch) -> list[tuple[str, type]]:
    """(flag, int or float) of every numeric flag of the script's parser, as its main builds it."""
    parsers = []

    def capture(parser, *args, **kwargs):
        parsers.append(parser)
        raise _Parsed

    with monkeypatch.context() as patched:
        patched.setattr(errors.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Parsed):
            module_of(script).main([])
    return [(action.option_strings[0], action.type) for action in parsers[0]._actions  # bounded types keep the name
            if action.option_strings and getattr(action.type, "__name__", None) in ("int", "float")]


CASES = [(script, flag, value) for script in COMMAND_LINES
         for flag, kind in numeric_flags(script, pytest.MonkeyPatch())
         for value in ("-1", "0", *(("nan", "inf") if kind.__name__ == "float" else ()))]


@pytest.mark.parametrize("script, flag, value", CASES, ids=lambda value: str(value))
def test_every_numeric_flag_refuses_what_it_cannot_mean_at_the_door(script, flag, value, tmp_path, monkeypatch,
                                                                     capsys):
    """Run as the command line in an empty folder, its inputs absent and its outputs unwritable: a
    value it cannot mean is an error line naming the flag; one it takes reaches a file (and fails
    there), never a traceback; nothing is written."""
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.chdir(tmp_path)
    required = {"scripts/validate_submission.py": ["absent.json", "-split", "val"],
                "preprocessing/question_types_by_word.py": ["-visdial_json", "absent.json", "-out", "out.json"],
                "preprocessing/convert_features.py": ["-input", "absent.lmdb", "-output", "out.h5"],
                "scripts/ensemble.py": ["-scores", "absent.pt"],
                "scripts/benchmark.py": ["--model_config", "absent.json"],
                "preprocessing/make_toy_data.py": ["-out", str(blocked / "toy")],
                "scripts/binding_study.py": ["--out", str(blocked / "study")]}.get(script, [])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: module_of(script).main([flag, value, *required]))
    errors_printed = capsys.readouterr().err
    names_flag = re.search(rf"^error: .*(?<![\w-]){re.escape(flag)}(?!\w)", errors_printed, re.M) is not None
    takes = value in MEANINGFUL.get(script, {}).get(flag, set())
    assert exit_info.value.code == 2 and names_flag != takes, errors_printed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]
