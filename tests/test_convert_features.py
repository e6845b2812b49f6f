"""Importers of foreign feature formats (preprocessing/convert_features.py, dataloader/feature_formats.py).

Each format is written here from small generated data, the way its own tools write it (base64
TSV lines, h5py datasets, numpy.savez), converted into both store kinds, and read back through
the datasets' reader (`open_feature_store`): what went in must come out, with the whole-image
row, normalised boxes and classes the reader adds. Malformed inputs give one line naming the
file and the image, and leave no output.
"""
import base64
from pathlib import Path

import h5py
import numpy as np
import pytest

from dataloader.feature_formats import NO_CLASSES, convert_features
from dataloader.feature_store import open_feature_store
from preprocessing import convert_features as convert_cli
from utils.errors import UserError

WIDTH = 24  # a detector of our own: any feature width works


def make_image(rng: np.random.Generator, image_id: int, num_boxes: int, width: int = WIDTH) -> dict:
    """A random image: features, ordered boxes inside a 640 x 480 image, class distributions."""
    corners = np.sort(rng.uniform(0, 1, (num_boxes, 2, 2)), axis=1) * [640, 480]
    boxes = corners.transpose(0, 2, 1).reshape(num_boxes, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    return {"image_id": image_id, "image_w": 640, "image_h": 480, "num_boxes": num_boxes,
            "features": rng.standard_normal((num_boxes, width)).astype(np.float32), "boxes": boxes,
            "cls_prob": rng.dirichlet(np.ones(1601), num_boxes).astype(np.float32)}


def tsv_line(image_id, features: np.ndarray, boxes: np.ndarray = None, image_w=640, image_h=480) -> bytes:
    """One line of a bottom-up-attention TSV."""
    boxes = np.tile(np.float32([[0, 0, 10, 10]]), (len(features), 1)) if boxes is None else boxes
    columns = [str(image_id).encode(), str(image_w).encode(), str(image_h).encode(), str(len(features)).encode(),
               base64.b64encode(np.float32(boxes).tobytes()), base64.b64encode(np.float32(features).tobytes())]
    return b"\t".join(columns)


def write_tsv(path: Path, images: list) -> Path:
    path.write_bytes(b"".join(tsv_line(image["image_id"], image["features"], image["boxes"]) + b"\n"
                              for image in images))
    return path


def written_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def write_starter_hdf5(path: Path, images: list, with_boxes: bool) -> Path:
    """The challenge starter's layout: features [N, B, F] zero-padded, image_id [N]; boxes and
    image sizes only `with_boxes`."""
    rows = max(image["num_boxes"] for image in images)
    features = np.zeros((len(images), rows, WIDTH), np.float32)
    boxes = np.zeros((len(images), rows, 4), np.float32)
    for row, image in enumerate(images):
        features[row, :image["num_boxes"]] = image["features"]
        boxes[row, :image["num_boxes"]] = image["boxes"]
    with h5py.File(path, "w") as handle:
        handle["image_id"] = [image["image_id"] for image in images]
        handle["features"] = features
        if with_boxes:
            handle["boxes"] = boxes
            handle["image_w"] = [image["image_w"] for image in images]
            handle["image_h"] = [image["image_h"] for image in images]
    return path


def write_npz_folder(folder: Path, images: list, with_classes: bool) -> Path:
    """The schema of docs/data.md: <image_id>.npz with features, boxes, image_w, image_h[, cls_prob]."""
    folder.mkdir()
    for image in images:
        extra = {"cls_prob": image["cls_prob"]} if with_classes else {}
        np.savez(folder / f"{image['image_id']}.npz", features=image["features"], boxes=image["boxes"],
                 image_w=image["image_w"], image_h=image["image_h"], **extra)
    return folder


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(14)
    return [make_image(rng, image_id, num_boxes) for image_id, num_boxes in ((7, 3), (123456, 5), (42, 1))]


FORMATS = {  # name: (write(folder, images), whether the classes survive)
    "tsv": (lambda folder, images: write_tsv(folder / "trainval_36.tsv", images), False),
    "tsv_saved_with_a_byte_order_mark_and_crlf": (
        lambda folder, images: written_bytes(folder / "trainval_36.tsv", b"\xef\xbb\xbf" + write_tsv(
            folder / "plain.tsv", images).read_bytes().replace(b"\n", b"\r\n")), False),
    "starter_hdf5": (lambda folder, images: write_starter_hdf5(folder / "starter.h5", images, True), False),
    "starter_hdf5_without_boxes": (lambda folder, images: write_starter_hdf5(folder / "starter.h5", images, False),
                                   False),
    "npz": (lambda folder, images: write_npz_folder(folder / "detections", images, True), True),
    "npz_without_classes": (lambda folder, images: write_npz_folder(folder / "detections", images, False), False),
}


@pytest.mark.parametrize("output", ["features.h5", "features.lmdb"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_converted_store_returns_what_went_in(name, output, images, tmp_path):
    write, with_classes = FORMATS[name]
    source = write(tmp_path, images)
    notes = []
    count, width = convert_features([source], tmp_path / output, note=notes.append, show_progress=False)
    assert (count, width) == (len(images), WIDTH)
    assert (NO_CLASSES in " ".join(notes)) == (not with_classes)
    store = open_feature_store(tmp_path / output)
    assert store.feature_size == WIDTH
    expected_order = [image["image_id"] for image in images]
    assert store.image_ids() == (sorted(expected_order) if name.startswith("npz") else expected_order)
    whole_image = name == "starter_hdf5_without_boxes"
    assert ("every box is written as the whole image" in " ".join(notes)) == whole_image
    for image in images:
        record, n = store[image["image_id"]], image["num_boxes"]
        assert record["num_boxes"] == n + 1
        np.testing.assert_array_equal(record["features"][1:], image["features"])
        np.testing.assert_allclose(record["features"][0], image["features"].mean(0), atol=1e-6)
        boxes = image["boxes"] if not whole_image else np.zeros((n, 4)) + [0, 0, 1, 1]
        scale = [640, 480, 640, 480] if not whole_image else [1, 1, 1, 1]
        np.testing.assert_allclose(record["image_location"][1:, :4], boxes / scale, rtol=1e-6)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / np.prod(scale[:2])
        np.testing.assert_allclose(record["image_location"][1:, 4], area, rtol=1e-5)
        np.testing.assert_array_equal(record["cls_prob"][1:], image["cls_prob"] if with_classes else 0)


def test_several_inputs_and_the_released_layout_convert_back_and_forth(golden_dir, images, tmp_path):
    """Two TSV shards make one store; the released LMDB still converts to HDF5 and back."""
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    write_tsv(first, images[:1])
    write_tsv(second, images[1:])
    count, _ = convert_features([first, second], tmp_path / "joined.lmdb", note=lambda line: None,
                                show_progress=False)
    assert count == 3 and open_feature_store(tmp_path / "joined.lmdb").image_ids() == [7, 123456, 42]
    released = open_feature_store(golden_dir / "visdial_img_feat.lmdb")
    convert_cli.main(["-input", str(golden_dir / "visdial_img_feat.lmdb"), "-output", str(tmp_path / "f.h5"),
                      "-quiet"])
    convert_cli.main(["-input", str(tmp_path / "f.h5"), "-output", str(tmp_path / "again.lmdb"), "-quiet"])
    again = open_feature_store(tmp_path / "again.lmdb")
    assert again.image_ids() == released.image_ids()
    for image_id in released.image_ids()[:3]:
        for key, value in released[image_id].items():
            np.testing.assert_array_equal(again[image_id][key], value)


def bad_tsv(folder: Path, line: bytes) -> Path:
    good = tsv_line(5, np.ones((2, WIDTH), np.float32))
    path = folder / "bad.tsv"
    path.write_bytes(good + b"\n" + line + b"\n")
    return path


def nan_npz(folder: Path) -> Path:
    images = [make_image(np.random.default_rng(0), 9, 2)]
    images[0]["boxes"][1, 3] = np.nan
    return write_npz_folder(folder / "detections", images, False)


def starter_with_inf(folder: Path) -> Path:
    images = [make_image(np.random.default_rng(0), 9, 2)]
    images[0]["features"][0, 1] = np.inf
    return write_starter_hdf5(folder / "starter.h5", images, True)


MALFORMED = [  # (name, build(folder) -> input, what the line names, problem)
    ("tsv_columns", lambda folder: bad_tsv(folder, tsv_line(8, np.ones((2, WIDTH))) + b"\textra"),
     "line 2 (image 8)", "has 7 tab-separated columns, expected 6"),
    ("tsv_base64", lambda folder: bad_tsv(folder, tsv_line(8, np.ones((2, WIDTH)))[:-3] + b"*=="),
     "line 2 (image 8)", "column 'features' is not base64"),
    ("tsv_width", lambda folder: bad_tsv(folder, tsv_line(8, np.ones((2, WIDTH * 2)))),
     "line 2 (image 8)", f"column 'features' holds 2 x {WIDTH * 2} float32, expected 2 x {WIDTH}"),
    ("tsv_nan", lambda folder: bad_tsv(folder, tsv_line(8, np.full((2, WIDTH), np.nan))),
     "line 2 (image 8)", "'features' holds NaN or inf (box 0)"),
    ("tsv_image_id", lambda folder: bad_tsv(folder, tsv_line("COCO_val2014_8", np.ones((2, WIDTH)))),
     "line 2 (image COCO_val2014_8)", "image_id must be an integer, got text 'COCO_val2014_8'"),
    ("npz_nan", nan_npz, "9.npz (image 9)", "'boxes' holds NaN or inf (box 1)"),
    ("npz_name", lambda folder: write_npz_folder(folder / "detections", [make_image(np.random.default_rng(0),
                                                                                    "photo", 1)], False),
     "photo.npz", "the file name must be the image id"),
    ("starter_inf", starter_with_inf, "(image 9, row 0)", "'features' holds NaN or inf (box 0)"),
]


@pytest.mark.parametrize("output", ["out.h5", "out.lmdb"])
@pytest.mark.parametrize("name, build, where, problem", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_input_is_one_line_naming_the_image(name, build, where, problem, output, tmp_path):
    source = build(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError) as caught:
        convert_features([source], tmp_path / "out" / output, note=lambda line: None, show_progress=False)
    message = str(caught.value)
    assert "\n" not in message and str(source.name) in message and where in message and problem in message, message
    assert list((tmp_path / "out").iterdir()) == []


def test_the_output_kind_comes_from_its_name(images, tmp_path):
    source = write_tsv(tmp_path / "a.tsv", images)
    with pytest.raises(UserError, match="must end in .h5 or .hdf5 .* or .lmdb"):
        convert_features([source], tmp_path / "features.bin", note=lambda line: None, show_progress=False)
