"""What a valid stored image record is: the one check that every feature store reader and writer,
and every importer of a foreign format, applies to every image (`check_record`). A stored record of
one image with n boxes (no whole-image row: readers add it):

    image_id          int, 0 <= image_id < 2**63
    image_w, image_h  int >= 1, the image size in pixels
    num_boxes         int n >= 1 (stored as text too: `parse_integer`)
    features          [n, F] finite; F is the store's feature width (2048 for the released features)
    boxes             [n, 4] finite, x1, y1, x2, y2 in pixels, x1 <= x2 and y1 <= y2
    cls_prob          [n, 1601] finite: the detector's class distribution per box
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from utils.errors import UserError

FEATURE_SIZE = 2048
"""The width of the released bottom-up features (the default of the model's v_feature_size)."""
NUM_CLASSES = 1601
"""The Visual Genome classes of the bottom-up detector (the model's v_target_size)."""
RECORD_FIELDS = ("image_id", "image_h", "image_w", "num_boxes", "features", "boxes", "cls_prob")
MAX_IMAGE_ID = 2**63 - 1
"""Image ids are stored as int64 (HDF5, the score files); 0..MAX_IMAGE_ID."""


def parse_integer(value) -> Optional[int]:
    """`value` as the reference's `int()` reads a stored number (an int, a NumPy integer, a whole
    float, text as str or bytes), or None: bools, fractions (3.5) and text `int()` refuses ('12²')."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if np.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, (str, bytes, bytearray)):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def check_integer(value, name: str, source: str, low: int = 1, high: Optional[int] = None) -> int:
    """`value` read by `parse_integer` and in low..high, as an int; UserError naming `source`."""
    number = parse_integer(value)
    if number is None:
        raise UserError(f"{source}: {name} must be an integer, got {_describe(value)}")
    if number < low or (high is not None and number > high):
        wanted = f"in {low}..{high}" if high is not None else f"at least {low}"
        raise UserError(f"{source}: {name} must be {wanted}, got {number}")
    return number


def check_image_id(value, name: str, source: str) -> int:
    """An image id in any stored form (`parse_integer`) in 0..MAX_IMAGE_ID, as an int."""
    return check_integer(value, name, source, low=0, high=MAX_IMAGE_ID)


def check_array(value, name: str, shape: tuple, source: str) -> np.ndarray:
    """`value` as a float32 array of `shape` (None: any size >= 1) whose values are all finite."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value) if isinstance(value, (list, tuple)) \
        else None
    if array is None or array.dtype.kind not in "fiu":
        raise UserError(f"{source}: '{name}' must be an array of numbers, got {_describe(value)}")
    if array.ndim != len(shape) or any(want is not None and have != want for have, want in zip(array.shape, shape)) \
            or 0 in array.shape:
        # a free size (None) is not the problem: shown as the array has it
        wanted = ", ".join(str(want if want is not None else array.shape[axis] if axis < array.ndim else "F")
                           for axis, want in enumerate(shape))
        raise UserError(f"{source}: '{name}' has shape {list(array.shape)}, expected [{wanted}]")
    array = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1))[0])
        raise UserError(f"{source}: '{name}' holds NaN or inf (box {row})")
    return array


def record_fields(record, source: str) -> dict:
    """`record` as a dict with str keys (a Python 2 pickle stores bytes) holding every RECORD_FIELDS."""
    if not isinstance(record, Mapping):
        raise UserError(f"{source}: record is a {type(record).__name__}, expected a dict")
    record = {key.decode() if isinstance(key, bytes) else key: value for key, value in record.items()}
    missing = [field for field in RECORD_FIELDS if field not in record]
    if missing:
        raise UserError(f"{source}: record lacks field(s) {', '.join(missing)}")
    return record


def check_record(record: Mapping, source: str, feature_size: Optional[int] = FEATURE_SIZE) -> dict:
    """Validate one stored record (module docstring) against the feature width `feature_size`
    (None: any). Returns a dict of RECORD_FIELDS with ints and float32 arrays; UserError naming
    `source` (a file and the image) and the first problem otherwise."""
    record = record_fields(record, source)
    image_id = check_image_id(record["image_id"], "image_id", source)
    image_h = check_integer(record["image_h"], "image_h", source)
    image_w = check_integer(record["image_w"], "image_w", source)
    num_boxes = check_integer(record["num_boxes"], "num_boxes", source)
    features = check_array(record["features"], "features", (num_boxes, feature_size), source)
    boxes = check_array(record["boxes"], "boxes", (num_boxes, 4), source)
    unordered = np.flatnonzero((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3]))
    if len(unordered):
        box = boxes[unordered[0]].tolist()
        raise UserError(f"{source}: box {int(unordered[0])} is {box}, not ordered as x1 <= x2, y1 <= y2")
    cls_prob = check_array(record["cls_prob"], "cls_prob", (num_boxes, NUM_CLASSES), source)
    return {"image_id": image_id, "image_h": image_h, "image_w": image_w, "num_boxes": num_boxes,
            "features": features, "boxes": boxes, "cls_prob": cls_prob}


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} {list(value.shape)}"
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode(errors="replace")
    text = repr(value)
    kind = "text" if isinstance(value, str) else type(value).__name__
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"
