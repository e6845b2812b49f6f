"""Importers of the image-feature formats in use (bottom-up-attention TSV, the challenge starter's
HDF5, a folder of `<image_id>.npz`, the project's own stores), recognised from the input itself:
each yields stored records one image at a time, checked by `check_record`; what a format lacks is
said once through `note`, never silently filled in. The formats: docs/data.md "Features from your
detector"; `convert_features` writes them as a store (preprocessing/convert_features.py).
"""
from __future__ import annotations

import base64
import binascii
import codecs
import itertools
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from dataloader.feature_record import (MAX_IMAGE_ID, NUM_CLASSES, RECORD_FIELDS, check_image_id, check_integer,
                                       check_record, parse_integer)
from dataloader.feature_store import (HDF5_MAGIC, HDF5_SUFFIXES, FeatureStoreReader, open_feature_store, rows_by_image,
                                      write_hdf5_feature_store, write_lmdb_feature_store)
from utils.errors import UserError
from utils.inputs import input_file

TSV_COLUMNS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
LMDB_SUFFIX = ".lmdb"
NO_CLASSES = ("no class probabilities: cls_prob is written as zeros (no targets for the masked-region loss of "
              "base training; ranking and dense fine-tuning do not use them)")

Note = Callable[[str], None]


def detect_format(path: str | os.PathLike) -> str:
    """The format of an input (a key of READERS), from its content; UserError if none fits."""
    path = Path(path)
    if path.is_dir():
        if (path / "data.mdb").exists():
            return "lmdb"
        if next(path.glob("*.npz"), None) is not None:
            return "npz"
        raise UserError(f"{path}: folder holds neither data.mdb (an LMDB store) nor .npz files (one per image)")
    with open(input_file(path, "feature file"), "rb") as handle:
        head = handle.read(1 << 16)
    if head.startswith(HDF5_MAGIC):
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                names = set(handle)
        except OSError as error:
            raise UserError(f"{path}: not a readable HDF5 file ({error})") from None
        if set(RECORD_FIELDS) <= names:
            return "hdf5"
        if "features" in names and names & {"image_id", "image_ids"}:
            return "starter_hdf5"
        raise UserError(f"{path}: HDF5 file without 'features' and 'image_id' datasets (it has: "
                        f"{', '.join(sorted(names)) or 'none'})")
    if b"\t" in head and b"\x00" not in head:
        return "tsv"
    if path.suffix in HDF5_SUFFIXES:
        raise UserError(f"{path}: not an HDF5 file")
    return "lmdb"


# ---------------------------------------------------------------- bottom-up-attention TSV

def _tsv_floats(text: bytes, rows: int, width: int | None, name: str, source: str) -> np.ndarray:
    """base64 of float32 -> [rows, width] (width None: whatever the byte count gives)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{source}: column '{name}' is not base64") from None
    found = len(raw) // (rows * 4) if len(raw) % (rows * 4) == 0 else None
    width = width or found
    if not width or found != width:
        held = f"{rows} x {found} float32" if found is not None else f"{len(raw)} bytes"
        wanted = f"{rows} x {width}" + (" (the width of the file's first image)" if name == "features" else "") \
            if width else f"a multiple of {rows} x 4 bytes"
        raise UserError(f"{source}: column '{name}' holds {held}, expected {wanted} (num_boxes {rows})")
    return np.frombuffer(raw, dtype=np.float32).reshape(rows, width)


def tsv_records(path: Path, note: Note) -> Iterator[dict]:
    """The images of a bottom-up-attention TSV: image_id, image_w, image_h, num_boxes, then boxes
    [n, 4] and features [n, F] as base64 float32, tab-separated, one image a line; no cls_prob."""
    note(f"{path}: {NO_CLASSES}")
    feature_size = None
    with open(input_file(path, "TSV feature file"), "rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.removeprefix(codecs.BOM_UTF8 if number == 1 else b"").rstrip(b"\r\n")
            if not line:
                continue
            columns = line.split(b"\t")
            source = f"{path} line {number} (image {columns[0][:40].decode(errors='replace')})"
            if len(columns) != len(TSV_COLUMNS):
                raise UserError(f"{source}: has {len(columns)} tab-separated columns, expected {len(TSV_COLUMNS)} "
                                f"({', '.join(TSV_COLUMNS)})")
            image_id = check_image_id(columns[0], "image_id", source)
            image_w, image_h, num_boxes = (check_integer(columns[index], name, source)
                                           for index, name in ((1, "image_w"), (2, "image_h"), (3, "num_boxes")))
            record = check_record({
                "image_id": image_id, "image_w": image_w, "image_h": image_h, "num_boxes": num_boxes,
                "boxes": _tsv_floats(columns[4], num_boxes, 4, "boxes", source),
                "features": _tsv_floats(columns[5], num_boxes, feature_size, "features", source),
                "cls_prob": np.zeros((num_boxes, NUM_CLASSES), dtype=np.float32)}, source, feature_size)
            feature_size = record["features"].shape[1]
            yield record


# ---------------------------------------------------------------- VisDial challenge starter HDF5

def _hdf5_dataset(handle, name: str, path: Path):
    """The dataset `name` of an open HDF5 file; UserError naming `path` when it is none."""
    import h5py

    item = handle.get(name)
    if not isinstance(item, h5py.Dataset):
        raise UserError(f"{path}: '{name}' is {'a group' if isinstance(item, h5py.Group) else 'not readable'}, "
                        "expected a dataset")
    return item


def starter_hdf5_records(path: Path, note: Note) -> Iterator[dict]:
    """The images of a challenge-starter HDF5 file (image_id or image_ids [N], features [N, B, F];
    optional boxes in pixels with image_w / image_h, num_boxes, cls_prob), row by row."""
    import h5py

    with h5py.File(path, "r") as handle:
        ids = _hdf5_dataset(handle, "image_id" if "image_id" in handle else "image_ids", path)
        features = _hdf5_dataset(handle, "features", path)
        if ids.ndim != 1 or features.ndim != 3 or features.shape[0] != ids.shape[0] or 0 in features.shape[1:]:
            raise UserError(f"{path}: 'features' has shape {list(features.shape)} and '{ids.name[1:]}' "
                            f"{list(ids.shape)}, expected [N, B, F] and [N]")
        count, rows = features.shape[:2]
        optional = {}
        for name, shape in (("boxes", (count, rows, 4)), ("cls_prob", (count, rows, NUM_CLASSES)),
                            ("num_boxes", (count,)), ("image_w", (count,)), ("image_h", (count,))):
            if name in handle:
                optional[name] = _hdf5_dataset(handle, name, path)
                if optional[name].shape != shape:
                    raise UserError(f"{path}: '{name}' has shape {list(optional[name].shape)}, expected {list(shape)}")
        sizes = "image_w" in optional and "image_h" in optional
        if "boxes" in optional and not sizes:
            raise UserError(f"{path}: has 'boxes' but no 'image_w' and 'image_h' datasets [N] (pixels) to "
                            "normalise them; add them to the file")
        if "boxes" not in optional:
            note(f"{path}: no 'boxes' dataset: every box is written as the whole image")
        if "cls_prob" not in optional:
            note(f"{path}: {NO_CLASSES}")
        for row in range(count):
            image_id = ids[row]
            source = f"{path} (image {image_id}, row {row})"
            image_features = features[row]
            if "num_boxes" in optional:
                num_boxes = check_integer(optional["num_boxes"][row], "num_boxes", source, high=rows)
            else:
                # padding rows are all zero: the boxes are the rows up to the last one with features
                nonzero = np.flatnonzero(np.any(image_features != 0, axis=1))
                if not len(nonzero):
                    raise UserError(f"{source}: every row of its features is zero (no box)")
                num_boxes = int(nonzero[-1]) + 1
            image_w = optional["image_w"][row] if sizes else 1
            image_h = optional["image_h"][row] if sizes else 1
            if "boxes" in optional:
                boxes = optional["boxes"][row, :num_boxes]
            else:
                boxes = np.tile(np.array([[0, 0, image_w, image_h]], dtype=np.float32), (num_boxes, 1))
            cls_prob = optional["cls_prob"][row, :num_boxes] if "cls_prob" in optional \
                else np.zeros((num_boxes, NUM_CLASSES), dtype=np.float32)
            yield check_record({"image_id": image_id, "image_w": image_w, "image_h": image_h, "num_boxes": num_boxes,
                                "features": image_features[:num_boxes], "boxes": boxes, "cls_prob": cls_prob},
                               source, features.shape[2])


# ---------------------------------------------------------------- a folder of .npz files

NPZ_REQUIRED = ("features", "boxes", "image_w", "image_h")


def _npz_files(folder: Path) -> list[tuple[int, Path]]:
    """(image id, file) of every .npz of `folder`, by image id; a name that is no id is an error."""
    files = []
    for path in folder.glob("*.npz"):
        image_id = parse_integer(path.stem)
        if image_id is None or not 0 <= image_id <= MAX_IMAGE_ID:
            raise UserError(f"{path}: the file name must be the image id (<image_id>.npz, e.g. 185565.npz)")
        files.append((image_id, path))
    return sorted(files)


def _npz_size(value, name: str, source: str) -> int:
    """image_w / image_h of an .npz: one integer in any form `check_integer` reads (a whole float too)."""
    array = np.asarray(value)
    if array.size != 1:
        raise UserError(f"{source}: {name} must be one integer, got an array of shape {list(array.shape)}")
    return check_integer(array.reshape(()), name, source)


def _npz_arrays(path: Path, source: str) -> dict:
    """The arrays of one .npz (the required ones and cls_prob when present), without pickles."""
    try:
        content = np.load(input_file(path, ".npz file"), allow_pickle=False)
        if not isinstance(content, np.lib.npyio.NpzFile):
            raise UserError(f"{source}: holds one array, not an .npz archive of named arrays (numpy.savez)")
        with content:
            missing = [name for name in NPZ_REQUIRED if name not in content]
            if missing:
                raise UserError(f"{source}: lacks {', '.join(missing)} (has {', '.join(content) or 'nothing'})")
            return {name: content[name] for name in (*NPZ_REQUIRED, "cls_prob") if name in content}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{source}: not a readable .npz file ({str(error).splitlines()[0]})") from None


def record_from_arrays(arrays: Mapping, image_id: int, source: str, feature_size: int | None) -> dict:
    """One image as the arrays of the .npz schema (features [n, F], boxes [n, 4] in pixels, image_w,
    image_h, optional cls_prob; an open .npz or any mapping) -> its stored record, checked against
    the width `feature_size` (None: any); UserError naming `source` otherwise."""
    missing = [name for name in NPZ_REQUIRED if name not in arrays]
    if missing:
        raise UserError(f"{source}: lacks {', '.join(missing)} (has {', '.join(arrays) or 'nothing'})")
    features = np.asarray(arrays["features"])
    num_boxes = features.shape[0] if features.ndim == 2 else 0
    if num_boxes < 1:
        raise UserError(f"{source}: 'features' has shape {list(features.shape)}, expected [n, F] with n >= 1")
    cls_prob = arrays["cls_prob"] if "cls_prob" in arrays else np.zeros((num_boxes, NUM_CLASSES), dtype=np.float32)
    return check_record({"image_id": image_id, "num_boxes": num_boxes, "features": features,
                         "boxes": arrays["boxes"], "cls_prob": cls_prob,
                         "image_w": _npz_size(arrays["image_w"], "image_w", source),
                         "image_h": _npz_size(arrays["image_h"], "image_h", source)}, source, feature_size)


def npz_records(folder: Path, note: Note) -> Iterator[dict]:
    """The images of a folder of `<image_id>.npz` files, in image id order."""
    feature_size, said = None, False
    for image_id, path in _npz_files(folder):
        source = f"{path} (image {image_id})"
        arrays = _npz_arrays(path, source)
        if "cls_prob" not in arrays and not said:
            note(f"{folder}: {path.name} and any other file without cls_prob: {NO_CLASSES}")
            said = True
        record = record_from_arrays(arrays, image_id, source, feature_size)
        feature_size = record["features"].shape[1]
        yield record


# ---------------------------------------------------------------- our own stores, and conversion

def store_records(path: Path, note: Note) -> Iterator[dict]:
    """The images of an LMDB or HDF5 store of the project, in stored order."""
    store = open_feature_store(path)
    return (store.read_raw(image_id) for image_id in store.image_ids())


READERS = {"tsv": tsv_records, "starter_hdf5": starter_hdf5_records, "npz": npz_records, "lmdb": store_records,
           "hdf5": store_records}


class ImportedFeatures(FeatureStoreReader):
    """The images of a foreign feature file read into memory and served like a feature store: for a
    few images of your own (a large collection converts once to a store, `convert_features`)."""

    def __init__(self, path: Path, form: str, note: Note):
        self.path = path
        self._records = list(READERS[form](path, note))
        if not self._records:
            raise UserError(f"{path}: holds no images")
        self._row_of_image = rows_by_image([record["image_id"] for record in self._records], str(path))
        self.feature_size = self._records[0]["features"].shape[1]

    def read_raw(self, image_id) -> dict:
        image_id = int(image_id)
        self._check_known(image_id)
        return self._records[self._row_of_image[image_id]]


def open_image_features(path: str | os.PathLike, note: Note):
    """Image features in any format of READERS served like a feature store (image id -> ImageRecord):
    the project's own stores opened as they are, a foreign file read into memory."""
    form = detect_format(path)
    if form in ("lmdb", "hdf5"):
        return open_feature_store(path)
    return ImportedFeatures(Path(path), form, note)


def output_kind(output: str | os.PathLike) -> str:
    """'hdf5' for a name ending in .h5 / .hdf5, 'lmdb' for one ending in .lmdb; else UserError."""
    suffix = Path(output).suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix == LMDB_SUFFIX:
        return "lmdb"
    raise UserError(f"{output}: the output name must end in .h5 or .hdf5 (an HDF5 store) or .lmdb (an LMDB store)")


def convert_features(inputs: list, output: str | os.PathLike, note: Note, show_progress: bool = True) -> tuple[int, int]:
    """Write the images of every input (any format of READERS) into one feature store at `output`,
    atomically (a bad record leaves no output); returns (images written, their feature width)."""
    writer = write_hdf5_feature_store if output_kind(output) == "hdf5" else write_lmdb_feature_store
    sources = [(Path(path), detect_format(path)) for path in inputs]
    records = itertools.chain.from_iterable(READERS[form](path, note) for path, form in sources)
    # closed before an error propagates, so the error stays the last line on the terminal
    with tqdm(records, desc="converting", unit="image", disable=not show_progress) as progress:
        count = writer(output, progress)
    return count, open_feature_store(output).feature_size
