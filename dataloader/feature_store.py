"""Image feature stores (LMDB in the released layout, HDF5): read and write pre-extracted region
features by image id. `open_feature_store` picks the reader from the file; a reader maps
`reader[image_id]` to an `ImageRecord`, knows nothing about BERT, and is picklable (it reopens its
file lazily in each process). The layouts and their checks: docs/data.md "File formats".
"""
from __future__ import annotations

import abc
import base64
import binascii
import codecs
import io
import os
import pickle
import shutil
from pathlib import Path
from typing import Iterable, Iterator, TypedDict

import numpy as np
from tqdm import tqdm

from dataloader.feature_record import (FEATURE_SIZE, NUM_CLASSES, RECORD_FIELDS, check_image_id, check_integer,
                                       check_record, record_fields)
from utils.errors import UserError
from utils.outputs import atomic_folder, atomic_output
from utils.inputs import input_file

HDF5_FORMAT_NAME = "visdial-bert image features"
HDF5_FORMAT_VERSION = 1
HDF5_CHUNK_BOXES = 12
"""Boxes per HDF5 chunk: 36 boxes (the released features) fill 3 chunks, 10-100 boxes waste < 12 rows."""
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5")
_LMDB_KEYS_RECORD = b"keys"
_LMDB_FEATURE_SIZE_RECORD = b"feature_size"
LMDB_FILES = frozenset({"data.mdb", "lock.mdb"})


class ImageRecord(TypedDict):
    """What a reader returns for one image with n boxes, row 0 being the whole image:

    features            [n+1, F] float32: row 0 = mean of the n box features, then the boxes
    num_boxes           int: n + 1
    image_location      [n+1, 5] float64: row 0 = [0, 0, 1, 1, 1], then [x1/w, y1/h, x2/w, y2/h, area ratio]
    image_location_ori  [n+1, 5] float64: row 0 = [0, 0, w, h, w*h], then [x1, y1, x2, y2, area ratio]
    cls_prob            [n+1, 1601] float32: row 0 = one-hot class 0, then the stored class probabilities
    """

    features: np.ndarray
    num_boxes: int
    image_location: np.ndarray
    image_location_ori: np.ndarray
    cls_prob: np.ndarray


def build_image_record(raw: dict) -> ImageRecord:
    """The checked stored fields of one image (`FeatureStoreReader.read_raw`) -> its `ImageRecord`,
    computed in float32 and in the reference's order, so that values are bit-identical."""
    image_h, image_w, features, boxes, cls_prob = (raw[name] for name in ("image_h", "image_w", "features",
                                                                          "boxes", "cls_prob"))
    num_boxes = features.shape[0]
    whole_image_feature = np.sum(features, axis=0) / num_boxes
    features = np.concatenate([whole_image_feature[None], features], axis=0)

    whole_image_class = np.zeros((1, NUM_CLASSES), dtype=np.float32)
    whole_image_class[0, 0] = 1
    cls_prob = np.concatenate([whole_image_class, cls_prob], axis=0)

    location = np.zeros((num_boxes, 5), dtype=np.float32)
    location[:, :4] = boxes
    image_area = float(image_w) * float(image_h)
    location[:, 4] = (location[:, 3] - location[:, 1]) * (location[:, 2] - location[:, 0]) / image_area
    location_ori = np.concatenate(
        [np.array([[0, 0, image_w, image_h, image_w * image_h]], dtype=np.float64), location], axis=0)
    location[:, (0, 2)] /= float(image_w)
    location[:, (1, 3)] /= float(image_h)
    location = np.concatenate([np.array([[0, 0, 1, 1, 1]], dtype=np.float64), location], axis=0)
    return ImageRecord(features=features, num_boxes=num_boxes + 1, image_location=location,
                       image_location_ori=location_ori, cls_prob=cls_prob)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and NumPy scalars (`np.int64(36)` as num_boxes, which
    the reference's `pickle.loads` read); a pickle naming any other class or function (the way a
    `__reduce__` payload runs code) is a UserError before anything is called."""

    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_SCALAR_PARTS:
            return _NUMPY_SCALAR_PARTS[module, name]
        raise UserError(f"{self._source}: record refers to {module}.{name}; only plain data "
                        "(dict, list, numbers, str, bytes, NumPy scalars) is allowed in a feature store")


_numpy_scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
_NUMPY_SCALAR_PARTS = {
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,   # pickled by NumPy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # pickled by NumPy 2.x
    ("_codecs", "encode"): codecs.encode,                              # the bytes of a protocol-2 pickle
}
"""What a pickled NumPy scalar names: `scalar(dtype(...), raw bytes)`. None of them runs code."""


def restricted_loads(data: bytes, source: str):
    """Unpickle `data` with `RestrictedUnpickler`; `source` names the file/record in errors."""
    try:
        return RestrictedUnpickler(data, source).load()
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{source}: not a readable pickle record ({type(error).__name__}: {error})") from None


def _decode_array(value, shape: tuple[int, int], source: str, field: str) -> np.ndarray:
    """base64 str/bytes -> read-only float32 array of `shape`."""
    try:
        raw = base64.b64decode(value, validate=False)
    except (binascii.Error, TypeError, ValueError):
        raise UserError(f"{source}: field '{field}' is not base64") from None
    expected = shape[0] * shape[1] * 4
    if len(raw) != expected:
        raise UserError(f"{source}: field '{field}' holds {len(raw)} bytes, expected {expected} "
                        f"(float32 {list(shape)})")
    return np.frombuffer(raw, dtype=np.float32).reshape(shape)


def _parse_lmdb_record(record, source: str, feature_size: int) -> dict:
    """Decode and check an unpickled LMDB record; returns the checked fields (see `read_raw`)."""
    record = record_fields(record, source)
    num_boxes = check_integer(record["num_boxes"], "num_boxes", source)
    decoded = {field: _decode_array(record[field], (num_boxes, width), source, field)
               for field, width in (("features", feature_size), ("boxes", 4), ("cls_prob", NUM_CLASSES))}
    return check_record({**record, **decoded}, source, feature_size)


# One py-lmdb environment per data file (device, inode) and process: py-lmdb refuses a second open
# of one environment, and a forked child (a DataLoader worker) must reopen the ones it inherited.
_open_lmdb_environments: dict[tuple[int, int], object] = {}


def _close_inherited_lmdb_environments() -> None:
    for environment in _open_lmdb_environments.values():
        environment.close()
    _open_lmdb_environments.clear()


os.register_at_fork(after_in_child=_close_inherited_lmdb_environments)


def _lmdb_environment(path: Path):
    import lmdb

    data_file = path / "data.mdb" if path.is_dir() else path
    status = data_file.stat()
    key = (status.st_dev, status.st_ino)
    if key not in _open_lmdb_environments:
        try:
            _open_lmdb_environments[key] = lmdb.open(
                str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False,
                meminit=False, max_readers=512)
        except lmdb.Error as error:
            raise UserError(f"{path}: not a readable LMDB feature store ({error})") from None
        environment = _open_lmdb_environments[key]
        # A truncated data.mdb would crash the process (SIGBUS) on the first read past its end.
        needed_bytes = (environment.info()["last_pgno"] + 1) * environment.stat()["psize"]
        if data_file.stat().st_size < needed_bytes:
            del _open_lmdb_environments[key]
            environment.close()
            raise UserError(f"{path}: LMDB feature store is truncated ({data_file.stat().st_size} bytes, "
                            f"its pages need {needed_bytes})")
    return _open_lmdb_environments[key]


class FeatureStoreReader(abc.ABC):
    """Shared part of the readers: id -> row lookup by dict and the mapping protocol."""

    path: Path
    feature_size: int
    """The width F of the store's features."""
    _row_of_image: dict[int, int]

    def image_ids(self) -> list[int]:
        """Every image id of the store, in stored order."""
        return list(self._row_of_image)

    def __len__(self) -> int:
        return len(self._row_of_image)

    def __contains__(self, image_id) -> bool:
        return int(image_id) in self._row_of_image

    def __iter__(self) -> Iterator[int]:
        return iter(self._row_of_image)

    def _check_known(self, image_id: int) -> None:
        if image_id not in self._row_of_image:
            raise UserError(f"{self.path}: image {image_id} is not in this feature store")

    @abc.abstractmethod
    def read_raw(self, image_id) -> dict:
        """The stored fields of one image, checked (dataloader/feature_record.py): image_id,
        image_h, image_w, num_boxes (n) and float32 arrays features [n, F], boxes [n, 4],
        cls_prob [n, 1601] (no whole-image row)."""

    def __getitem__(self, image_id) -> ImageRecord:
        return build_image_record(self.read_raw(image_id))


def rows_by_image(image_ids, source: str) -> dict[int, int]:
    """image id (any stored form: `check_image_id`) -> row; one that is no id, or listed twice, is a
    UserError."""
    rows = {}
    for row, image_id in enumerate(image_ids):
        image_id = check_image_id(image_id, f"image id {row}", source)
        if image_id in rows:
            raise UserError(f"{source}: image {image_id} is listed twice (rows {rows[image_id]} and {row})")
        rows[image_id] = row
    return rows


class LmdbFeatureStore(FeatureStoreReader):
    """Reader of the released LMDB layout. `path`: the folder or the .mdb file."""

    def __init__(self, path: str | os.PathLike):
        import lmdb

        self.path = Path(path)
        try:
            with _lmdb_environment(self.path).begin(write=False) as transaction:
                keys_blob = transaction.get(_LMDB_KEYS_RECORD)
                feature_size_blob = transaction.get(_LMDB_FEATURE_SIZE_RECORD)
        except lmdb.Error as error:
            raise UserError(f"{self.path}: LMDB read failed ({error})") from None
        if keys_blob is None:
            raise UserError(f"{self.path}: LMDB feature store has no b'keys' record")
        keys = restricted_loads(keys_blob, f"{self.path} (b'keys')")
        if not isinstance(keys, (list, tuple)):
            raise UserError(f"{self.path}: b'keys' record is a {type(keys).__name__}, expected a list")
        self._row_of_image = rows_by_image(keys, f"{self.path} (b'keys')")
        # a record is stored under its key as listed (b'185565', or b'0185565' in some conversion)
        self._record_keys = [key if isinstance(key, bytes) else str(key).encode() for key in keys]
        self.feature_size = FEATURE_SIZE
        if feature_size_blob is not None:
            self.feature_size = check_integer(restricted_loads(feature_size_blob, f"{self.path} (b'feature_size')"),
                                              "feature_size", f"{self.path} (b'feature_size')")

    def _load_record(self, image_id: int) -> tuple[object, str]:
        self._check_known(image_id)
        import lmdb

        source = f"{self.path} (image {image_id})"
        try:
            with _lmdb_environment(self.path).begin(write=False) as transaction:
                blob = transaction.get(self._record_keys[self._row_of_image[image_id]])
        except lmdb.Error as error:
            raise UserError(f"{source}: LMDB read failed ({error})") from None
        if blob is None:
            raise UserError(f"{source}: listed in b'keys' but has no record")
        return restricted_loads(blob, source), source

    def read_raw(self, image_id) -> dict:
        image_id = int(image_id)
        record, source = self._load_record(image_id)
        checked = _parse_lmdb_record(record, source, self.feature_size)
        if checked["image_id"] != image_id:
            raise UserError(f"{source}: the record says image_id {checked['image_id']}")
        return checked


class Hdf5FeatureStore(FeatureStoreReader):
    """Reader of the HDF5 layout written by `write_hdf5_feature_store`; same values as the LMDB reader."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = None
        self._file_pid = None
        handle = self._handle()
        missing = [name for name in RECORD_FIELDS if name not in handle]
        if missing:
            raise UserError(f"{self.path}: HDF5 feature store lacks dataset(s) {', '.join(missing)} (another "
                            "layout, such as the challenge starter's, converts with preprocessing/convert_features.py)")
        self._stored_rows, self.feature_size = self._check_shapes(handle)
        self._row_of_image = rows_by_image(handle["image_id"][()].tolist(), f"{self.path} (image_id)")

    def _check_shapes(self, handle) -> tuple[int, int]:
        """(B rows per image, F feature width) after checking every dataset's shape."""
        def shape_of(name: str, kinds: str) -> tuple:
            dataset = handle[name]
            if not hasattr(dataset, "dtype") or dataset.dtype.kind not in kinds:
                raise UserError(f"{self.path}: '{name}' is not a dataset of "
                                f"{'integers' if kinds == 'iu' else 'numbers'}")
            return dataset.shape

        num_images = shape_of("image_id", "iu")
        if len(num_images) != 1:
            raise UserError(f"{self.path}: 'image_id' has shape {list(num_images)}, expected [N] (1-d)")
        (count,) = num_images
        for name in ("num_boxes", "image_h", "image_w"):
            if shape_of(name, "iu") != (count,):
                raise UserError(f"{self.path}: '{name}' has shape {list(handle[name].shape)}, expected [{count}]")
        features = shape_of("features", "fiu")
        if len(features) != 3 or features[0] != count or 0 in features[1:]:
            raise UserError(f"{self.path}: 'features' has shape {list(features)}, expected [{count}, B, F]")
        rows = features[1]
        for name, width in (("boxes", 4), ("cls_prob", NUM_CLASSES)):
            if shape_of(name, "fiu") != (count, rows, width):
                raise UserError(f"{self.path}: '{name}' has shape {list(handle[name].shape)}, "
                                f"expected [{count}, {rows}, {width}]")
        return rows, features[2]

    def _handle(self):
        import h5py

        if self._file is None or self._file_pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as error:
                raise UserError(f"{self.path}: not a readable HDF5 feature store ({error})") from None
            self._file_pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def read_raw(self, image_id) -> dict:
        image_id = int(image_id)
        self._check_known(image_id)
        row = self._row_of_image[image_id]
        handle = self._handle()
        source = f"{self.path} (image {image_id})"
        try:
            num_boxes = check_integer(handle["num_boxes"][row], "num_boxes", source, high=self._stored_rows)
            fields = {name: handle[name][row] for name in ("image_id", "image_h", "image_w")}
            fields.update({name: handle[name][row, :num_boxes] for name in ("features", "boxes", "cls_prob")})
        except (OSError, ValueError, IndexError) as error:
            raise UserError(f"{source}: HDF5 read failed ({error})") from None
        return check_record({**fields, "num_boxes": num_boxes}, source, self.feature_size)


def open_feature_store(path: str | os.PathLike) -> LmdbFeatureStore | Hdf5FeatureStore:
    """Open an image feature store, LMDB (folder with data.mdb, or the .mdb file) or HDF5, by its content."""
    path = Path(path)
    if path.is_dir():
        input_file(path / "data.mdb", "LMDB data file")
        return LmdbFeatureStore(path)
    input_file(path, "image feature store")
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic == HDF5_MAGIC:
        return Hdf5FeatureStore(path)
    if path.suffix in HDF5_SUFFIXES:
        raise UserError(f"{path}: not an HDF5 file")
    return LmdbFeatureStore(path)


def _checked_records(records: Iterable[dict], destination: Path, feature_size: int | None) -> Iterator[dict]:
    """`records` checked one by one, at the first one's feature width unless `feature_size` is
    given; an image id twice, or no record at all, is a UserError naming `destination`."""
    seen = set()
    for record in records:
        image_id = record.get("image_id") if isinstance(record, dict) else None
        checked = check_record(record, f"{destination} (image {image_id})", feature_size)
        feature_size = checked["features"].shape[1]
        if checked["image_id"] in seen:
            raise UserError(f"{destination}: image {checked['image_id']} is written twice")
        seen.add(checked["image_id"])
        yield checked
    if not seen:
        raise UserError(f"{destination}: no images to write")


def write_lmdb_feature_store(path: str | os.PathLike, records: Iterable[dict], feature_size: int | None = None) -> int:
    """Write stored `records` (dataloader/feature_record.py) as an LMDB store in the released
    layout, plus `b'feature_size'`, atomically; returns the count."""
    import lmdb

    path = Path(path)
    if path.is_file() or (path.is_dir() and set(os.listdir(path)) - LMDB_FILES):
        raise UserError(f"{path}: exists and is not an LMDB feature store; not replaced (choose another output)")
    keys = []
    with atomic_folder(path, "the LMDB feature store", LMDB_FILES) as temporary:
        environment = lmdb.open(str(temporary), map_size=1 << 40, subdir=True)
        try:
            with environment.begin(write=True) as transaction:
                for record in _checked_records(records, path, feature_size):
                    stored = {**record, **{name: base64.b64encode(np.ascontiguousarray(record[name]).tobytes())
                                           for name in ("features", "boxes", "cls_prob")}}
                    key = str(record["image_id"]).encode()
                    transaction.put(key, pickle.dumps(stored, protocol=3))
                    keys.append(key)
                    feature_size = record["features"].shape[1]
                transaction.put(_LMDB_KEYS_RECORD, pickle.dumps(keys, protocol=3))
                transaction.put(_LMDB_FEATURE_SIZE_RECORD, pickle.dumps(feature_size, protocol=3))
        except lmdb.Error as error:  # a full disk is an I/O error to LMDB: the free space tells
            free = shutil.disk_usage(temporary).free / 2**20
            raise UserError(f"{path}: cannot write the LMDB feature store ({error}; {free:.1f} MiB free on its "
                            "disk); the previous store, if any, is kept") from None
        finally:
            environment.close()
    return len(keys)


def write_hdf5_feature_store(path: str | os.PathLike, records: Iterable[dict], feature_size: int | None = None) -> int:
    """Write stored `records` to an HDF5 file (layout: docs/data.md), streamed and atomically;
    returns the count. A chunk is one image's HDF5_CHUNK_BOXES boxes: a read touches its own only."""
    import h5py

    path = Path(path)
    with atomic_output(path, "the HDF5 feature store") as temporary, _Hdf5Sink(temporary, "w+") as sink:
        with h5py.File(sink, "w") as handle:
            count = _write_hdf5_records(handle, _checked_records(records, path, feature_size), sink)
        if sink.error is not None:
            raise sink.error
    return count


class _Hdf5Sink(io.FileIO):
    """The file an HDF5 store is written through: the first failed write, truncate or flush is kept
    in `error` and it and every later one dropped, since HDF5 crashes (SIGSEGV) on closing a file
    whose write failed (docs/reliability.md, "HDF5 and a full disk")."""

    error: OSError | None = None

    def _unless_failed(self, operation, *arguments) -> None:
        if self.error is None:
            try:
                operation(*arguments)
            except OSError as error:
                self.error = error

    def write(self, data) -> int:
        self._unless_failed(self._write_all, memoryview(data).cast("B"))
        return memoryview(data).nbytes

    def _write_all(self, remaining: memoryview) -> None:
        while remaining:
            remaining = remaining[super().write(remaining):]

    def truncate(self, size=None):
        self._unless_failed(super().truncate, size)
        return size

    def flush(self) -> None:
        self._unless_failed(super().flush)


def _write_hdf5_records(handle, records: Iterable[dict], sink: _Hdf5Sink) -> int:
    """Write checked `records` into the open HDF5 file `handle` (layout: write_hdf5_feature_store)
    until they end or a write to `sink` fails; returns how many were written."""
    count = 0
    handle.attrs["format"] = HDF5_FORMAT_NAME
    handle.attrs["version"] = HDF5_FORMAT_VERSION
    scalars = {name: handle.create_dataset(name, (0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
               for name, dtype in (("image_id", np.int64), ("num_boxes", np.int32), ("image_h", np.int32),
                                   ("image_w", np.int32))}
    arrays = {}
    for record in records:
        if sink.error is not None:
            break
        num_boxes = record["num_boxes"]
        if not arrays:
            widths = {"features": record["features"].shape[1], "boxes": 4, "cls_prob": NUM_CLASSES}
            arrays = {name: handle.create_dataset(name, (0, num_boxes, width), maxshape=(None, None, width),
                                                  dtype=np.float32, chunks=(1, HDF5_CHUNK_BOXES, width))
                      for name, width in widths.items()}
        if count == len(scalars["image_id"]):
            for dataset in (*scalars.values(), *arrays.values()):
                dataset.resize(2 * count + 16, axis=0)
        if num_boxes > arrays["features"].shape[1]:
            for dataset in arrays.values():
                dataset.resize(num_boxes, axis=1)
        for name, dataset in scalars.items():
            dataset[count] = record[name]
        for name, dataset in arrays.items():
            dataset[count, :num_boxes] = record[name]
        count += 1
    for dataset in (*scalars.values(), *arrays.values()):
        dataset.resize(count, axis=0)
    return count


def convert_lmdb_to_hdf5(input_path, output_path, show_progress: bool = True) -> int:
    """Copy every image of the LMDB store at `input_path` into a new HDF5 file; returns the count."""
    store = open_feature_store(input_path)
    if not isinstance(store, LmdbFeatureStore):
        raise UserError(f"{input_path}: is not an LMDB feature store")
    # closed before an error propagates, so the error stays the last line on the terminal
    with tqdm(store.image_ids(), desc="converting", disable=not show_progress) as progress:
        records = (store.read_raw(image_id) for image_id in progress)
        return write_hdf5_feature_store(output_path, records, store.feature_size)
