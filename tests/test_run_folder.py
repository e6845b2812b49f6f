"""A run folder belongs to one run (utils/training/checkpoints.py): the lock that names
its holder and dies with it, reuse only with -continue, nothing written before every check passed.

The command-line cases run train.py's `main` under `run_cli` in this process and assert exit code
2, one `error:` line naming the run folder and the problem, no traceback, and the save folder
exactly as before; two real train.py processes show the lock between processes and what a SIGKILL
leaves.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from tests.test_bad_input import train_argv
from tests.test_outputs import assert_one_error_line, listing
from tests.train_helpers import fixture_flags
from utils.errors import UserError, run_cli
from utils.training.checkpoints import LOCK_FILE, CheckpointManager

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLDER = f"on host {socket.gethostname()}"


def run_train(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train.main(argv))
    return exit_info.value.code, capsys.readouterr().err


def test_a_second_lock_on_a_folder_names_the_holder_and_the_released_lock_is_gone(tmp_path):
    first, second = CheckpointManager(tmp_path), CheckpointManager(tmp_path)
    first.lock()
    with pytest.raises(UserError, match=f"{tmp_path}: the run folder is in use by another training run "
                                        rf"\(pid {os.getpid()} {HOLDER}\)"):
        second.lock()
    first.unlock()
    assert not (tmp_path / LOCK_FILE).exists()
    second.lock()
    second.unlock()


def test_two_train_processes_on_one_folder_and_a_killed_holder(golden_dir, tmp_path, single_thread_env):
    """The first train.py is frozen (SIGSTOP) as soon as it holds the lock; the second fails at once
    naming it and writes nothing; after a SIGKILL of the first, its lock file stays but is free."""
    argv = [sys.executable, "train.py", *fixture_flags(golden_dir, tmp_path / "runs", "run", "-val_every", "-1")]
    first = subprocess.Popen(argv, cwd=REPO_ROOT, env=single_thread_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "runs" / "run" / LOCK_FILE
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and f"pid {first.pid} " in lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)
        before = listing(tmp_path)
        second = subprocess.run(argv, cwd=REPO_ROOT, env=single_thread_env, capture_output=True, text=True,
                                timeout=120)
        assert_one_error_line(second.returncode, second.stderr, str(tmp_path / "runs" / "run"), "in use",
                              f"pid {first.pid} {HOLDER}", "another -save_name")
        assert listing(tmp_path) == before
    finally:
        first.kill()
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL and lock.is_file()
    after_the_kill = CheckpointManager(lock.parent)
    after_the_kill.lock()
    after_the_kill.unlock()


def test_a_folder_with_checkpoints_is_reused_only_with_continue(golden_dir, tmp_path, capsys, one_torch_thread):
    run = tmp_path / "out" / "run"
    run.mkdir(parents=True)
    (run / "visdial_dialog_encoder_4.ckpt").write_bytes(b"an earlier run's checkpoint")
    before = listing(tmp_path)
    returncode, stderr = run_train(train_argv(tmp_path, golden_dir), capsys)
    assert_one_error_line(returncode, stderr, str(run), "holds the checkpoints of an earlier run", "-continue",
                          "another -save_name")
    assert listing(tmp_path) == before
    # -continue passes this rule and reads the checkpoint, which is not one: nothing written either
    returncode, stderr = run_train(train_argv(tmp_path, golden_dir, "-continue"), capsys)
    assert_one_error_line(returncode, stderr, str(run / "visdial_dialog_encoder_4.ckpt"), "not a PyTorch checkpoint")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("run_folder", ["new", "existing"])
def test_nothing_is_written_before_every_check_has_passed(run_folder, golden_dir, tmp_path, capsys, monkeypatch,
                                                          one_torch_thread):
    """The disk is too full for a checkpoint: checked after the folder is claimed and the model
    built. The failure leaves no config.yml, metrics.jsonl, tensorboard/ or lock file, and no
    folder that the run created."""
    if run_folder == "existing":
        (tmp_path / "out" / "run").mkdir(parents=True)
        (tmp_path / "out" / "run" / "notes.txt").write_text("the user's")
    else:
        (tmp_path / "out").mkdir()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type("usage", (), {"free": 2**20})())
    before = listing(tmp_path)
    returncode, stderr = run_train(train_argv(tmp_path, golden_dir, "-tensorboard", "1"), capsys)
    assert_one_error_line(returncode, stderr, str(tmp_path / "out" / "run"), "only 1 MiB free")
    assert listing(tmp_path) == before


def test_only_the_names_this_code_writes_are_periodic_checkpoints(tmp_path):
    for name in ("visdial_dialog_encoder_3.ckpt", "visdial_dialog_encoder_12.ckpt", "visdial_dialog_encoder_best.ckpt",
                 "visdial_dialog_encoder_1².ckpt", "visdial_dialog_encoder_٣.ckpt", "visdial_dialog_encoder_.ckpt"):
        (tmp_path / name).write_bytes(b"")
    folder = CheckpointManager(tmp_path)
    assert folder.checkpoints() == [(3, tmp_path / "visdial_dialog_encoder_3.ckpt"),
                                    (12, tmp_path / "visdial_dialog_encoder_12.ckpt")]
