"""Faults: signals, kills during saves, unwritable or full disks (training, converters, the toy generator),
what libraries raise (the last net of run_cli), a closed output pipe, nan, bad records."""
import contextlib
import errno
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest
import torch

import train
from dataloader.datasets import VisdialDataset
from preprocessing import make_toy_data
from tests.train_helpers import assert_bit_identical, final_weights, fixture_flags, read_metrics
from utils.errors import UserError, run_cli
from utils.inputs import read_checkpoint
from utils.outputs import TEMPORARY_MARK, atomic_write
from utils.training import trainer
from utils.training.checkpoints import CheckpointManager, save_checkpoint
from utils.training.loggers import MetricsFile


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sigterm_saves_and_resume_matches_uninterrupted_run(golden_dir, repo_root, tmp_path,
                                                            single_thread_env):
    common = ("-batch_multiply", "2", "-val_every", "-1", "-max_iterations", "9")
    train.main(fixture_flags(golden_dir, tmp_path, "whole", *common))

    flags = fixture_flags(golden_dir, tmp_path, "killed", *common)
    process = subprocess.Popen([sys.executable, "train.py", *flags], cwd=repo_root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=single_thread_env)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and metrics.read_text().count('"train"') >= 2:
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stdout and "-continue" in stdout and "Traceback" not in stderr
    stopped_at = max(iteration for iteration, _ in CheckpointManager(tmp_path / "killed").checkpoints())
    assert 2 <= stopped_at < 9

    train.main(flags + ["-continue"])
    assert_bit_identical(final_weights(tmp_path / "killed", 9), final_weights(tmp_path / "whole", 9))
    iterations = [r["iteration"] for r in read_metrics(tmp_path / "killed") if r["event"] == "train"]
    assert iterations == list(range(9))


SAVE_LOOP = """
import sys, torch
from utils.training.checkpoints import CheckpointManager, save_checkpoint
folder, start = CheckpointManager(sys.argv[1]), int(sys.argv[2])
content = {"weights": torch.randn(300_000), "iter_id": 0}
for iteration in range(start, start + 10_000):
    content["iter_id"] = iteration
    save_checkpoint(folder.checkpoint(iteration), content)
    folder.prune(keep=3)
    print(iteration, flush=True)
"""


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(repo_root, tmp_path):
    generator = random.Random(0)
    start = 0
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path), str(start)],
                                   cwd=repo_root, stdout=subprocess.PIPE, text=True)
        for _ in range(generator.randint(2, 6)):
            process.stdout.readline()
        time.sleep(generator.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        checkpoints = CheckpointManager(tmp_path).checkpoints()
        assert 1 <= len(checkpoints) <= 4
        for iteration, path in checkpoints:
            assert read_checkpoint(path)["iter_id"] == iteration
        CheckpointManager(tmp_path).remove_stale_temporaries()
        assert [p.name for p in tmp_path.iterdir() if TEMPORARY_MARK in p.name] == []
        start = checkpoints[-1][0] + 1


@pytest.mark.parametrize("where", ["file_in_the_way", "sysfs"])
def test_unwritable_save_folder_is_an_error_before_training(golden_dir, tmp_path, where):
    if where == "file_in_the_way":
        save_path = tmp_path / "not_a_folder"
        save_path.write_text("a file where the run folder should go")
    else:
        save_path = Path("/sys/visdial_runs")   # not writable even by root (tests may run as root)
    with pytest.raises(UserError, match="cannot create the run folder") as error:
        train.main(fixture_flags(golden_dir, save_path, "run", "-max_iterations", "1"))
    assert str(save_path) in str(error.value)
    assert not (tmp_path / "run").exists()


def test_full_disk_on_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "visdial_dialog_encoder_1.ckpt"
    save_checkpoint(path, {"iter_id": 1})

    def fill_the_disk(file):
        file.write(b"partial bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match="No space left on device") as error:
        atomic_write(path, fill_the_disk)
    assert str(path) in str(error.value) and "previous file" in str(error.value)
    assert read_checkpoint(path) == {"iter_id": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_too_little_free_space_is_detected_early(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: type("usage", (), {"free": 10 * 2**20})())
    with pytest.raises(UserError, match="only 10 MiB free"):
        CheckpointManager(tmp_path).check_space(torch.nn.Linear(4096, 4096))


def poison_iteration(monkeypatch, poisoned_iteration: int):
    """Make the image features of one iteration nan, so its loss and gradients are nan."""
    calls = {"count": 0}
    real_step = trainer.base_step

    def step(model, batch, settings, sync_gradients=True):
        if calls["count"] == poisoned_iteration:
            batch = {**batch, "image_feat": torch.full_like(batch["image_feat"], float("nan"))}
        calls["count"] += 1
        return real_step(model, batch, settings, sync_gradients)

    monkeypatch.setattr(trainer, "base_step", step)


def test_nan_loss_stops_before_the_weights_change(golden_dir, tmp_path, monkeypatch):
    poison_iteration(monkeypatch, 4)
    with pytest.raises(UserError) as error:
        train.main(fixture_flags(golden_dir, tmp_path, "nan", "-max_iterations", "6", "-val_every", "-1"))
    message = str(error.value)
    assert "non-finite loss" in message and "iteration 4" in message and "images [" in message
    assert f"last good checkpoint: {tmp_path / 'nan' / 'visdial_dialog_encoder_3.ckpt'}" in message
    weights = final_weights(tmp_path / "nan", 3)
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_nan_policy_skip_skips_the_step_and_goes_on(golden_dir, tmp_path, monkeypatch):
    poison_iteration(monkeypatch, 2)
    train.main(fixture_flags(golden_dir, tmp_path, "skip", "-max_iterations", "4", "-val_every", "-1",
                             "-nan_policy", "skip"))
    records = read_metrics(tmp_path / "skip")
    assert [r["iteration"] for r in records if r["event"] == "skipped_step"] == [2]
    assert [r["skipped_steps"] for r in records if r["event"] == "train"] == [0, 0, 1, 1]
    weights = final_weights(tmp_path / "skip", 4)
    assert all(torch.isfinite(value).all() for value in weights.values())


def break_record(monkeypatch, bad_index: int, how):
    real_getitem = VisdialDataset.__getitem__

    def getitem(self, index):
        if self.split == "train" and index == bad_index:
            how(self, index)
        return real_getitem(self, index)

    monkeypatch.setattr(VisdialDataset, "__getitem__", getitem)


def corrupt(self, index):
    raise UserError(f"{self.features.path}: record of image {self.dialogs[index]['image_id']} is corrupt")


def test_bad_record_stops_with_its_image_and_file(golden_dir, tmp_path, monkeypatch):
    break_record(monkeypatch, 1, corrupt)
    with pytest.raises(UserError, match=r"visdial_img_feat.lmdb: record of image \d+ is corrupt") as error:
        train.main(fixture_flags(golden_dir, tmp_path, "bad", "-max_iterations", "3", "-val_every", "-1"))
    assert "-skip_bad_records" in str(error.value) and "train_processed.json" in str(error.value)


def test_skip_bad_records_counts_them_in_metrics(golden_dir, tmp_path, monkeypatch):
    break_record(monkeypatch, 1, corrupt)
    train.main(fixture_flags(golden_dir, tmp_path, "skipbad", "-num_epochs", "2", "-val_every", "-1",
                             "-skip_bad_records"))
    records = read_metrics(tmp_path / "skipbad")
    bad = [r for r in records if r["event"] == "bad_record"]
    assert len(bad) == 2 and "is corrupt" in bad[0]["message"]
    train_records = [r for r in records if r["event"] == "train"]
    assert len(train_records) == 4 and train_records[-1]["skipped_records"] == 2


def test_a_bug_in_the_dataset_is_not_a_bad_record(golden_dir, tmp_path, monkeypatch):
    """A programming error (here a KeyError) surfaces with its type and traceback, even with
    -skip_bad_records: only unreadable records are skipped."""
    break_record(monkeypatch, 1, lambda self, index: {}["missing key"])
    with pytest.raises(KeyError, match="missing key"):
        train.main(fixture_flags(golden_dir, tmp_path, "bug", "-num_epochs", "2", "-val_every", "-1",
                                 "-skip_bad_records"))
    assert not (tmp_path / "bug" / "visdial_dialog_encoder_6.ckpt").exists()


def test_skipping_stops_when_more_than_half_of_the_records_are_unreadable(golden_dir, tmp_path, monkeypatch):
    for index in (0, 2):    # 2 of the 3 train dialogs
        break_record(monkeypatch, index, corrupt)
    with pytest.raises(UserError, match=r"(1[1-9]|2\d) of the (1[6-9]|2\d) train records read so far are "
                                        r"unreadable \(more than 50%\), the last: .* is corrupt") as error:
        train.main(fixture_flags(golden_dir, tmp_path, "broken", "-num_epochs", "20", "-val_every", "-1",
                                 "-skip_bad_records"))
    assert "\n" not in str(error.value)
    records = read_metrics(tmp_path / "broken")
    skipped = [r for r in records if r["event"] == "bad_record"]
    assert 11 <= len(skipped) <= 20 and len([r for r in records if r["event"] == "train"]) < 10


def test_dead_dataloader_worker_is_one_clear_error(golden_dir, tmp_path, monkeypatch):
    break_record(monkeypatch, 0, lambda self, index: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(UserError, match="a DataLoader worker died loading epoch 0") as error:
        train.main(fixture_flags(golden_dir, tmp_path, "dead", "-max_iterations", "3", "-val_every", "-1",
                                 "-num_workers", "1"))
    assert "image " in str(error.value) and "-num_workers 0" in str(error.value)


# ---- a failing disk and what libraries raise: one line, exit code 2, nothing partial -----------------------
# A real full disk is a small tmpfs mounted inside the test folder (mounting needs root: without it those
# tests are skipped and say why); the in-process variants replace a file's write with one that fails.

def listing(folder: Path) -> dict:
    """Every path under `folder` with its size and modification time (a change to any shows)."""
    return {str(path.relative_to(folder)): (path.is_dir(), path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of `size` (mount's notation: 1536k, 12m) mounted at `folder`: a write beyond it fails
    with ENOSPC."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """A 1.5 MiB disk at tmp_path / "disk"."""
    with small_disk(tmp_path / "disk", "1536k") as disk:
        yield disk


def run_command(repo_root, env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=repo_root, capture_output=True, text=True, env=env,
                          timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, *named: str) -> None:
    """Exit code 2 (a crash at exit would be -11), one `error:` line naming each of `named`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(name in lines[0] for name in named), lines[0]


@pytest.mark.parametrize("name", ["features.h5", "features.lmdb"])
def test_full_disk_while_converting_keeps_the_previous_store(name, full_disk, golden_dir, repo_root,
                                                             single_thread_env):
    """HDF5 crashed the process at exit after a failed write (exit -11); LMDB raised lmdb.Error."""
    previous = full_disk / name
    if name.endswith(".h5"):
        previous.write_bytes(b"the previous store")
    else:
        previous.mkdir()
        (previous / "data.mdb").write_bytes(b"the previous store")
    before, inputs = listing(full_disk), listing(golden_dir / "visdial_img_feat.lmdb")
    result = run_command(repo_root, single_thread_env, "preprocessing/convert_features.py", "-quiet",
                         "-input", str(golden_dir / "visdial_img_feat.lmdb"), "-output", str(previous))
    assert_one_error_line(result, str(previous), "cannot write the ")
    assert "No space left on device" in result.stderr or "Input/output error" in result.stderr  # LMDB says EIO
    assert listing(full_disk) == before and listing(golden_dir / "visdial_img_feat.lmdb") == inputs


@pytest.mark.parametrize("name", ["features.h5", "features.lmdb"])
def test_a_file_size_limit_while_converting_is_one_line(name, golden_dir, repo_root, single_thread_env, tmp_path):
    """Under `ulimit -f` a write fails with EFBIG, and HDF5's truncate and flush with it (an
    AttributeError escaped HDF5's file driver)."""
    output = tmp_path / name
    result = subprocess.run(
        [sys.executable, "preprocessing/convert_features.py", "-quiet", "-input",
         str(golden_dir / "visdial_img_feat.lmdb"), "-output", str(output)], cwd=repo_root, capture_output=True,
        text=True, env=single_thread_env, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100 << 10, 100 << 10)))
    assert_one_error_line(result, str(output), "cannot write the ")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_on_a_checkpoint_keeps_the_previous_one(full_disk):
    path = full_disk / "visdial_dialog_encoder_1.ckpt"
    save_checkpoint(path, {"iter_id": 1})
    with pytest.raises(UserError, match="No space left on device") as error:   # torch.save: a RuntimeError
        save_checkpoint(path, {"iter_id": 2, "weights": torch.zeros(1 << 20)})
    assert str(path) in str(error.value) and read_checkpoint(path) == {"iter_id": 1}
    assert [item.name for item in full_disk.iterdir()] == [path.name]


def test_a_disk_that_fills_during_training_stops_it_with_one_line(golden_dir, tmp_path, capsys):
    """12 MiB: the early space check passes (one checkpoint, 9.3 MiB, fits), the second checkpoint
    does not; the first stays, and -continue can resume from it once there is space."""
    with small_disk(tmp_path / "disk", "12m") as disk:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: train.main(fixture_flags(golden_dir, disk, "run", "-max_iterations", "6",
                                                     "-val_every", "-1")))
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2
        assert error == (f"error: {disk / 'run' / 'visdial_dialog_encoder_6.ckpt'}: cannot write (No space left "
                         "on device); the previous file, if any, is kept")
        assert read_checkpoint(disk / "run" / "visdial_dialog_encoder_3.ckpt")["iter_id"] == 3
        assert [path.name for path in (disk / "run").iterdir() if TEMPORARY_MARK in path.name] == []


def test_torch_save_failing_on_a_full_disk_is_one_line(tmp_path):
    """Without a small disk: torch.save turns the OSError of its file's write into a RuntimeError."""
    class FillsUp:
        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def flush(self):
            self.file.flush()

    path = tmp_path / "visdial_dialog_encoder_2.ckpt"
    save_checkpoint(path, {"iter_id": 1})
    with pytest.raises(UserError, match="No space left on device"):
        atomic_write(path, lambda file: torch.save({"weights": torch.zeros(10_000)}, FillsUp(file)))
    assert read_checkpoint(path) == {"iter_id": 1} and [item.name for item in tmp_path.iterdir()] == [path.name]


def test_a_bug_in_a_writer_keeps_its_traceback(tmp_path):
    with pytest.raises(KeyError, match="a bug"):
        atomic_write(tmp_path / "file", lambda file: {}["a bug"])
    assert list(tmp_path.iterdir()) == []


TOY_FLAGS = ("-train_dialogs", "4", "-val_dialogs", "2", "-test_dialogs", "2")


def test_full_disk_while_making_toy_data_keeps_the_previous_set(full_disk, repo_root, single_thread_env):
    out = full_disk / "toy"
    assert run_command(repo_root, single_thread_env, "preprocessing/make_toy_data.py", "-out", str(out),
                       *TOY_FLAGS).returncode == 0
    before = listing(full_disk)
    result = run_command(repo_root, single_thread_env, "preprocessing/make_toy_data.py", "-out", str(out),
                         "-seed", "1", *TOY_FLAGS)
    assert_one_error_line(result, str(out))
    assert TEMPORARY_MARK not in result.stderr
    assert listing(full_disk) == before


def test_a_failure_halfway_through_the_toy_data_keeps_the_previous_set(tmp_path, monkeypatch, capsys):
    """The features fail after the dialogs are written (as a bad -seed did): the previous set stays whole."""
    out = tmp_path / "toy"
    make_toy_data.main(["-out", str(out), *TOY_FLAGS])
    before = listing(tmp_path)
    real_records = make_toy_data.image_records

    def records_then_a_full_disk(*args, **kwargs):
        records = real_records(*args, **kwargs)
        yield next(records)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(make_toy_data, "image_records", records_then_a_full_disk)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: make_toy_data.main(["-out", str(out), "-seed", "1", *TOY_FLAGS]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {out / 'visdial_img_feat.lmdb'}: ") and "No space left" in lines[0]
    assert listing(tmp_path) == before


@pytest.mark.parametrize("error, line", [
    (lmdb.CorruptedError("mdb_get: MDB_CORRUPTED: Located page was wrong type"),
     "error: LMDB store: CorruptedError: mdb_get: MDB_CORRUPTED: Located page was wrong type"),
    (OSError(errno.ELOOP, os.strerror(errno.ELOOP), "/data/a"), "error: /data/a: Too many levels of symbolic links"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "error: No space left on device"),
])
def test_run_cli_is_the_last_net_for_library_errors(error, line, capsys):
    def main():
        raise error
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines() == [line]


def test_run_cli_lets_a_bug_through_with_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)


CLOSED_PIPE = """
import sys
from utils.errors import run_cli
def main():
    for number in range(100_000):
        print(f"line {number}: " + "x" * 60)
run_cli(main)
"""


def test_a_closed_output_pipe_ends_quietly(repo_root, single_thread_env):
    """`... | head -1`: no traceback, no "Exception ignored" at exit; exit code 141 as a Unix tool."""
    result = subprocess.run(["bash", "-c", f'"{sys.executable}" -c "$SCRIPT" | head -1; '
                                           'echo "exit ${PIPESTATUS[0]}" >&2'],
                            cwd=repo_root, capture_output=True, text=True, timeout=120,
                            env={**single_thread_env, "SCRIPT": CLOSED_PIPE})
    assert result.stdout == "line 0: " + "x" * 60 + "\n"
    assert result.stderr == "exit 141\n", result.stderr


@pytest.mark.parametrize("command", [["-c", CLOSED_PIPE], ["scripts/validate_submission.py", "PREDICTIONS", "-split",
                                                                "test"]], ids=["while printing", "at the exit's flush"])
def test_a_full_standard_output_is_one_line_naming_it(command, golden_dir, repo_root, single_thread_env):
    """`... > /dev/full`: the line names <stdout>, not only the reason; no "Exception ignored" at exit."""
    command = [str(golden_dir / "test_predictions.json") if part == "PREDICTIONS" else part for part in command]
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, *command], cwd=repo_root, stdout=full, stderr=subprocess.PIPE,
                                text=True, env=single_thread_env, timeout=120)
    assert result.returncode == 2 and result.stderr == "error: <stdout>: No space left on device\n"


def test_a_full_disk_cuts_no_metrics_line_in_half(full_disk):
    """The training log keeps whole lines: a line that does not fit is cut off again, one line names the file."""
    metrics = MetricsFile(full_disk / "metrics.jsonl")
    metrics.write({"event": "train", "iteration": 0})
    filler = full_disk / "filler"
    with open(filler, "wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(b"x" * 4096)
    os.truncate(filler, filler.stat().st_size - 16384)   # 16 KiB free: part of the next line fits
    with pytest.raises(UserError, match="cannot append to the metrics log .No space left on device.") as error:
        metrics.write({"event": "val", "note": "x" * 100_000})
    assert str(full_disk / "metrics.jsonl") in str(error.value)
    metrics.close()
    assert (full_disk / "metrics.jsonl").read_text() == '{"event": "train", "iteration": 0}\n'
