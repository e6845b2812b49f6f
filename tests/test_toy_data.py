"""The toy VisDial generator: format, question types, answers derivable from the image, caption and
history, hard negatives first, determinism, vocab, config and bad arguments."""
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from transformers import BertTokenizer

from dataloader.question_types import load_question_types
from preprocessing.make_toy_data import (COLOURS, DAYS, NUMBER_WORDS, QUESTION_TYPES, SCENE_PROPERTIES, SHAPES,
                                         VALUES, make_toy_data)
from utils.errors import UserError
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import encode_texts, load_tokenizer

SMALL = dict(train_dialogs=12, val_dialogs=6, test_dialogs=8, dense_train_fraction=0.5)
NUM_OBJECT_CLASSES = len(SHAPES) * len(COLOURS)
# one-hop question -> the values of the scene property it asks about
ONE_HOP = {question: values for question, _, values, _ in SCENE_PROPERTIES.values()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    return make_toy_data(tmp_path_factory.mktemp("toy"), seed=3, write_hdf5=True, **SMALL)


def load(path: Path):
    return json.loads(path.read_text())


def rounds_of(toy, split: str):
    """(dialog, round number, question, answer or None, option texts) of every round of a split."""
    data = load(toy[split])["data"]
    for dialog in data["dialogs"]:
        for number, turn in enumerate(dialog["dialog"], start=1):
            answer = data["answers"][turn["answer"]] if "answer" in turn else None
            options = [data["answers"][o] for o in turn.get("answer_options", [])]
            yield dialog, number, data["questions"][turn["question"]], answer, options


def scene_of(store, image_id: int) -> dict:
    """What the image shows, read back from the detector classes of its regions (independent of
    the generator's scene objects): object (shape, colour) pairs and, by one-hop question, the
    scene property's value (the background class holds them as base-6 digits)."""
    classes = store[image_id]["cls_prob"][1:].argmax(1)
    objects = [(SHAPES[(c - 1) // len(COLOURS)], COLOURS[(c - 1) % len(COLOURS)])
               for c in classes if 1 <= c <= NUM_OBJECT_CLASSES]
    background = {int(c) - 1 - NUM_OBJECT_CLASSES for c in classes if c > NUM_OBJECT_CLASSES}
    assert len(background) == 1
    digits, properties = background.pop(), {}
    for question, values in reversed(ONE_HOP.items()):
        digits, digit = divmod(digits, len(values))
        properties[question] = values[digit]
    return {"objects": objects, "properties": properties}


def test_train_and_val_have_ten_answered_rounds_of_100_distinct_options(toy):
    for split, count in (("train", 12), ("val", 6)):
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


def test_every_round_has_its_question_type(toy):
    for split in ("train", "val", "test"):
        types = load_question_types(toy[f"{split}_question_types"])
        assert list(types.descriptions) == list(QUESTION_TYPES)
        rounds = list(rounds_of(toy, split))
        assert len(types.by_round) == len(rounds)
        per_dialog = {}
        for dialog, number, question, _, _ in rounds:
            name = types.of(dialog["image_id"], number)
            per_dialog.setdefault(dialog["image_id"], []).append(name)
            expected = ("caption" if question.startswith("what day") else
                        "history" if question.startswith("what did i") else
                        "one_hop" if question in ONE_HOP else
                        "binding" if question.startswith(("what color is the", "what shape is the")) else
                        "counting" if question.startswith("how many") else "existence")
            assert name == expected, question
        for names in per_dialog.values():
            assert names[0] == "caption"
            assert all(not (a == b == "history") for a, b in zip(names, names[1:]))
            if split != "test":
                assert Counter(names) == {"caption": 1, "one_hop": 2, "binding": 2, "counting": 1,
                                          "existence": 2, "history": 2}


def test_answers_are_told_by_the_image_the_caption_or_the_previous_round(toy):
    """Every ground truth follows from what its type says answers it: the regions' detector
    classes, the caption, or the previous question."""
    store = open_feature_store(toy["features"])
    previous = {}
    for dialog, number, question, answer, _ in rounds_of(toy, "val"):
        scene = scene_of(store, dialog["image_id"])
        shapes = [shape for shape, _ in scene["objects"]]
        colour_of = dict(scene["objects"])
        words = question.split()
        if question in ONE_HOP:
            assert answer == scene["properties"][question]
        elif question.startswith("what color is the"):
            assert answer == colour_of[words[4]]
        elif question.startswith("what shape is the"):
            assert colour_of[answer] == words[4]
        elif question.startswith("how many"):
            assert answer == NUMBER_WORDS[len(scene["objects"])]
        elif question.startswith("is there"):
            assert answer == ("yes" if words[3] in shapes else "no")
        elif question.startswith("what day"):
            assert answer in DAYS and dialog["caption"].endswith(answer)
        else:
            assert question == "what did i just ask about ?"
            asked = previous[dialog["image_id"]]
            expected = {"what day was it drawn ?": "the day", "what color is the background ?": "the background color",
                        "what pattern is the background ?": "the background pattern",
                        "what time of day is it ?": "the time of day", "what is the weather like ?": "the weather",
                        "how many shapes are there ?": "the number of shapes"}.get(asked)
            if expected is None:   # what shape is the <colour> one ? / what color is the <shape> ? / is there a <shape> ?
                expected = f"the {asked.split()[4]} one" if asked.startswith("what shape") else f"the {asked.split()[-2]}"
            assert answer == expected, (asked, answer)
        previous[dialog["image_id"]] = question


def says(text: str, answer: str) -> bool:
    """Whether `text` is a phrasing of `answer` ("it is red" of "red", "3" of "three")."""
    return f" {answer} " in f" {text} " or (answer in NUMBER_WORDS and text == str(NUMBER_WORDS.index(answer)))


def values_asked_by(question: str) -> tuple:
    """Every value the answer to `question` can take."""
    if question in ONE_HOP:
        return ONE_HOP[question]
    starts = {"what color is the": COLOURS, "what shape is the": SHAPES, "how many": NUMBER_WORDS[1:],
              "is there": ("yes", "no"), "what day": DAYS, "what did i": VALUES["subject"]}
    return next(values for start, values in starts.items() if question.startswith(start))


def test_ground_truth_is_the_bare_value_and_hard_negatives_come_first(toy):
    """One deterministic phrasing per answer. The first wrong options (those base training draws
    its negatives from) are the other values of the same kind, then the right answer's two
    paraphrases mixed with one bare value of every other kind."""
    kinds = list(VALUES.values())
    seen = Counter()
    for _, _, question, answer, options in rounds_of(toy, "train"):
        values = values_asked_by(question)
        assert answer in values, (question, answer)
        wrong = [option for option in options if option != answer]
        hard, medium = wrong[:len(values) - 1], wrong[len(values) - 1:len(values) - 1 + 2 + len(kinds) - 1]
        assert set(hard) == set(values) - {answer}, question
        paraphrases = [text for text in medium if says(text, answer)]
        other_kinds = [next(i for i, kind in enumerate(kinds) if text in kind) for text in medium if text not in paraphrases]
        assert len(paraphrases) == 2 and sorted(other_kinds) == [i for i, kind in enumerate(kinds) if kind != values]
        seen[values[0]] += 1
    assert len(seen) == len(kinds)


def test_dense_annotations_rate_paraphrases_1_and_other_objects_0_5(toy):
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
            assert relevance[rnd["gt_index"]] == 1.0 and relevance.count(1.0) == 3
            answer = data["answers"][rnd["answer"]]
            right = [data["answers"][o] for o, r in zip(rnd["answer_options"], relevance) if r == 1.0]
            assert all(says(text, answer) for text in right)
            if data["questions"][rnd["question"]].startswith(("what color is the", "what shape is the")) \
                    and "background" not in data["questions"][rnd["question"]]:
                assert 0.5 in relevance          # another object's colour / shape


def test_image_ids_are_unique_and_all_in_the_feature_stores(toy):
    ids = [d["image_id"] for split in ("train", "val", "test") for d in load(toy[split])["data"]["dialogs"]]
    assert len(ids) == len(set(ids)) == 26
    lmdb_store, hdf5_store = open_feature_store(toy["features"]), open_feature_store(toy["features_hdf5"])
    assert sorted(lmdb_store.image_ids()) == sorted(hdf5_store.image_ids()) == sorted(ids)
    record, same = lmdb_store[ids[0]], hdf5_store[ids[0]]
    assert record["features"].shape == (7, 2048) and record["num_boxes"] == 7
    np.testing.assert_array_equal(record["features"], same["features"])
    np.testing.assert_allclose(record["cls_prob"].sum(1), 1.0, atol=1e-5)


def test_regions_of_the_same_kind_share_a_feature_direction(toy):
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
    assert similarity[same & off_diagonal].min() > 0.6
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.4


def test_question_types_and_rounds_restrict_the_dialogs(tmp_path):
    paths = make_toy_data(tmp_path, seed=1, train_dialogs=20, val_dialogs=3, test_dialogs=2,
                          question_types=["one_hop"], rounds=1)
    data = load(paths["train"])["data"]
    assert {dialog["caption"] for dialog in data["dialogs"]} == {"a drawing"}
    assert all(len(dialog["dialog"]) == 1 for dialog in data["dialogs"])
    assert set(data["questions"]) <= set(ONE_HOP) and len(set(data["questions"])) > 1
    types = load_question_types(paths["train_question_types"])
    assert list(types.descriptions) == ["one_hop"] and set(types.by_round.values()) == {"one_hop"}


def test_whole_image_dialogs_are_more_train_dialogs_of_one_hop_questions(tmp_path):
    paths = make_toy_data(tmp_path, seed=2, train_dialogs=6, whole_image_dialogs=4, val_dialogs=2, test_dialogs=1)
    train = load(paths["train"])["data"]
    types = load_question_types(paths["train_question_types"])
    kinds = [{types.of(dialog["image_id"], number) for number in range(1, len(dialog["dialog"]) + 1)}
             for dialog in train["dialogs"]]
    assert len(kinds) == 10 and kinds.count({"one_hop"}) == 4
    whole_image = [dialog for dialog, kind in zip(train["dialogs"], kinds) if kind == {"one_hop"}]
    assert all(len(dialog["dialog"]) == len(ONE_HOP) and dialog["caption"] == "a drawing" for dialog in whole_image)
    assert len(load(paths["val"])["data"]["dialogs"]) == 2


def test_binding_dialogs_are_more_train_dialogs_that_ask_each_object_once(tmp_path):
    """After the set without them, which they leave byte for byte as it is (features included)."""
    paths = make_toy_data(tmp_path / "with", seed=2, train_dialogs=6, whole_image_dialogs=2, binding_dialogs=5,
                          val_dialogs=2, test_dialogs=1)
    without = make_toy_data(tmp_path / "without", seed=2, train_dialogs=6, whole_image_dialogs=2, val_dialogs=2,
                            test_dialogs=1)
    for name in ("val", "test", "train_dense", "val_dense", "val_question_types", "vocab", "model_config"):
        assert paths[name].read_bytes() == without[name].read_bytes(), name
    train, store = load(paths["train"])["data"], open_feature_store(paths["features"])
    earlier = load(without["train"])["data"]
    assert [dialog["image_id"] for dialog in train["dialogs"][:8]] == [d["image_id"] for d in earlier["dialogs"]]
    other_store = open_feature_store(without["features"])
    for dialog in earlier["dialogs"] + load(without["val"])["data"]["dialogs"]:
        assert all(np.array_equal(value, store[dialog["image_id"]][key])
                   for key, value in other_store[dialog["image_id"]].items())
    types = load_question_types(paths["train_question_types"])
    kinds = [{types.of(dialog["image_id"], number) for number in range(1, len(dialog["dialog"]) + 1)}
             for dialog in train["dialogs"]]
    assert len(kinds) == 13 and kinds[8:] == [{"binding"}] * 5 and {"binding"} not in kinds[:8]
    for dialog, kind in zip(train["dialogs"], kinds):
        if kind != {"binding"}:
            continue
        objects = scene_of(store, dialog["image_id"])["objects"]
        asked = [train["questions"][turn["question"]] for turn in dialog["dialog"]]
        named = [next(obj for obj in objects if question.split()[4] in obj) for question in asked]
        assert sorted(named) == sorted(objects), "every object asked about once, by its shape or its colour"
        assert dialog["caption"] == "a drawing"
        for question, obj, turn in zip(asked, named, dialog["dialog"]):
            attribute = 1 if question.startswith("what color") else 0
            assert train["answers"][turn["answer"]] == obj[attribute], question
    image_ids = [dialog["image_id"] for split in ("train", "val", "test")
                 for dialog in load(paths[split])["data"]["dialogs"]]
    assert len(set(image_ids)) == len(image_ids) == 16


def test_object_regions_are_every_object_of_the_image(toy):
    store = open_feature_store(toy["features"])
    types = load_question_types(toy["val_question_types"])
    assert types.objects.keys() == types.regions.keys()
    for (image_id, _), regions in types.objects.items():
        classes = store[image_id]["cls_prob"].argmax(1)
        assert list(regions) == [region for region, c in enumerate(classes) if 1 <= c <= NUM_OBJECT_CLASSES]


def test_bert_tokenizer_covers_every_word_with_bert_special_ids(toy, golden_dir):
    vocab = toy["vocab"].read_text().splitlines()
    assert vocab[:999] == (golden_dir / "bert-base-uncased-vocab.txt").read_text().splitlines()[:999]
    tokenizer = BertTokenizer(str(toy["vocab"]), do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) \
        == [0, 100, 101, 102, 103]
    texts = [text for split in ("train", "val", "test") for text in
             load(toy[split])["data"]["questions"] + load(toy[split])["data"]["answers"]
             + [d["caption"] for d in load(toy[split])["data"]["dialogs"]]]
    expected = [[vocab.index(word) for word in text.split()] for text in texts]
    assert [tokenizer.encode(text, add_special_tokens=False) for text in texts] == expected
    assert encode_texts(load_tokenizer(str(toy["vocab"])), texts) == expected
    assert 100 not in tokenizer.encode("zebra", add_special_tokens=False), "unseen words split into letters"


def test_model_config_has_the_reference_keys_and_the_vocab_size(toy, golden_dir):
    config = load(toy["model_config"])
    assert list(config) == list(load(golden_dir / "model_config.json"))
    assert config["vocab_size"] == len(toy["vocab"].read_text().splitlines())


def test_shipped_toy_config_is_what_the_generator_writes(tmp_path, repo_root):
    shipped = load(repo_root / "config" / "toy_model.json")
    paths = make_toy_data(tmp_path, seed=5, train_dialogs=2, val_dialogs=1, test_dialogs=1,
                          hidden_size=shipped["hidden_size"])
    assert shipped == load(paths["model_config"])


def test_same_seed_same_files_other_seed_other_files(toy, tmp_path):
    again = make_toy_data(tmp_path / "again", seed=3, **SMALL)
    other = make_toy_data(tmp_path / "other", seed=4, **SMALL)
    for name in ("train", "val", "test", "train_dense", "val_dense", "val_question_types", "vocab", "model_config"):
        assert again[name].read_bytes() == toy[name].read_bytes(), name
    assert other["val"].read_bytes() != toy["val"].read_bytes()
    image_id = load(toy["val"])["data"]["dialogs"][0]["image_id"]
    np.testing.assert_array_equal(open_feature_store(again["features"])[image_id]["features"],
                                  open_feature_store(toy["features"])[image_id]["features"])


@pytest.mark.parametrize("arguments, message", [
    (dict(min_objects=2, max_objects=6), "-min_objects/-max_objects must satisfy 2 <= min <= max <= 5"),
    (dict(val_dialogs=0), "-train_dialogs, -val_dialogs and -test_dialogs must be at least 1"),
    (dict(noise=float("nan")), "-noise must be a finite number >= 0, got nan"),
    (dict(image_signal=float("inf")), "-image_signal must be a finite number >= 0, got inf"),
    (dict(question_types=["one_hop", "colour"]), "-question_types: unknown type colour"),
    (dict(question_types=["history"]), "history questions need a round of another type"),
    (dict(whole_image_dialogs=-1), "-whole_image_dialogs must be at least 0, got -1"),
    (dict(binding_dialogs=-2), "-binding_dialogs must be at least 0, got -2"),
    (dict(train_dialogs="40"), "train_dialogs must be int, got '40'"),
    (dict(seed=True), "seed must be int, got True"),
    (dict(noise="0.1"), "noise must be float, got '0.1'"),
    (dict(draw_images=1), "draw_images must be bool, got 1"),
    (dict(question_types="binding"), "question_types must be a sequence of type names, got 'binding'"),
])
def test_bad_arguments_are_user_errors_before_anything_is_written(tmp_path, arguments, message):
    with pytest.raises(UserError, match=re.escape(message)):
        make_toy_data(tmp_path / "toy", **arguments)
    assert list(tmp_path.iterdir()) == []



def test_numbers_of_any_numeric_type_are_accepted(tmp_path):
    paths = make_toy_data(tmp_path / "toy", **{**SMALL, "seed": np.int64(2), "noise": 0, "image_signal": np.float32(1)})
    assert paths["val"].is_file()


# Canonical colours (CSS named colours), independent of the generator's palette: a drawn pixel is
# the colour of the nearest of them.
CANONICAL_RGB = {
    "red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0),
    "purple": (128, 0, 128), "orange": (255, 165, 0), "white": (255, 255, 255), "black": (0, 0, 0),
    "gray": (128, 128, 128), "pink": (255, 192, 203), "brown": (165, 42, 42), "beige": (245, 245, 220),
}
# The share of its box a shape fills: square 1, ellipse pi/4, triangle and diamond 1/2, a
# five-pointed star with inner corners at 0.4 of the outer radius 10 * (1/2) * R * r * sin(36 deg)
# of the box (R = 1/2, r = 1/5 of its sides).
FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "diamond": 0.5, "star": 0.5 * np.sin(np.pi / 5)}


def colour_name(pixel) -> str:
    return min(CANONICAL_RGB, key=lambda name: sum((int(a) - b) ** 2 for a, b in zip(pixel, CANONICAL_RGB[name])))


def overlaps(box, other) -> bool:
    return not (box[2] < other[0] or other[2] < box[0] or box[3] < other[1] or other[3] < box[1])


def test_pictures_show_the_background_and_each_object_s_shape_and_colour_in_its_box(toy):
    """Every val and test picture against what its feature record says (the detector classes, read
    back independently of the generator): the background's colour and pattern outside the boxes,
    each object's colour in its box and, for objects clear of other boxes, its shape."""
    from PIL import Image

    store = open_feature_store(toy["features"])
    shapes_checked = set()
    for split in ("val", "test"):
        for dialog in load(toy[split])["data"]["dialogs"]:
            raw = store.read_raw(dialog["image_id"])
            scene = scene_of(store, dialog["image_id"])
            with Image.open(toy["images"] / f"{dialog['image_id']}.png") as opened:
                pixels = np.asarray(opened.convert("RGB"))
            assert pixels.shape == (raw["image_h"], raw["image_w"], 3)
            classes = raw["cls_prob"].argmax(1)
            objects = [(box, scene["objects"][k]) for k, box in
                       enumerate(box for box, c in zip(raw["boxes"], classes) if 1 <= c <= NUM_OBJECT_CLASSES)]
            outside = np.ones(pixels.shape[:2], dtype=bool)
            for box, _ in objects:
                outside[int(box[1]):int(box[3]) + 2, int(box[0]):int(box[2]) + 2] = False
            colours, counts = np.unique(pixels[outside], axis=0, return_counts=True)
            background, pattern = scene["properties"]["what color is the background ?"], \
                scene["properties"]["what pattern is the background ?"]
            most_common = [colour_name(colours[k]) for k in np.argsort(-counts)]
            assert background == most_common[0] or pattern == "checkered" and background == most_common[1]
            assert (len(colours) == 1) == (pattern == "plain"), pattern
            if pattern == "striped":
                rows = [set(map(tuple, pixels[y][outside[y]])) for y in range(pixels.shape[0]) if outside[y].any()]
                assert all(len(row) == 1 for row in rows), "stripes are horizontal bands"
            for box, (shape, colour) in objects:
                left, top, right, bottom = (int(np.ceil(box[0])) + 1, int(np.ceil(box[1])) + 1,
                                            int(box[2]) - 1, int(box[3]) - 1)
                inside = pixels[top:bottom + 1, left:right + 1]
                centre = pixels[(top + bottom) // 2, (left + right) // 2]
                if any(overlaps(box, other) for other, obj in objects if obj != (shape, colour)):
                    continue
                assert colour_name(centre) == colour, (shape, colour)
                filled = (inside == centre).all(axis=2)
                if shape in FILL:
                    assert filled.mean() == pytest.approx(FILL[shape], abs=0.06), shape
                if shape == "triangle":
                    assert filled[-1].mean() > 0.8 and filled[0].mean() < 0.2, "apex up, base down"
                if shape == "diamond":
                    assert filled[-1].mean() < 0.2 and filled[len(filled) // 2].mean() > 0.9
                if shape == "heart":
                    height, width = filled.shape
                    assert not filled[1, width // 2] and filled[int(0.3 * height), width // 4], "two lobes on top"
                    assert filled[-1].mean() < 0.2 and 0.5 < filled.mean() < 0.8
                shapes_checked.add(shape)
    assert shapes_checked == set(SHAPES), f"every shape checked at least once: {shapes_checked}"


def test_relevant_regions_are_the_objects_a_question_names_or_counts(toy):
    store = open_feature_store(toy["features"])
    types = load_question_types(toy["val_question_types"])
    for dialog, number, question, answer, _ in rounds_of(toy, "val"):
        classes = store[dialog["image_id"]]["cls_prob"].argmax(1)
        named = {region: (SHAPES[(c - 1) // len(COLOURS)], COLOURS[(c - 1) % len(COLOURS)])
                 for region, c in enumerate(classes) if 1 <= c <= NUM_OBJECT_CLASSES}
        words = set(question.replace("?", "").split())
        relevant = {region for region, (shape, colour) in named.items()
                    if ({shape, colour} & words) and not question.startswith("how many")}
        if question.startswith("how many"):
            relevant = set(named)
        if question.startswith("is there") and answer == "no" or types.of(dialog["image_id"], number) in (
                "one_hop", "caption", "history"):
            relevant = set()
        assert set(types.regions.get((dialog["image_id"], number), ())) == relevant, question


def test_no_images_draws_nothing(tmp_path):
    paths = make_toy_data(tmp_path, seed=1, train_dialogs=2, val_dialogs=1, test_dialogs=1, draw_images=False)
    assert "images" not in paths and not (tmp_path / "images").exists()
    assert load_question_types(paths["val_question_types"]).regions, "relevant regions do not need the pictures"


def test_a_set_is_replaced_with_its_pictures_and_the_files_preprocessed_beside_it(tmp_path):
    """A second run into the folder of a first replaces the set: the pictures that -no_images skips
    and the processed files scripts/demo.sh and the benchmarks write beside the set go with it;
    anything else there is refused."""
    small = dict(seed=1, train_dialogs=2, val_dialogs=1, test_dialogs=1)
    make_toy_data(tmp_path, **small)
    (tmp_path / "visdial_1.0_val_processed.json").write_text("{}")
    paths = make_toy_data(tmp_path, draw_images=False, **small)
    assert not (tmp_path / "images").exists() and not (tmp_path / "visdial_1.0_val_processed.json").exists()
    assert paths["features"].exists()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds notes.txt, not a toy data set; not replaced"):
        make_toy_data(tmp_path, **small)
