"""Hostile variants of the golden fixture data, for the validation tests (tests/test_validation.py).

Each builder copies a golden file (../shared/golden is never edited) into a test folder and
corrupts one thing, writing the bytes raw: the project's own writers would refuse most of these
inputs, which is the point. Builders return the path of the hostile file (or folder).
"""
import copy
import functools
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import h5py
import lmdb
import numpy as np

from dataloader.feature_store import restricted_loads

PROCESSED = "visdial_processed"


# ---------------------------------------------------------------- files of every kind

def huge_sparse_file(folder: Path, name: str, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (its length set, nothing written)."""
    path = folder / name
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def fifo(folder: Path, name: str) -> Path:
    """A named pipe with no writer: opening it for reading would block forever."""
    path = folder / name
    os.mkfifo(path)
    return path


def written(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def deeply_nested_json(folder: Path, name: str, depth: int = 100_000) -> Path:
    """Deeper than Python's parsers (json, YAML) can follow with its default recursion limit."""
    return written(folder / name, b'{"data": ' + b"[" * depth + b"]" * depth + b"}")


# ---------------------------------------------------------------- VisDial json

def golden_json(golden: Path, name: str):
    return json.loads((golden / PROCESSED / name).read_text())


HUGE = "__a number too large for a float__"
"""Written as the json number 1e400, which parses as inf (json.dumps would write `Infinity`)."""


def edited_json(golden: Path, name: str, folder: Path, edit: Callable[[object], None]) -> Path:
    """A copy of the processed golden file `name` with `edit(content)` applied, written raw (a
    lone surrogate stays the escape json.dumps writes; HUGE becomes 1e400)."""
    content = golden_json(golden, name)
    edit(content)
    return written(folder / name, json.dumps(content).replace(f'"{HUGE}"', "1e400").encode())


def set_option(dialog: int, round_index: int, position: int, value):
    def edit(content):
        content["data"]["dialogs"][dialog]["dialog"][round_index]["answer_options"][position] = value
    return edit


def set_dialog_field(dialog: int, field: str, value):
    def edit(content):
        content["data"]["dialogs"][dialog][field] = value
    return edit


def drop_rounds(dialog: int, count: int):
    def edit(content):
        del content["data"]["dialogs"][dialog]["dialog"][-count:]
    return edit


def add_rounds(dialog: int, count: int):
    def edit(content):
        rounds = content["data"]["dialogs"][dialog]["dialog"]
        rounds += rounds[:count]
    return edit


def no_dialogs(content):
    content["data"]["dialogs"] = []


def duplicate_first_dialog(content):
    dialogs = content["data"]["dialogs"]
    dialogs[1] = dict(dialogs[0])


def set_relevance(annotation: int, position: int, value):
    def edit(annotations):
        key = "gt_relevance" if "gt_relevance" in annotations[annotation] else "relevance"
        annotations[annotation][key][position] = value
    return edit


def set_annotation_field(annotation: int, field: str, value):
    def edit(annotations):
        annotations[annotation][field] = value
    return edit


# ---------------------------------------------------------------- feature stores

def golden_records(golden: Path, count: int = 2) -> list[dict]:
    """The first `count` raw records of the golden LMDB (dicts of base64 bytes, as stored; a fresh
    copy each call, free to corrupt)."""
    return copy.deepcopy(_stored_golden_records(golden, count))


@functools.lru_cache(maxsize=None)
def _stored_golden_records(golden: Path, count: int) -> list[dict]:
    # read from a copy: py-lmdb refuses a second open of an environment in one process, and the
    # project's readers may hold the golden store open in this test process already
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(golden / "visdial_img_feat.lmdb" / "data.mdb", folder)
        environment = lmdb.open(folder, readonly=True, lock=False)
        with environment.begin() as transaction:
            keys = restricted_loads(transaction.get(b"keys"), "keys")[:count]
            records = [restricted_loads(transaction.get(key), str(key)) for key in keys]
        environment.close()
    return records


def decoded(record: dict) -> dict:
    """A raw LMDB record with its arrays decoded (writable float32 copies)."""
    import base64

    n = record["num_boxes"]
    shapes = {"features": (n, -1), "boxes": (n, 4), "cls_prob": (n, -1)}
    return {**record, **{name: np.frombuffer(base64.b64decode(record[name]), np.float32).reshape(shape).copy()
                         for name, shape in shapes.items()}}


def raw_lmdb(path: Path, records: list, keys: list = None, extra: dict = None) -> Path:
    """An LMDB store holding `records` pickled as given (arrays encoded when they are arrays)."""
    import base64

    environment = lmdb.open(str(path), map_size=1 << 26)
    with environment.begin(write=True) as transaction:
        for record in records:
            stored = {key: base64.b64encode(np.ascontiguousarray(value).tobytes()) if isinstance(value, np.ndarray)
                      else value for key, value in record.items()}
            transaction.put(str(record["image_id"]).encode(), pickle.dumps(stored, protocol=3))
        listed = keys if keys is not None else [str(record["image_id"]).encode() for record in records]
        transaction.put(b"keys", pickle.dumps(listed, protocol=3))
        for key, value in (extra or {}).items():
            transaction.put(key, pickle.dumps(value, protocol=3))
    environment.close()
    return path


def raw_hdf5(path: Path, records: list, datasets: dict = None) -> Path:
    """An HDF5 store in the project's layout holding `records` (decoded), with any dataset
    replaced by `datasets[name]` as given."""
    rows = max(record["num_boxes"] for record in records)
    arrays = {"image_id": np.array([record["image_id"] for record in records], dtype=np.int64)}
    for name in ("num_boxes", "image_h", "image_w"):
        arrays[name] = np.array([record[name] for record in records], dtype=np.int32)
    for name in ("features", "boxes", "cls_prob"):
        width = records[0][name].shape[1]
        array = np.zeros((len(records), rows, width), dtype=np.float32)
        for row, record in enumerate(records):
            array[row, :record["num_boxes"]] = record[name]
        arrays[name] = array
    arrays.update(datasets or {})
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            handle[name] = array
    return path


def corrupted_record(golden: Path, change: Callable[[dict], None]) -> list:
    """The first two golden records decoded, the first changed by `change(record)` in place."""
    records = [decoded(record) for record in golden_records(golden)]
    change(records[0])
    return records


def corrupted_pages(store: Path, pages: list[int], seed: int = 0) -> Path:
    """The LMDB store folder `store` (a writable copy) with the 4 KiB pages `pages` of its data.mdb
    overwritten with random bytes: what a failing disk or a bad copy leaves."""
    data = store / "data.mdb"
    content = bytearray(data.read_bytes())
    generator = np.random.default_rng(seed)
    for page in pages:
        content[page * 4096:(page + 1) * 4096] = generator.bytes(4096)
    data.write_bytes(bytes(content))
    return store


def starter_hdf5(path: Path, records: list, groups: tuple = ()) -> Path:
    """A challenge-starter HDF5 file (image_id, features [N, B, F], boxes, image_w, image_h) holding
    `records` (decoded), each name of `groups` written as an HDF5 group instead of its dataset."""
    rows = max(record["num_boxes"] for record in records)
    arrays = {"image_id": np.array([record["image_id"] for record in records], dtype=np.int64),
              "image_w": np.array([record["image_w"] for record in records], dtype=np.int32),
              "image_h": np.array([record["image_h"] for record in records], dtype=np.int32)}
    for name in ("features", "boxes"):
        array = np.zeros((len(records), rows, records[0][name].shape[1]), dtype=np.float32)
        for row, record in enumerate(records):
            array[row, :record["num_boxes"]] = record[name]
        arrays[name] = array
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            if name in groups:
                handle.create_group(name).create_dataset("inside", data=array)
            else:
                handle[name] = array
    return path


def symlink_loop(folder: Path, name: str) -> Path:
    """Two symbolic links that point at each other; `folder / name` is one of them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.other").symlink_to(folder / name)
    (folder / name).symlink_to(folder / f"{name}.other")
    return folder / name
