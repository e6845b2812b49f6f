"""Loading cannot run code, end to end through the command lines.

Hostile files carry a `__reduce__` payload that creates a marker file when unpickled the unsafe
way (a control test shows that it does). Checkpoints go through `evaluate.py -start_path`,
`train.py -start_path` and `train.py -continue`; an LMDB feature record goes through the reader
and `evaluate.py`. Each command line's `main` runs under `run_cli` in this process, exactly as
the command runs it (tests/test_bad_input.py holds the subprocess contract of every command
line); each is refused with one error line naming the file, and the marker never appears. (Unit
tests of the loaders themselves are in test_checkpointing.py and test_feature_store.py.)
"""
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import lmdb
import pytest
import torch

import evaluate
import train
from dataloader.feature_store import open_feature_store
from tests.train_helpers import fixture_flags
from utils.errors import UserError, run_cli



class CreatesFile:
    """Unpickling this calls open(marker, "w"): it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def hostile_checkpoint(path: Path, marker: Path, zip_format: bool = True) -> Path:
    """A checkpoint whose model weights are a payload (torch.save's zip format or the legacy one)."""
    torch.save({"model_state_dict": CreatesFile(marker), "iter_id": 3}, path,
               _use_new_zipfile_serialization=zip_format)
    return path


def hostile_feature_store(path: Path, image_ids: list[int], marker: Path) -> Path:
    """An LMDB feature store in the released layout whose records are payloads."""
    keys = [str(image_id).encode() for image_id in image_ids]
    environment = lmdb.open(str(path), map_size=1 << 24)
    with environment.begin(write=True) as transaction:
        transaction.put(b"keys", pickle.dumps(keys, protocol=3))
        for key in keys:
            transaction.put(key, pickle.dumps(CreatesFile(marker), protocol=3))
    environment.close()
    return path


def val_image_ids(golden: Path) -> list[int]:
    content = json.loads((golden / "visdial_processed" / "val_processed.json").read_text())
    return [dialog["image_id"] for dialog in content["data"]["dialogs"]]


def eval_argv(golden: Path, out: Path, *extra: str) -> list[str]:
    processed = golden / "visdial_processed"
    return ["evaluate.py", "-split", "val",
            "-visdial_processed_val", str(processed / "val_processed.json"),
            "-visdial_processed_val_dense_annotations", str(processed / "val_dense_annotations_processed.json"),
            "-visdial_image_feats", str(golden / "visdial_img_feat.lmdb"),
            "-vocab", str(golden / "bert-base-uncased-vocab.txt"), "-model_config", str(golden / "model_config.json"),
            "-max_seq_len", "108", "-num_workers", "0", "-save_path", str(out), *extra]


@dataclass(frozen=True)
class Attack:
    """A CLI run on a hostile file: argv, the file, and the marker its payload would create."""
    argv: list
    hostile_file: Path
    marker: Path
    out: Path


def build_attacks(golden: Path, root: Path) -> dict[str, Attack]:
    attacks = {}

    def folder(name):
        path = root / name
        path.mkdir(parents=True)
        return path, path / "marker", path / "out"

    place, marker, out = folder("evaluate_start_path")
    checkpoint = hostile_checkpoint(place / "evil.ckpt", marker)
    attacks["evaluate_start_path"] = Attack(eval_argv(golden, out, "-start_path", str(checkpoint)), checkpoint,
                                            marker, out)

    place, marker, out = folder("evaluate_start_path_legacy_format")
    checkpoint = hostile_checkpoint(place / "evil.pth", marker, zip_format=False)
    attacks["evaluate_start_path_legacy_format"] = Attack(
        eval_argv(golden, out, "-start_path", str(checkpoint)), checkpoint, marker, out)

    place, marker, out = folder("train_start_path")
    checkpoint = hostile_checkpoint(place / "evil.ckpt", marker)
    attacks["train_start_path"] = Attack(
        ["train.py", *fixture_flags(golden, out, "run", "-val_every", "-1", "-start_path", str(checkpoint))],
        checkpoint, marker, out)

    place, marker, out = folder("train_continue")
    (out / "run").mkdir(parents=True)
    checkpoint = hostile_checkpoint(out / "run" / "visdial_dialog_encoder_3.ckpt", marker)
    attacks["train_continue"] = Attack(
        ["train.py", *fixture_flags(golden, out, "run", "-val_every", "-1", "-continue")], checkpoint, marker, out)

    place, marker, out = folder("evaluate_feature_record")
    store = hostile_feature_store(place / "features.lmdb", val_image_ids(golden), marker)
    argv = eval_argv(golden, out)
    argv[argv.index("-visdial_image_feats") + 1] = str(store)
    attacks["evaluate_feature_record"] = Attack(argv, store, marker, out)
    return attacks


MAINS = {"train.py": train.main, "evaluate.py": evaluate.main}


def run_attack(attack: Attack, capsys) -> tuple[int, str]:
    """(exit code, stderr) of the attack's command line, run in this process under `run_cli`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: MAINS[attack.argv[0]](attack.argv[1:]))
    return exit_info.value.code, capsys.readouterr().err


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """Control: the payload is real, so a marker that stays absent means the loader refused it."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(CreatesFile(marker), protocol=3)).close()
    assert marker.exists()
    marker.unlink()
    checkpoint = hostile_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(checkpoint, weights_only=False)["model_state_dict"].close()
    assert marker.exists()


@pytest.mark.parametrize("name, refusal", [
    ("evaluate_start_path", "refused to load: the checkpoint needs pickled code"),
    ("evaluate_start_path_legacy_format", "refused to load: the checkpoint needs pickled code"),
    ("train_start_path", "refused to load: the checkpoint needs pickled code"),
    ("train_continue", "refused to load: the checkpoint needs pickled code"),
    ("evaluate_feature_record", "only plain data"),
])
@pytest.mark.usefixtures("one_torch_thread")
def test_hostile_file_is_refused_and_its_payload_never_runs(golden_dir, tmp_path, capsys, name, refusal):
    attack = build_attacks(golden_dir, tmp_path)[name]
    returncode, stderr = run_attack(attack, capsys)
    assert not attack.marker.exists(), "the payload ran"
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and str(attack.hostile_file) in last and refusal in last, last
    assert not [path for path in attack.out.rglob("*") if path.is_file() and path != attack.hostile_file]


def test_feature_reader_refuses_a_payload_record_and_a_payload_key_list(golden_dir, tmp_path):
    marker = tmp_path / "marker"
    image_ids = val_image_ids(golden_dir)
    store = open_feature_store(hostile_feature_store(tmp_path / "records.lmdb", image_ids, marker))
    assert image_ids[0] in store
    with pytest.raises(UserError, match=f"image {image_ids[0]}.*record refers to io.open; only plain data"):
        store[image_ids[0]]
    assert not marker.exists()

    environment = lmdb.open(str(tmp_path / "keys.lmdb"), map_size=1 << 20)
    with environment.begin(write=True) as transaction:
        transaction.put(b"keys", pickle.dumps(CreatesFile(marker), protocol=3))
    environment.close()
    with pytest.raises(UserError, match="only plain data"):
        open_feature_store(tmp_path / "keys.lmdb").image_ids()
    assert not marker.exists()
