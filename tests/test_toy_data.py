"""The toy VisDial generator: format, determinism, vocab, config and an image-grounded signal."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import BertTokenizer

from preprocessing.make_toy_data import COLOURS, SHAPES, make_toy_data
from utils.errors import UserError
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import encode_texts, load_tokenizer

SMALL = dict(train_dialogs=12, val_dialogs=5, test_dialogs=8, dense_train_fraction=0.5)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    return make_toy_data(tmp_path_factory.mktemp("toy"), seed=3, write_hdf5=True, **SMALL)


def load(path: Path):
    return json.loads(path.read_text())


def all_texts(toy) -> list:
    texts = []
    for split in ("train", "val", "test"):
        data = load(toy[split])["data"]
        texts += data["questions"] + data["answers"] + [d["caption"] for d in data["dialogs"]]
    return texts


def test_train_and_val_have_ten_answered_rounds_of_100_distinct_options(toy):
    for split, count in (("train", 12), ("val", 5)):
        content = load(toy[split])
        assert content["version"] == "1.0" and content["split"] == split
        data = content["data"]
        assert len(data["dialogs"]) == count
        for dialog in data["dialogs"]:
            assert len(dialog["dialog"]) == 10
            for rnd in dialog["dialog"]:
                options = rnd["answer_options"]
                assert len(options) == 100 and len(set(options)) == 100
                assert options[rnd["gt_index"]] == rnd["answer"]
                assert data["questions"][rnd["question"]].endswith("?")


def test_test_dialogs_end_with_an_unanswered_round(toy):
    dialogs = load(toy["test"])["data"]["dialogs"]
    lengths = [len(d["dialog"]) for d in dialogs]
    assert all(1 <= n <= 10 for n in lengths) and len(set(lengths)) > 1
    for dialog in dialogs:
        *history, last = dialog["dialog"]
        assert set(last) == {"question", "answer_options"} and len(last["answer_options"]) == 100
        assert all(set(rnd) == {"question", "answer"} for rnd in history)


def test_image_ids_are_unique_and_all_in_the_feature_stores(toy):
    ids = [d["image_id"] for split in ("train", "val", "test") for d in load(toy[split])["data"]["dialogs"]]
    assert len(ids) == len(set(ids)) == 25
    lmdb_store, hdf5_store = open_feature_store(toy["features"]), open_feature_store(toy["features_hdf5"])
    assert sorted(lmdb_store.image_ids()) == sorted(hdf5_store.image_ids()) == sorted(ids)
    record, same = lmdb_store[ids[0]], hdf5_store[ids[0]]
    assert record["features"].shape == (11, 2048) and record["num_boxes"] == 11
    np.testing.assert_array_equal(record["features"], same["features"])
    np.testing.assert_allclose(record["cls_prob"].sum(1), 1.0, atol=1e-5)


def test_dense_annotations_rate_paraphrases_1_and_wrong_answers_0(toy):
    val = load(toy["val"])["data"]
    val_dense = load(toy["val_dense"])
    assert [a["image_id"] for a in val_dense] == [d["image_id"] for d in val["dialogs"]]
    train = load(toy["train"])["data"]
    train_dense = load(toy["train_dense"])
    assert len(train_dense) == 6
    train_by_id = {d["image_id"]: d for d in train["dialogs"]}
    for annotations, data, key, by_id in ((val_dense, val, "gt_relevance", None),
                                          (train_dense, train, "relevance", train_by_id)):
        for position, annotation in enumerate(annotations):
            dialog = by_id[annotation["image_id"]] if by_id else data["dialogs"][position]
            rnd = dialog["dialog"][annotation["round_id"] - 1]
            relevance = annotation[key]
            assert len(relevance) == 100 and set(relevance) <= {0.0, 0.5, 1.0}
            assert relevance[rnd["gt_index"]] == 1.0
            assert relevance.count(1.0) == 3, "the right answer has exactly two paraphrases"
            right = {data["answers"][o] for o, r in zip(rnd["answer_options"], relevance) if r == 1.0}
            assert data["answers"][rnd["answer"]] in right


def test_every_phrasing_of_the_answer_type_is_an_option(toy):
    """Language alone cannot single out the answer: all values of its kind are options."""
    data = load(toy["val"])["data"]
    for dialog in data["dialogs"]:
        for rnd in dialog["dialog"]:
            question = data["questions"][rnd["question"]]
            options = {data["answers"][o] for o in rnd["answer_options"]}
            if question.startswith("what color is the"):
                assert set(COLOURS) <= options
                assert {f"it is {c}" for c in COLOURS} <= options
            if question.startswith("what shape is the"):
                assert set(SHAPES) <= options and {f"a {s}" for s in SHAPES} <= options


def test_answers_are_written_in_the_image(toy):
    """The right colour of 'what color is the <shape>' is the colour of that shape's region."""
    store = open_feature_store(toy["features"])
    data = load(toy["val"])["data"]
    checked = 0
    for dialog in data["dialogs"]:
        classes = store[dialog["image_id"]]["cls_prob"][1:].argmax(1)
        objects = {(int(c) - 1) // len(COLOURS): COLOURS[(int(c) - 1) % len(COLOURS)]
                   for c in classes if 1 <= c <= len(SHAPES) * len(COLOURS)}
        for rnd in dialog["dialog"]:
            question, answer = data["questions"][rnd["question"]], data["answers"][rnd["answer"]]
            if question.startswith("what color is the"):
                shape = question.split()[4]
                assert objects[SHAPES.index(shape)] == answer.split()[-1]
                checked += 1
    assert checked > 0


def test_regions_of_the_same_object_kind_share_a_feature_direction(toy):
    store = open_feature_store(toy["features"])
    features, classes = [], []
    for image_id in store.image_ids():
        record = store[image_id]
        features.append(record["features"][1:])
        classes.append(record["cls_prob"][1:].argmax(1))
    features, classes = np.concatenate(features), np.concatenate(classes)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    same = classes[:, None] == classes[None, :]
    off_diagonal = ~np.eye(len(classes), dtype=bool)
    assert similarity[same & off_diagonal].min() > 0.3
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.3


def test_bert_tokenizer_covers_every_word_with_bert_special_ids(toy, golden_dir):
    vocab = toy["vocab"].read_text().splitlines()
    assert vocab[:999] == (golden_dir / "bert-base-uncased-vocab.txt").read_text().splitlines()[:999]
    tokenizer = BertTokenizer(str(toy["vocab"]), do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) \
        == [0, 100, 101, 102, 103]
    texts = all_texts(toy)
    expected = [[vocab.index(word) for word in text.split()] for text in texts]
    assert [tokenizer.encode(text, add_special_tokens=False) for text in texts] == expected
    assert encode_texts(load_tokenizer(str(toy["vocab"])), texts) == expected
    assert 100 not in tokenizer.encode("zebra", add_special_tokens=False), "unseen words split into letters"


def test_model_config_has_the_reference_keys_and_the_vocab_size(toy, golden_dir):
    config = load(toy["model_config"])
    assert list(config) == list(load(golden_dir / "model_config.json"))
    assert config["vocab_size"] == len(toy["vocab"].read_text().splitlines())


def test_shipped_toy_config_is_what_the_generator_writes(tmp_path, repo_root):
    paths = make_toy_data(tmp_path, seed=0, train_dialogs=2, val_dialogs=1, test_dialogs=1)
    assert load(repo_root / "config" / "toy_model.json") == load(paths["model_config"])


def test_same_seed_same_files_other_seed_other_files(toy, tmp_path):
    again = make_toy_data(tmp_path / "again", seed=3, **SMALL)
    other = make_toy_data(tmp_path / "other", seed=4, **SMALL)
    for name in ("train", "val", "test", "train_dense", "val_dense", "vocab", "model_config"):
        assert again[name].read_bytes() == toy[name].read_bytes(), name
    assert other["val"].read_bytes() != toy["val"].read_bytes()
    image_id = load(toy["val"])["data"]["dialogs"][0]["image_id"]
    np.testing.assert_array_equal(open_feature_store(again["features"])[image_id]["features"],
                                  open_feature_store(toy["features"])[image_id]["features"])


def test_bad_sizes_are_user_errors(tmp_path, repo_root):
    with pytest.raises(UserError, match="max_objects"):
        make_toy_data(tmp_path, min_objects=2, max_objects=5)
    result = subprocess.run([sys.executable, str(repo_root / "preprocessing" / "make_toy_data.py"),
                             "-out", str(tmp_path), "-val_dialogs", "0"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: -train_dialogs, -val_dialogs and -test_dialogs must be at least 1"]
