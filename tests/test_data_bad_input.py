"""Bad data files: each is one clear UserError line naming the file, never a traceback or silent loss."""
import json
import pickle
import shutil

import lmdb
import numpy as np
import pytest
import torch

from dataloader.datasets import VisdialDataset
from dataloader.feature_formats import open_image_features
from dataloader.feature_store import convert_lmdb_to_hdf5, open_feature_store, write_lmdb_feature_store
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import load_visdial_json
from preprocessing import convert_features
from preprocessing.pre_process_visdial import parse_args, preprocess
from tests import hostile_inputs as hostile
from utils.errors import UserError, run_cli
from utils.evaluation.score_files import FORMAT as SCORE_FORMAT
from utils.evaluation.score_files import VERSION as SCORE_VERSION
from utils.evaluation.score_files import read_score_file
from utils.outputs import Output, TEMPORARY_MARK, check_outputs


@pytest.fixture(scope="module")
def tokenizer(golden_dir):
    return load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt"))


def raises_one_line(call, *fragments):
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, (fragment, message)
    return message


def edited_val(golden_dir, tmp_path, edit):
    """A copy of the processed val file with `edit(content)` applied."""
    content = json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())
    edit(content)
    path = tmp_path / "val.json"
    path.write_text(json.dumps(content))
    return path


def test_missing_file(tmp_path):
    raises_one_line(lambda: load_visdial_json(tmp_path / "absent.json", "val"), tmp_path / "absent.json",
                    "file not found")


def test_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [1, 2')
    raises_one_line(lambda: load_visdial_json(path, "train"), path, "not valid JSON")


def test_json_without_dialogs(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"data": {"questions": []}}))
    raises_one_line(lambda: load_visdial_json(path, "train"), path, "no data.dialogs")


@pytest.mark.parametrize("field, fragment", [("question", "question index 9999 is out of range"),
                                             ("answer", "answer index 9999 is out of range")])
def test_index_out_of_range(golden_dir, tmp_path, field, fragment):
    def edit(content):
        content["data"]["dialogs"][1]["dialog"][3][field] = 9999

    path = edited_val(golden_dir, tmp_path, edit)
    raises_one_line(lambda: load_visdial_json(path, "val"), path, "round 4", fragment)


def test_round_with_99_options(golden_dir, tmp_path):
    def edit(content):
        content["data"]["dialogs"][0]["dialog"][2]["answer_options"].pop(50)

    path = edited_val(golden_dir, tmp_path, edit)
    raises_one_line(lambda: load_visdial_json(path, "val"), path, "round 3", "99 answer options")


@pytest.mark.parametrize("edit, fragment", [
    (lambda annotations: annotations.pop(1), "2 annotations for 3 dialogs"),
    (lambda annotations: annotations.reverse(), "annotations must follow the dialog order"),
])
def test_val_dense_annotations_missing_or_reordered(golden_dir, tmp_path, tokenizer, edit, fragment):
    processed = golden_dir / "visdial_processed"
    annotations = json.loads((processed / "val_dense_annotations_processed.json").read_text())
    edit(annotations)
    path = tmp_path / "val_dense.json"
    path.write_text(json.dumps(annotations))
    raises_one_line(lambda: VisdialDataset("val", processed / "val_processed.json",
                                           golden_dir / "visdial_img_feat.lmdb", tokenizer, path), path, fragment)


def test_preprocessing_refuses_reordered_val_annotations(golden_dir, tmp_path):
    raw = golden_dir / "visdial_raw"
    annotations = json.loads((raw / "visdial_1.0_val_dense_annotations.json").read_text())
    annotations.reverse()
    path = tmp_path / "val_dense.json"
    path.write_text(json.dumps(annotations))
    argv = [f"-visdial_{split}={raw / f'visdial_1.0_{split}.json'}" for split in ("train", "val", "test")]
    argv += [f"-visdial_train_ndcg={raw / 'visdial_1.0_train_dense_annotations.json'}", f"-visdial_val_ndcg={path}",
             f"-vocab={golden_dir / 'bert-base-uncased-vocab.txt'}", "-quiet"]
    argv += [f"-save_path_{name}={tmp_path / name}.json" for name in ("train", "val", "test", "val_ndcg", "train_ndcg")]
    raises_one_line(lambda: preprocess(parse_args(argv)), path, "annotations must follow the dialog order")
    assert not [path for path in tmp_path.iterdir() if TEMPORARY_MARK in path.name]
    assert not (tmp_path / "train.json").exists()


def test_image_absent_from_feature_store(golden_dir, tmp_path, tokenizer):
    def edit(content):
        content["data"]["dialogs"][2]["image_id"] = 424242

    path = edited_val(golden_dir, tmp_path, edit)
    store = golden_dir / "visdial_img_feat.lmdb"
    annotations = golden_dir / "visdial_processed" / "val_dense_annotations_processed.json"
    raises_one_line(lambda: VisdialDataset("val", path, store, tokenizer, annotations),
                    store, "no features for image(s) 424242", path)


@pytest.fixture
def store_copy(golden_dir, tmp_path):
    copy = tmp_path / "features.lmdb"
    shutil.copytree(golden_dir / "visdial_img_feat.lmdb", copy)
    for file in copy.iterdir():
        file.chmod(0o644)
    return copy


def test_truncated_lmdb(store_copy):
    data = store_copy / "data.mdb"
    data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])
    raises_one_line(lambda: open_feature_store(store_copy), store_copy, "truncated")


def test_corrupt_lmdb(store_copy):
    data = store_copy / "data.mdb"
    data.write_bytes(np.random.default_rng(0).bytes(data.stat().st_size))
    raises_one_line(lambda: open_feature_store(store_copy), store_copy, "not a readable LMDB feature store")


def test_truncated_and_corrupt_hdf5(golden_dir, tmp_path):
    path = tmp_path / "features.h5"
    convert_lmdb_to_hdf5(str(golden_dir / "visdial_img_feat.lmdb"), str(path), show_progress=False)
    path.write_bytes(path.read_bytes()[:4096])
    raises_one_line(lambda: open_feature_store(path), path, "not a readable HDF5 feature store")
    path.write_bytes(b"garbage" * 100)
    raises_one_line(lambda: open_feature_store(path), path, "not an HDF5 file")


def write_raw_records(path, records: dict):
    environment = lmdb.open(str(path), map_size=1 << 26)
    with environment.begin(write=True) as transaction:
        for key, value in records.items():
            transaction.put(key, pickle.dumps(value, protocol=3))
    environment.close()


@pytest.mark.parametrize("record, fragment", [
    ([1, 2, 3], "record is a list, expected a dict"),
    ({"image_id": 5, "image_h": 10}, "record lacks field(s) image_w, num_boxes, features, boxes, cls_prob"),
    ({"image_id": 5, "image_h": 10, "image_w": 10, "num_boxes": 2, "features": b"AAAA", "boxes": b"",
      "cls_prob": b""}, "field 'features' holds 3 bytes, expected 16384"),
])
def test_pickle_record_not_the_expected_dict(tmp_path, record, fragment):
    path = tmp_path / "bad.lmdb"
    write_raw_records(path, {b"keys": [b"5"], b"5": record})
    store = open_feature_store(path)
    raises_one_line(lambda: store[5], path, "image 5", fragment)


def test_writer_refuses_wrong_shapes(tmp_path):
    record = dict(image_id=1, image_h=4, image_w=4, num_boxes=2, features=np.zeros((3, 2048), np.float32),
                  boxes=np.zeros((2, 4), np.float32), cls_prob=np.zeros((2, 1601), np.float32))
    raises_one_line(lambda: write_lmdb_feature_store(tmp_path / "out.lmdb", [record]), "image 1",
                    "'features' has shape [3, 2048], expected [2, 2048]")


# ---- what libraries raise at the readers: one line naming the file ------------------------------------------

@pytest.mark.parametrize("page, fragments", [
    (2, ["LMDB read failed", "MDB_CORRUPTED"]),               # the page of the b'keys' record
    (3, ["(image 492072): LMDB read failed", "MDB_CORRUPTED"]),  # a page of an image's record
], ids=["keys page", "record page"])
def test_corrupted_lmdb_pages(store_copy, page, fragments):
    store = hostile.corrupted_pages(store_copy, [page])

    def read_every_image():
        features = open_feature_store(store)
        for image_id in features.image_ids():
            features[image_id]
    raises_one_line(read_every_image, store, *fragments)


@pytest.mark.parametrize("group", ["features", "image_id", "boxes", "image_w"])
def test_an_hdf5_dataset_that_is_a_group(golden_dir, tmp_path, group, capsys):
    records = [hostile.decoded(record) for record in hostile.golden_records(golden_dir)]
    path = hostile.starter_hdf5(tmp_path / "starter.h5", records, groups=(group,))
    raises_one_line(lambda: open_image_features(path, note=lambda line: None), path,
                    f"'{group}' is a group, expected a dataset")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: convert_features.main(["-input", str(path), "-output", str(tmp_path / "out.h5"), "-quiet"]))
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert exit_info.value.code == 2 and len(error) == 1 and str(path) in error[0] and "is a group" in error[0]
    assert sorted(item.name for item in tmp_path.iterdir()) == ["starter.h5"]


def test_the_starter_hdf5_with_datasets_is_read(golden_dir, tmp_path):
    records = [hostile.decoded(record) for record in hostile.golden_records(golden_dir)]
    features = open_image_features(hostile.starter_hdf5(tmp_path / "starter.h5", records), note=lambda line: None)
    assert features.image_ids() == [record["image_id"] for record in records]
    first = features[records[0]["image_id"]]
    assert np.array_equal(first["features"][1:], records[0]["features"])


@pytest.mark.parametrize("key", ["scores", "image_id", "round_id", "option_index"])
def test_a_sparse_tensor_in_a_score_file(tmp_path, key):
    content = {"format": SCORE_FORMAT, "version": SCORE_VERSION, "split": "val",
               "scores": torch.rand(2, 3, 4), "image_id": torch.arange(2),
               "round_id": torch.arange(1, 4).expand(2, 3).contiguous(),
               "option_index": torch.arange(4).expand(2, 3, 4).contiguous()}
    path = tmp_path / "scores.pt"
    torch.save(content, path)
    assert read_score_file(path)["split"] == "val"  # the dense file is read
    torch.save({**content, key: content[key].to_sparse()}, path)
    raises_one_line(lambda: read_score_file(path), path, f"{key} is a tensor of layout torch.sparse_coo, "
                                                         "expected a dense one")


def test_a_symbolic_link_loop_as_an_input(tmp_path):
    loop = hostile.symlink_loop(tmp_path, "val.json")
    raises_one_line(lambda: load_visdial_json(loop, "val"), loop, "Too many levels of symbolic links")
    raises_one_line(lambda: open_feature_store(loop), loop, "Too many levels of symbolic links")
    raises_one_line(lambda: open_feature_store(tmp_path / "nothing"), "nothing: image feature store not found")
    raises_one_line(lambda: open_feature_store(tmp_path), tmp_path / "data.mdb", "LMDB data file not found")
    raises_one_line(lambda: check_outputs([Output("-out", tmp_path / "out.json")], {"-visdial_val": loop}),
                    loop, "-visdial_val: cannot resolve it (symbolic links form a loop)")
