"""Faults during training: signals, kills during saves, unwritable or full disks, nan, bad records."""
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from dataloader.datasets import VisdialDataset
from utils.checkpoints import read_checkpoint
from tests.train_helpers import assert_bit_identical, final_weights, fixture_flags, read_metrics
from utils.errors import UserError
from utils.files import TEMPORARY_MARK, atomic_write
from utils.training import trainer
from utils.checkpoints import save_checkpoint
from utils.training.run_folder import RunFolder


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
    stopped_at = max(iteration for iteration, _ in RunFolder(tmp_path / "killed").checkpoints())
    assert 2 <= stopped_at < 9

    train.main(flags + ["-continue"])
    assert_bit_identical(final_weights(tmp_path / "killed", 9), final_weights(tmp_path / "whole", 9))
    iterations = [r["iteration"] for r in read_metrics(tmp_path / "killed") if r["event"] == "train"]
    assert iterations == list(range(9))


SAVE_LOOP = """
import sys, torch
from utils.checkpoints import save_checkpoint
from utils.training.run_folder import RunFolder
folder, start = RunFolder(sys.argv[1]), int(sys.argv[2])
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
        checkpoints = RunFolder(tmp_path).checkpoints()
        assert 1 <= len(checkpoints) <= 4
        for iteration, path in checkpoints:
            assert read_checkpoint(path)["iter_id"] == iteration
        RunFolder(tmp_path).remove_stale_temporaries()
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
        RunFolder(tmp_path).check_space(needed_bytes=500 * 2**20)


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
