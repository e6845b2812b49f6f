"""Every stored form of an image record that the reference read is read, and read the same; what
the reference's `int()` refused is refused with one line.

The reference's LMDB reader casts image_h, image_w and num_boxes with `int()` and decodes the
arrays with `base64.b64decode`, which takes str or bytes. A store converted from the
bottom-up-attention TSV keeps every number as text and the arrays as str: that is the released
layout, while the golden fixture happens to store ints and bytes. Each form below rewrites the
golden store's records (the same numbers, stored another way); the reader must give bit-identical
records, and the reference checks (dataset items, scores, metrics) must give the same rows.
"""
import contextlib
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import lmdb
import numpy as np
import pytest

from dataloader.feature_formats import convert_features
from dataloader.feature_store import open_feature_store, restricted_loads
from tests.test_convert_features import make_image, tsv_line, write_npz_folder
from utils.conformance.data import data_checks
from utils.conformance.evaluation import end_to_end_checks
from utils.errors import UserError

NUMBERS = ("image_id", "image_h", "image_w", "num_boxes")
ARRAYS = ("features", "boxes", "cls_prob")
FORMS = {  # name -> how one stored record (ints, base64 bytes) is rewritten
    "text (a TSV conversion: numbers and base64 as str)": lambda record: {
        **record, **{name: str(record[name]) for name in NUMBERS},
        **{name: record[name].decode("ascii") for name in ARRAYS}},
    "numbers as bytes text, padded": lambda record: {
        **record, **{name: b" %d\n" % record[name] for name in NUMBERS}},
    "NumPy scalars": lambda record: {
        **record, **{name: np.int64(record[name]) if name == "image_id" else np.int32(record[name])
                     for name in NUMBERS}},
    "whole floats": lambda record: {**record, **{name: float(record[name]) for name in NUMBERS[1:]}},
    "field names as bytes (a Python 2 pickle)": lambda record: {
        name.encode(): str(value).encode() if name in NUMBERS else value for name, value in record.items()},
}


def stored_records(golden: Path) -> tuple[list, list]:
    """(keys, records) of the golden LMDB as stored: ints and base64 bytes (read from a copy:
    py-lmdb refuses a second open of an environment that a reader of this process holds)."""
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        shutil.copy(golden / "visdial_img_feat.lmdb" / "data.mdb", folder)
        environment = lmdb.open(folder, readonly=True, lock=False)
        stack.callback(environment.close)
        with environment.begin() as transaction:
            keys = restricted_loads(transaction.get(b"keys"), "keys")
            return keys, [restricted_loads(transaction.get(key), str(key)) for key in keys]


def rewritten_store(golden: Path, path: Path, form_of_image) -> Path:
    """The golden LMDB with record i rewritten by `form_of_image(i)` (a FORMS function), written
    raw the way a conversion script writes it (pickle.dumps of the dict)."""
    keys, records = stored_records(golden)
    environment = lmdb.open(str(path), map_size=1 << 26)
    with environment.begin(write=True) as transaction:
        for index, (key, record) in enumerate(zip(keys, records)):
            transaction.put(key, pickle.dumps(form_of_image(index)(record), protocol=2 + index % 2))
        transaction.put(b"keys", pickle.dumps(keys, protocol=3))
    environment.close()
    return path


def fixture_folder_with_store(golden: Path, folder: Path, store: Path) -> Path:
    """A fixture folder laid out like the golden one whose LMDB is `store` (the rest linked)."""
    folder.mkdir()
    for entry in golden.iterdir():
        target = folder / entry.name
        if entry.name == "visdial_img_feat.lmdb":
            shutil.move(str(store), target)
        else:
            target.symlink_to(entry)
    return folder


def records_of(store) -> dict:
    return {image_id: (store.read_raw(image_id), store[image_id]) for image_id in store.image_ids()}


def assert_same_records(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for image_id, (raw, record) in expected.items():
        actual_raw, actual_record = actual[image_id]
        for name in NUMBERS:
            assert type(actual_raw[name]) is int and actual_raw[name] == raw[name], (image_id, name)
        for name in ARRAYS:
            assert actual_raw[name].dtype == np.float32 and np.array_equal(actual_raw[name], raw[name])
        for name, value in record.items():
            assert np.array_equal(actual_record[name], value) and np.asarray(actual_record[name]).dtype == \
                np.asarray(value).dtype, (image_id, name)


@pytest.fixture(scope="module")
def golden_records(golden_dir):
    return records_of(open_feature_store(golden_dir / "visdial_img_feat.lmdb"))


@pytest.mark.parametrize("form", FORMS)
def test_every_form_the_reference_read_gives_the_same_records(form, golden_dir, golden_records, tmp_path):
    store = rewritten_store(golden_dir, tmp_path / "features.lmdb", lambda index: FORMS[form])
    assert_same_records(records_of(open_feature_store(store)), golden_records)


def test_the_forms_rewrite_what_is_stored(golden_dir):
    """The rewritten records really differ from the golden ones in type (the test above could not
    fail otherwise)."""
    _, records = stored_records(golden_dir)
    record = records[0]
    assert isinstance(record["num_boxes"], int) and isinstance(record["features"], bytes)
    for form, rewrite in FORMS.items():
        changed = rewrite(dict(record))
        assert any(type(changed.get(name, changed.get(name.encode()))) is not int for name in NUMBERS[1:]), form


def test_the_reference_checks_give_the_same_rows_on_a_text_store_and_a_mixed_store(golden_dir, tmp_path,
                                                                                     one_torch_thread):
    """Dataset items, the test split's EvalAI ranks and the val metrics (scripts/check_reference.py's
    data rows and end-to-end rows) on the released text form and on a store that mixes every form."""
    forms = list(FORMS.values())
    variants = {"text": lambda index: forms[0], "mixed": lambda index: forms[index % len(forms)]}

    def rows(fixtures: Path) -> list:
        results = data_checks(fixtures) + end_to_end_checks(fixtures)
        return [(result.name, result.passed, result.max_abs_diff) for result in results]

    expected = rows(golden_dir)
    assert expected and all(passed for _, passed, _ in expected)
    for name, form_of_image in variants.items():
        store = rewritten_store(golden_dir, tmp_path / f"{name}.lmdb", form_of_image)
        assert rows(fixture_folder_with_store(golden_dir, tmp_path / name, store)) == expected, name


# ---------------------------------------------------------------- what int() refused

REFUSED = [  # (field, stored value, fragment of the one-line error)
    ("num_boxes", "12²", "num_boxes must be an integer, got text '12²'"),
    ("num_boxes", "3.5", "num_boxes must be an integer, got text '3.5'"),
    ("num_boxes", "", "num_boxes must be an integer, got text ''"),
    ("num_boxes", b"0x10", "num_boxes must be an integer, got text '0x10'"),
    ("num_boxes", 3.5, "num_boxes must be an integer, got float 3.5"),
    ("num_boxes", True, "num_boxes must be an integer, got bool True"),
    ("num_boxes", None, "num_boxes must be an integer, got NoneType None"),
    ("num_boxes", "-4", "num_boxes must be at least 1, got -4"),
    ("image_h", "480.5", "image_h must be an integer, got text '480.5'"),
    ("image_w", "0", "image_w must be at least 1, got 0"),
    ("image_id", "9" * 30, "image_id must be in 0.."),
    ("features", "ÿÿÿÿ", "field 'features' is not base64"),
]


@pytest.mark.parametrize("field, value, fragment", REFUSED, ids=[f"{case[0]}={case[1]!r}" for case in REFUSED])
def test_what_int_refuses_is_one_line_naming_the_store_and_image(field, value, fragment, golden_dir, tmp_path):
    def form_of_image(index):
        return (lambda record: {**record, field: value}) if index == 0 else (lambda record: record)

    store = open_feature_store(rewritten_store(golden_dir, tmp_path / "features.lmdb", form_of_image))
    first = store.image_ids()[0]
    with pytest.raises(UserError) as caught:
        store.read_raw(first)
    message = str(caught.value)
    assert "\n" not in message and fragment in message, message
    assert message.startswith(f"{tmp_path / 'features.lmdb'} (image {first}): ")
    store.read_raw(store.image_ids()[1])  # the other images still read


def test_keys_in_any_form_int_reads_are_read_and_a_superscript_key_refused(golden_dir, golden_records, tmp_path):
    """The keys list as text, or with ids int() reads (b'0562944'), each record stored under its key
    as listed: every image reads as in the golden store."""
    keys, records = stored_records(golden_dir)
    for name, listed, problem in (("text", [key.decode() for key in keys], None),
                                  ("zero_padded", [b"0" + key for key in keys], None),
                                  ("superscript", [b"12\xc2\xb2", *keys[1:]], "image id 0 must be an integer")):
        path = tmp_path / f"{name}.lmdb"
        environment = lmdb.open(str(path), map_size=1 << 26)
        with environment.begin(write=True) as transaction:
            for key, record in zip(listed, records):
                transaction.put(key if isinstance(key, bytes) else key.encode(), pickle.dumps(record, protocol=3))
            transaction.put(b"keys", pickle.dumps(listed, protocol=3))
        environment.close()
        if problem is None:
            assert_same_records(records_of(open_feature_store(path)), golden_records)
        else:
            with pytest.raises(UserError, match=problem):
                open_feature_store(path)


# ---------------------------------------------------------------- importers: text numbers, file names

def test_tsv_numbers_are_read_as_int_reads_them_and_refused_as_it_refuses(tmp_path):
    image = make_image(np.random.default_rng(0), 8, 2)
    padded = tsv_line(" 8", image["features"], image["boxes"], image_w="+640", image_h="480 ")
    (tmp_path / "good.tsv").write_bytes(padded + b"\n")
    convert_features([str(tmp_path / "good.tsv")], str(tmp_path / "good.h5"), note=lambda line: None,
                     show_progress=False)
    record = open_feature_store(tmp_path / "good.h5").read_raw(8)
    assert (record["image_id"], record["image_w"], record["image_h"]) == (8, 640, 480)

    (tmp_path / "bad.tsv").write_bytes(tsv_line("8", image["features"], image["boxes"], image_w="64²") + b"\n")
    with pytest.raises(UserError, match=r"bad.tsv line 1 \(image 8\): image_w must be an integer, got text '64²'"):
        convert_features([str(tmp_path / "bad.tsv")], str(tmp_path / "bad.h5"), note=lambda line: None,
                         show_progress=False)
    assert not (tmp_path / "bad.h5").exists()


def test_npz_names_are_ids_as_int_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    folder = write_npz_folder(tmp_path / "detections", [make_image(rng, "0009", 2)], True)
    convert_features([str(folder)], str(tmp_path / "out.h5"), note=lambda line: None, show_progress=False)
    assert open_feature_store(tmp_path / "out.h5").image_ids() == [9]

    bad = write_npz_folder(tmp_path / "bad", [make_image(rng, "9²", 2)], True)
    with pytest.raises(UserError, match="9².npz: the file name must be the image id"):
        convert_features([str(bad)], str(tmp_path / "bad.h5"), note=lambda line: None, show_progress=False)


def test_the_command_line_reads_a_text_store_and_refuses_a_bad_one_in_one_line(golden_dir, tmp_path,
                                                                               single_thread_env, repo_root):
    forms = list(FORMS.values())
    text = rewritten_store(golden_dir, tmp_path / "text.lmdb", lambda index: forms[0])
    bad = rewritten_store(golden_dir, tmp_path / "bad.lmdb",
                          lambda index: (lambda record: {**record, "num_boxes": "1²"}) if index == 3 else forms[0])
    command = [sys.executable, str(repo_root / "preprocessing" / "convert_features.py"), "-quiet", "-input"]
    done = subprocess.run([*command, str(text), "-output", str(tmp_path / "text.h5")], capture_output=True,
                          text=True, env=single_thread_env)
    assert done.returncode == 0, done.stderr
    assert open_feature_store(tmp_path / "text.h5").image_ids() == open_feature_store(text).image_ids()

    failed = subprocess.run([*command, str(bad), "-output", str(tmp_path / "bad.h5")], capture_output=True,
                            text=True, env=single_thread_env)
    fourth_image = open_feature_store(text).image_ids()[3]
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [f"error: {bad} (image {fourth_image}): num_boxes must be an "
                                                  "integer, got text '1²'"]
    assert not (tmp_path / "bad.h5").exists()
