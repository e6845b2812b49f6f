"""Image feature stores: read (and write) pre-extracted bottom-up region features by image id.

A reader returns an image's record almost as stored and knows nothing about BERT or dialogs
(tokenising and tensor building belong to the datasets in `dataloader/`). Two on-disk formats
hold the same data and give identical values:

* LMDB, the layout of the released `visdial_img_feat.lmdb` (see `write_lmdb_feature_store`):
  key `b'keys'` -> pickled list of `str(image_id).encode()`; key `str(image_id).encode()` ->
  pickled dict `{image_id, image_h, image_w, num_boxes, features, boxes, cls_prob}` where the three
  arrays are base64 of float32 C-order buffers [num_boxes, 2048], [num_boxes, 4], [num_boxes, 1601].
  Records are unpickled by `RestrictedUnpickler`, which builds only plain containers, numbers,
  str and bytes: a hostile file cannot run code.
* HDF5 (see `write_hdf5_feature_store` for the layout), converted from an LMDB store by
  `convert_lmdb_to_hdf5` (the command line: `preprocessing/convert_features.py`).

`open_feature_store(path)` picks the reader from the file itself. Every reader maps
`reader[image_id]` to the dict documented in `ImageRecord` below, offers `image_ids()`, `len()` and
`image_id in reader`, and is picklable: it reopens its file lazily in each process, so it can be
used by DataLoader worker processes, and several readers over one LMDB share one environment per
process (py-lmdb refuses to open the same environment twice in a process).
"""
from __future__ import annotations

import abc
import base64
import binascii
import io
import os
import pickle
from pathlib import Path
from typing import Iterable, Iterator, TypedDict

import numpy as np
from tqdm import tqdm

from utils.errors import UserError
from utils.files import atomic_output

FEATURE_SIZE = 2048
NUM_CLASSES = 1601
HDF5_FORMAT_NAME = "visdial-bert image features"
HDF5_FORMAT_VERSION = 1
_LMDB_KEYS_RECORD = b"keys"
_RECORD_FIELDS = ("image_id", "image_h", "image_w", "num_boxes", "features", "boxes", "cls_prob")


class ImageRecord(TypedDict):
    """What a reader returns for one image with n boxes (row 0 is the whole image).

    features            [n+1, 2048] float32: row 0 = mean of the n box features, then the boxes
    num_boxes           int: n + 1
    image_location      [n+1, 5] float64: row 0 = [0, 0, 1, 1, 1], then
                        [x1/w, y1/h, x2/w, y2/h, box area / image area] (computed in float32)
    image_location_ori  [n+1, 5] float64: row 0 = [0, 0, w, h, w*h], then [x1, y1, x2, y2, area ratio]
    cls_prob            [n+1, 1601] float32: row 0 = one-hot class 0, then the stored class probabilities
    """

    features: np.ndarray
    num_boxes: int
    image_location: np.ndarray
    image_location_ori: np.ndarray
    cls_prob: np.ndarray


def build_image_record(image_h: int, image_w: int, features: np.ndarray, boxes: np.ndarray,
                       cls_prob: np.ndarray) -> ImageRecord:
    """Turn the stored arrays of one image (n boxes) into an `ImageRecord`.

    features [n, 2048], boxes [n, 4] (x1, y1, x2, y2 in pixels), cls_prob [n, 1601], all float32.
    The arithmetic is done in float32 and in the reference's order, so values are bit-identical.
    """
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
    """An unpickler that builds only plain containers, numbers, str and bytes.

    Those need no class lookup; any pickle that names a class or function (the way a
    `__reduce__` payload runs code) is refused with a UserError before anything is called.
    """

    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str):
        raise UserError(f"{self._source}: record refers to {module}.{name}; only plain data "
                        "(dict, list, numbers, str, bytes) is allowed in a feature store")


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


def _parse_lmdb_record(record, source: str) -> dict:
    """Validate an unpickled LMDB record; return its fields with the arrays decoded (see `read_raw`)."""
    if not isinstance(record, dict):
        raise UserError(f"{source}: record is a {type(record).__name__}, expected a dict")
    record = {key.decode() if isinstance(key, bytes) else key: value for key, value in record.items()}
    missing = [field for field in _RECORD_FIELDS if field not in record]
    if missing:
        raise UserError(f"{source}: record lacks field(s) {', '.join(missing)}")
    try:
        image_h, image_w, num_boxes = (int(record[name]) for name in ("image_h", "image_w", "num_boxes"))
    except (TypeError, ValueError):
        raise UserError(f"{source}: image_h / image_w / num_boxes are not integers") from None
    if num_boxes < 1 or image_h < 1 or image_w < 1:
        raise UserError(f"{source}: needs num_boxes, image_h and image_w >= 1, got "
                        f"{num_boxes}, {image_h}, {image_w}")
    features = _decode_array(record["features"], (num_boxes, FEATURE_SIZE), source, "features")
    boxes = _decode_array(record["boxes"], (num_boxes, 4), source, "boxes")
    cls_prob = _decode_array(record["cls_prob"], (num_boxes, NUM_CLASSES), source, "cls_prob")
    return {"image_h": image_h, "image_w": image_w,
            "num_boxes": num_boxes, "features": features, "boxes": boxes, "cls_prob": cls_prob}


# One py-lmdb environment per store path and process: py-lmdb refuses a second open of the same
# environment in one process, and an environment must not be used across fork(), so a forked
# child (a DataLoader worker) closes the ones it inherited and reopens on first use.
_open_lmdb_environments: dict[str, object] = {}


def _close_inherited_lmdb_environments() -> None:
    for environment in _open_lmdb_environments.values():
        environment.close()
    _open_lmdb_environments.clear()


os.register_at_fork(after_in_child=_close_inherited_lmdb_environments)


def _lmdb_environment(path: Path):
    import lmdb

    key = str(path.resolve())
    if key not in _open_lmdb_environments:
        try:
            _open_lmdb_environments[key] = lmdb.open(
                str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False,
                meminit=False, max_readers=512)
        except lmdb.Error as error:
            raise UserError(f"{path}: not a readable LMDB feature store ({error})") from None
        environment = _open_lmdb_environments[key]
        # A truncated data.mdb would crash the process (SIGBUS) on the first read past its end.
        data_file = path / "data.mdb" if path.is_dir() else path
        needed_bytes = (environment.info()["last_pgno"] + 1) * environment.stat()["psize"]
        if data_file.stat().st_size < needed_bytes:
            del _open_lmdb_environments[key]
            environment.close()
            raise UserError(f"{path}: LMDB feature store is truncated ({data_file.stat().st_size} bytes, "
                            f"its pages need {needed_bytes})")
    return _open_lmdb_environments[key]


class _FeatureStoreReader(abc.ABC):
    """Shared part of the readers: id -> row lookup by dict and the mapping protocol."""

    path: Path
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
        """The stored fields of one image: image_id, image_h, image_w, num_boxes (n) and float32
        arrays features [n, 2048], boxes [n, 4], cls_prob [n, 1601] (no whole-image row)."""

    def __getitem__(self, image_id) -> ImageRecord:
        raw = self.read_raw(image_id)
        return build_image_record(raw["image_h"], raw["image_w"], raw["features"], raw["boxes"], raw["cls_prob"])


class LmdbFeatureStore(_FeatureStoreReader):
    """Reader of the released LMDB layout (module docstring). `path`: the folder or the .mdb file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with _lmdb_environment(self.path).begin(write=False) as transaction:
            keys_blob = transaction.get(_LMDB_KEYS_RECORD)
        if keys_blob is None:
            raise UserError(f"{self.path}: LMDB feature store has no b'keys' record")
        keys = restricted_loads(keys_blob, f"{self.path} (b'keys')")
        if not isinstance(keys, (list, tuple)):
            raise UserError(f"{self.path}: b'keys' record is a {type(keys).__name__}, expected a list")
        try:
            self._row_of_image = {int(key): row for row, key in enumerate(keys)}
        except (TypeError, ValueError):
            raise UserError(f"{self.path}: b'keys' record holds a key that is not an image id") from None

    def _load_record(self, image_id: int) -> tuple[object, str]:
        """The unpickled record of `image_id` and the name of its source for error messages."""
        self._check_known(image_id)
        import lmdb

        source = f"{self.path} (image {image_id})"
        try:
            with _lmdb_environment(self.path).begin(write=False) as transaction:
                blob = transaction.get(str(image_id).encode())
        except lmdb.Error as error:
            raise UserError(f"{source}: LMDB read failed ({error})") from None
        if blob is None:
            raise UserError(f"{source}: listed in b'keys' but has no record")
        return restricted_loads(blob, source), source

    def read_raw(self, image_id) -> dict:
        image_id = int(image_id)
        record, source = self._load_record(image_id)
        return {"image_id": image_id, **_parse_lmdb_record(record, source)}

    def stored_num_boxes(self, image_id) -> int:
        """The number of boxes stored for `image_id`, without decoding its arrays."""
        record, source = self._load_record(int(image_id))
        if not isinstance(record, dict):
            raise UserError(f"{source}: record is a {type(record).__name__}, expected a dict")
        value = record.get("num_boxes", record.get(b"num_boxes"))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: num_boxes is not an integer") from None


class Hdf5FeatureStore(_FeatureStoreReader):
    """Reader of the HDF5 layout written by `write_hdf5_feature_store`; same values as the LMDB reader."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = None
        self._file_pid = None
        handle = self._handle()
        missing = [name for name in _RECORD_FIELDS if name not in handle]
        if missing:
            raise UserError(f"{self.path}: HDF5 feature store lacks dataset(s) {', '.join(missing)}")
        self._row_of_image = {int(image_id): row for row, image_id in enumerate(handle["image_id"][()])}

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
        try:
            num_boxes = int(handle["num_boxes"][row])
            image_h, image_w = int(handle["image_h"][row]), int(handle["image_w"][row])
            features = handle["features"][row, :num_boxes]
            boxes = handle["boxes"][row, :num_boxes]
            cls_prob = handle["cls_prob"][row, :num_boxes]
        except (OSError, ValueError, IndexError) as error:
            raise UserError(f"{self.path} (image {image_id}): HDF5 read failed ({error})") from None
        return {"image_id": image_id, "image_h": image_h, "image_w": image_w, "num_boxes": num_boxes,
                "features": np.asarray(features, dtype=np.float32), "boxes": np.asarray(boxes, dtype=np.float32),
                "cls_prob": np.asarray(cls_prob, dtype=np.float32)}


def open_feature_store(path: str | os.PathLike) -> LmdbFeatureStore | Hdf5FeatureStore:
    """Open an image feature store, LMDB (folder with data.mdb, or the .mdb file) or HDF5, by its content."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: image feature store not found")
    if path.is_dir():
        if not (path / "data.mdb").is_file():
            raise UserError(f"{path}: folder has no data.mdb, not an LMDB feature store")
        return LmdbFeatureStore(path)
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        return Hdf5FeatureStore(path)
    if path.suffix in (".h5", ".hdf5"):
        raise UserError(f"{path}: not an HDF5 file")
    return LmdbFeatureStore(path)


def _encode_array(array, shape: tuple[int, int], image_id, field: str) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape != shape:
        raise UserError(f"image {image_id}: '{field}' has shape {list(array.shape)}, expected {list(shape)}")
    return base64.b64encode(array.tobytes())


def write_lmdb_feature_store(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write `records` as an LMDB store in the released layout (module docstring); returns the count.

    Each record: dict(image_id, image_h, image_w, num_boxes, features [n, 2048], boxes [n, 4]
    (x1, y1, x2, y2 pixels), cls_prob [n, 1601]); arrays are stored as base64 bytes of float32,
    records as pickle protocol 3, and `b'keys'` lists the image ids in the order written.
    """
    import lmdb

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    keys = []
    environment = lmdb.open(str(path), map_size=1 << 40, subdir=True)
    try:
        with environment.begin(write=True) as transaction:
            for record in records:
                image_id, num_boxes = int(record["image_id"]), int(record["num_boxes"])
                stored = {
                    "image_id": image_id,
                    "image_h": int(record["image_h"]),
                    "image_w": int(record["image_w"]),
                    "num_boxes": num_boxes,
                    "features": _encode_array(record["features"], (num_boxes, FEATURE_SIZE), image_id, "features"),
                    "boxes": _encode_array(record["boxes"], (num_boxes, 4), image_id, "boxes"),
                    "cls_prob": _encode_array(record["cls_prob"], (num_boxes, NUM_CLASSES), image_id, "cls_prob"),
                }
                key = str(image_id).encode()
                transaction.put(key, pickle.dumps(stored, protocol=3))
                keys.append(key)
            transaction.put(_LMDB_KEYS_RECORD, pickle.dumps(keys, protocol=3))
    finally:
        environment.close()
    return len(keys)


def write_hdf5_feature_store(path: str | os.PathLike, records: Iterable[dict], num_images: int,
                             max_boxes: int) -> int:
    """Write `records` (as for `write_lmdb_feature_store`) to an HDF5 file; returns the count.

    Layout (N = num_images, B = max_boxes; rows beyond an image's num_boxes are zero):
        image_id   [N] int64        num_boxes [N] int32      image_h, image_w [N] int32
        features   [N, B, 2048] float32    boxes [N, B, 4] float32 (x1, y1, x2, y2 pixels)
        cls_prob   [N, B, 1601] float32
        attrs: format = "visdial-bert image features", version = 1
    Arrays are chunked one image per chunk, so reading an image touches one chunk per field.
    The file is written atomically (utils/files.py): complete, or not at all.
    """
    import h5py

    written = 0
    with atomic_output(path, "the HDF5 feature store") as temporary, h5py.File(temporary, "w") as handle:
        handle.attrs["format"] = HDF5_FORMAT_NAME
        handle.attrs["version"] = HDF5_FORMAT_VERSION
        image_ids = handle.create_dataset("image_id", (num_images,), dtype=np.int64)
        counts = handle.create_dataset("num_boxes", (num_images,), dtype=np.int32)
        heights = handle.create_dataset("image_h", (num_images,), dtype=np.int32)
        widths = handle.create_dataset("image_w", (num_images,), dtype=np.int32)
        arrays = {
            name: handle.create_dataset(name, (num_images, max_boxes, width), dtype=np.float32,
                                        chunks=(1, max_boxes, width))
            for name, width in (("features", FEATURE_SIZE), ("boxes", 4), ("cls_prob", NUM_CLASSES))
        }
        for row, record in enumerate(records):
            if row >= num_images:
                raise UserError(f"{path}: more records than the {num_images} announced")
            num_boxes = int(record["num_boxes"])
            if num_boxes > max_boxes:
                raise UserError(f"{path}: image {record['image_id']} has {num_boxes} boxes, "
                                f"more than max_boxes={max_boxes}")
            image_ids[row], counts[row] = int(record["image_id"]), num_boxes
            heights[row], widths[row] = int(record["image_h"]), int(record["image_w"])
            for name, dataset in arrays.items():
                dataset[row, :num_boxes] = np.asarray(record[name], dtype=np.float32)
            written = row + 1
        if written != num_images:
            raise UserError(f"{path}: got {written} records, expected {num_images}")
    return written


def convert_lmdb_to_hdf5(input_path, output_path, show_progress: bool = True) -> int:
    """Copy every image of the LMDB store at `input_path` into a new HDF5 file; returns the count."""
    store = open_feature_store(input_path)
    if not isinstance(store, LmdbFeatureStore):
        raise UserError(f"{input_path}: is not an LMDB feature store")
    image_ids = store.image_ids()
    if not image_ids:
        raise UserError(f"{input_path}: feature store holds no images")
    max_boxes = max(store.stored_num_boxes(image_id)
                    for image_id in tqdm(image_ids, desc="scanning", disable=not show_progress))
    # closed before an error propagates, so the error stays the last line on the terminal
    with tqdm(image_ids, desc="converting", disable=not show_progress) as progress:
        records = (store.read_raw(image_id) for image_id in progress)
        return write_hdf5_feature_store(output_path, records, num_images=len(image_ids), max_boxes=max_boxes)
