"""Build a small synthetic VisDial v1.0 dataset ("toy VisDial") that can only be solved by looking.

Every synthetic image holds 2-4 objects, each with a shape, a colour and a position. These
attributes are written into the image's region features (fixed random directions per attribute
value and per shape-colour / shape-position pair, plus a little noise) and into the boxes. The
dialogs ask about the attributes, mostly of objects the caption does not mention, and the 100
answer options of a round contain every phrasing of every value of the question's answer type
("red", "it is blue", ...), so language alone ranks the right answer only among its look-alikes.

Outputs, in the layout the real data uses (all written under ``--out``):

    visdial_1.0_{train,val,test}.json               raw VisDial v1.0 dialogs
    visdial_1.0_val_dense_annotations.json          one annotated round per val dialog
    visdial_1.0_train_dense_annotations.json        one annotated round for some train dialogs
    visdial_img_feat.lmdb/                          region features in the released LMDB layout
    visdial_img_feat.h5                             the same features as HDF5 (with -h5)
    vocab.txt                                       WordPiece vocabulary covering every word
    model_config.json                               a tiny model in the reference config schema

Dense relevance: the right answer and its paraphrases 1.0, the same kind of answer that is true of
another object in the image 0.5, everything else 0.

Usage:
    python preprocessing/make_toy_data.py -out data/toy -seed 0 -train_dialogs 600
"""
import argparse
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from dataloader.feature_store import convert_lmdb_to_hdf5, write_lmdb_feature_store
from utils.errors import UserError, run_cli
from utils.files import write_json, write_text
from utils.outputs import Output, check_outputs

COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star", "heart")
POSITIONS = ("left", "right", "top", "bottom", "center")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
# Answers that are never right: they fill the 100 options like VisDial's popular answers do.
FILLER_ANSWERS = (
    "i can not tell", "not sure", "maybe", "i do not know", "it is hard to say",
    "the picture is clear", "no people", "it is daytime", "there is no text",
    "the background is white", "it looks plain", "nothing else", "i think so",
    "probably not", "hard to tell", "not really", "the image is bright", "some of them",
    "a few", "all of them", "it is small", "it is big", "very clear", "looks new", "i guess",
)
CAPTION_TEMPLATES = (
    "{article} {colour} {shape} and other shapes",
    "a picture with {article} {colour} {shape}",
    "{article} {colour} {shape} on a plain background",
    "some shapes , one is {article} {colour} {shape}",
)
IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480
FEATURE_SIZE, NUM_CLASSES = 2048, 1601
NUM_OPTIONS, NUM_ROUNDS = 100, 10
# Box centres (fractions of the image) of each position.
POSITION_CENTRES = {
    "left": (0.18, 0.5), "right": (0.82, 0.5), "top": (0.5, 0.18),
    "bottom": (0.5, 0.82), "center": (0.5, 0.5),
}
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class ToyObject:
    shape: str
    colour: str
    position: str


@dataclass(frozen=True)
class ToyQuestion:
    """A question, the kind of its answer, the right value and values true of other objects."""
    text: str
    answer_type: str
    value: str
    related_values: Tuple[str, ...]
    subject: str = ""


def colour_phrasings(value: str, subject: str) -> Tuple[str, ...]:
    return (value, f"it is {value}", f"the {subject} is {value}")


def shape_phrasings(value: str, subject: str) -> Tuple[str, ...]:
    return (value, f"a {value}", f"it is a {value}")


def position_phrasings(value: str, subject: str) -> Tuple[str, ...]:
    return (value, f"at the {value}", f"it is at the {value}")


def count_phrasings(value: str, subject: str) -> Tuple[str, ...]:
    return (str(NUMBER_WORDS.index(value)), value, f"i see {value}")


def yes_no_phrasings(value: str, subject: str) -> Tuple[str, ...]:
    if value == "yes":
        return ("yes", "yes there is", "yes i see one")
    return ("no", "no there is not", "no i do not see one")


# Every phrasing of a value is a paraphrase (relevance 1.0 when the value is right).
PHRASINGS: Dict[str, Callable[[str, str], Tuple[str, ...]]] = {
    "colour": colour_phrasings,
    "shape": shape_phrasings,
    "position": position_phrasings,
    "count": count_phrasings,
    "yes_no": yes_no_phrasings,
}
VALUES = {
    "colour": COLOURS, "shape": SHAPES, "position": POSITIONS,
    "count": NUMBER_WORDS, "yes_no": ("yes", "no"),
}


def all_answer_strings() -> List[str]:
    """Every answer the generator can produce, in a fixed order (the distractor pool)."""
    answers = []
    for answer_type, phrase in PHRASINGS.items():
        subjects = SHAPES if answer_type == "colour" else ("",)
        for subject in subjects:
            for value in VALUES[answer_type]:
                answers.extend(phrase(value, subject))
    answers.extend(FILLER_ANSWERS)
    return list(dict.fromkeys(answers))


def sample_objects(rng: random.Random, min_objects: int, max_objects: int) -> List[ToyObject]:
    """2-4 objects with distinct shapes and positions; colours may repeat."""
    count = rng.randint(min_objects, max_objects)
    shapes = rng.sample(SHAPES, count)
    positions = rng.sample(POSITIONS, count)
    return [ToyObject(shape, rng.choice(COLOURS), position) for shape, position in zip(shapes, positions)]


def candidate_questions(objects: Sequence[ToyObject], rng: random.Random) -> Dict[str, List[ToyQuestion]]:
    """All questions that have one right answer for these objects, grouped by answer type."""
    colour_counts = Counter(obj.colour for obj in objects)
    questions: Dict[str, List[ToyQuestion]] = {answer_type: [] for answer_type in PHRASINGS}
    for obj in objects:
        others = [other for other in objects if other is not obj]
        questions["colour"].append(ToyQuestion(
            f"what color is the {obj.shape} ?", "colour", obj.colour,
            tuple({o.colour for o in others} - {obj.colour}), subject=obj.shape))
        questions["position"].append(ToyQuestion(
            f"where is the {obj.shape} ?", "position", obj.position,
            tuple(o.position for o in others)))
        if colour_counts[obj.colour] == 1:
            questions["shape"].append(ToyQuestion(
                f"what shape is the {obj.colour} one ?", "shape", obj.shape,
                tuple(o.shape for o in others)))
    questions["count"].append(ToyQuestion(
        "how many shapes are there ?", "count", NUMBER_WORDS[len(objects)],
        neighbouring_counts(len(objects))))
    for colour in COLOURS:
        questions["count"].append(ToyQuestion(
            f"how many {colour} shapes are there ?", "count", NUMBER_WORDS[colour_counts[colour]],
            neighbouring_counts(colour_counts[colour])))
    present = {(obj.colour, obj.shape) for obj in objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    for colour, shape in sorted(present) + rng.sample(absent, len(present)):
        answer = "yes" if (colour, shape) in present else "no"
        questions["yes_no"].append(ToyQuestion(
            f"is there {article(colour)} {colour} {shape} ?", "yes_no", answer, ()))
    return questions


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def neighbouring_counts(count: int) -> Tuple[str, ...]:
    return tuple(NUMBER_WORDS[n] for n in (count - 1, count + 1) if 0 <= n < len(NUMBER_WORDS))


def sample_dialog_questions(objects: Sequence[ToyObject], rng: random.Random) -> List[ToyQuestion]:
    """NUM_ROUNDS distinct questions: an answer type uniformly, then a question of that type."""
    pools = candidate_questions(objects, rng)
    for pool in pools.values():
        rng.shuffle(pool)
    chosen = []
    while len(chosen) < NUM_ROUNDS:
        answer_type = rng.choice(sorted(t for t, pool in pools.items() if pool))
        chosen.append(pools[answer_type].pop())
    return chosen


def round_options(question: ToyQuestion, answer_pool: Sequence[str], rng: random.Random) -> List[str]:
    """100 distinct options: every phrasing of every value of the question's type, then distractors."""
    phrase = PHRASINGS[question.answer_type]
    same_type = [text for value in VALUES[question.answer_type] for text in phrase(value, question.subject)]
    same_type = list(dict.fromkeys(same_type))
    others = [text for text in answer_pool if text not in set(same_type)]
    options = same_type + rng.sample(others, NUM_OPTIONS - len(same_type))
    rng.shuffle(options)
    return options


def option_relevance(question: ToyQuestion, options: Sequence[str]) -> List[float]:
    """1.0 for paraphrases of the right answer, 0.5 for answers true of another object, else 0."""
    phrase = PHRASINGS[question.answer_type]
    right = set(phrase(question.value, question.subject))
    related = {text for value in question.related_values for text in phrase(value, question.subject)}
    return [1.0 if text in right else 0.5 if text in related else 0.0 for text in options]


@dataclass
class ToyDialog:
    image_id: int
    objects: List[ToyObject]
    caption: str
    questions: List[ToyQuestion]
    answers: List[str]         # the ground-truth phrasing of each round
    options: List[List[str]]   # 100 options per round


def make_dialog(image_id: int, answer_pool: Sequence[str], rng: random.Random,
                min_objects: int, max_objects: int) -> ToyDialog:
    objects = sample_objects(rng, min_objects, max_objects)
    mentioned = rng.choice(objects)
    caption = rng.choice(CAPTION_TEMPLATES).format(
        article=article(mentioned.colour), colour=mentioned.colour, shape=mentioned.shape)
    questions = sample_dialog_questions(objects, rng)
    answers, options = [], []
    for question in questions:
        answer = rng.choice(PHRASINGS[question.answer_type](question.value, question.subject))
        answers.append(answer)
        options.append(round_options(question, answer_pool, rng))
        if answer not in options[-1]:
            raise AssertionError(f"right answer {answer!r} missing from the options")
    return ToyDialog(image_id, objects, caption, questions, answers, options)


class TextIndex:
    """Assigns list positions to strings, as the questions / answers lists of a VisDial json."""

    def __init__(self) -> None:
        self.texts: List[str] = []
        self._index: Dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]


def split_json(split: str, dialogs: Sequence[ToyDialog], rng: random.Random) -> dict:
    """The raw VisDial v1.0 json of a split; test dialogs stop at a random round without answer."""
    questions, answers = TextIndex(), TextIndex()
    json_dialogs = []
    for dialog in dialogs:
        num_rounds = rng.randint(1, NUM_ROUNDS) if split == "test" else NUM_ROUNDS
        rounds = []
        for round_index in range(num_rounds):
            question = questions(dialog.questions[round_index].text)
            option_ids = [answers(text) for text in dialog.options[round_index]]
            gt_index = dialog.options[round_index].index(dialog.answers[round_index])
            if split != "test":
                rounds.append({"question": question, "answer": option_ids[gt_index],
                               "answer_options": option_ids, "gt_index": gt_index})
            elif round_index < num_rounds - 1:
                rounds.append({"question": question, "answer": option_ids[gt_index]})
            else:
                rounds.append({"question": question, "answer_options": option_ids})
        json_dialogs.append({"image_id": dialog.image_id, "caption": dialog.caption, "dialog": rounds})
    return {"version": "1.0", "split": split,
            "data": {"questions": questions.texts, "answers": answers.texts, "dialogs": json_dialogs}}


def dense_annotations(dialogs: Sequence[ToyDialog], relevance_key: str, rng: random.Random) -> List[dict]:
    """One annotated round (1-based round_id) per dialog, relevance in the order of its options."""
    annotations = []
    for dialog in dialogs:
        round_index = rng.randrange(NUM_ROUNDS)
        relevance = option_relevance(dialog.questions[round_index], dialog.options[round_index])
        annotations.append({"image_id": dialog.image_id, "round_id": round_index + 1,
                            relevance_key: relevance})
    return annotations


class FeatureDirections:
    """Fixed random unit-variance directions in feature space, one per attribute value or pair."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._directions: Dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._directions:
            self._directions[name] = self._rng.standard_normal(FEATURE_SIZE).astype(np.float32)
        return self._directions[name]


def object_class(obj: ToyObject) -> int:
    """Detector class id of an object (1..30); class 0 is the whole image, 31 is background."""
    return 1 + SHAPES.index(obj.shape) * len(COLOURS) + COLOURS.index(obj.colour)


BACKGROUND_CLASS = 1 + len(SHAPES) * len(COLOURS)


def class_distribution(class_id: int) -> np.ndarray:
    """A peaked detector distribution over NUM_CLASSES classes: 0.9 on class_id, rest spread."""
    probs = np.full(NUM_CLASSES, 0.1 / NUM_CLASSES, dtype=np.float32)
    probs[class_id] += 0.9
    return probs / probs.sum(dtype=np.float32)


def object_box(obj: ToyObject, rng: np.random.Generator) -> np.ndarray:
    centre_x, centre_y = POSITION_CENTRES[obj.position]
    centre_x += rng.uniform(-0.05, 0.05)
    centre_y += rng.uniform(-0.05, 0.05)
    half_w, half_h = rng.uniform(0.07, 0.12, size=2)
    return np.array([(centre_x - half_w) * IMAGE_WIDTH, (centre_y - half_h) * IMAGE_HEIGHT,
                     (centre_x + half_w) * IMAGE_WIDTH, (centre_y + half_h) * IMAGE_HEIGHT],
                    dtype=np.float32)


def background_box(rng: np.random.Generator) -> np.ndarray:
    x1, y1 = rng.uniform(0, 0.7, size=2)
    width, height = rng.uniform(0.1, 0.3, size=2)
    return np.array([x1 * IMAGE_WIDTH, y1 * IMAGE_HEIGHT, (x1 + width) * IMAGE_WIDTH,
                     (y1 + height) * IMAGE_HEIGHT], dtype=np.float32)


def image_record(dialog: ToyDialog, directions: FeatureDirections, boxes_per_image: int,
                 noise: float, rng: np.random.Generator) -> dict:
    """The feature-store record of a dialog's image: its objects plus background regions."""
    features, boxes, classes = [], [], []
    for obj in dialog.objects:
        features.append(directions[f"shape:{obj.shape}"] + directions[f"colour:{obj.colour}"]
                        + directions[f"position:{obj.position}"]
                        + directions[f"shape+colour:{obj.shape}+{obj.colour}"]
                        + directions[f"shape+position:{obj.shape}+{obj.position}"])
        boxes.append(object_box(obj, rng))
        classes.append(object_class(obj))
    for _ in range(boxes_per_image - len(dialog.objects)):
        features.append(directions["background"].copy())
        boxes.append(background_box(rng))
        classes.append(BACKGROUND_CLASS)
    order = rng.permutation(boxes_per_image)
    feature_array = np.stack(features)[order]
    feature_array += noise * rng.standard_normal(feature_array.shape).astype(np.float32)
    return {
        "image_id": dialog.image_id, "image_h": IMAGE_HEIGHT, "image_w": IMAGE_WIDTH,
        "num_boxes": boxes_per_image, "features": feature_array.astype(np.float32),
        "boxes": np.stack(boxes)[order].astype(np.float32),
        "cls_prob": np.stack([class_distribution(classes[i]) for i in order]),
    }


WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def build_vocab(texts: Sequence[str]) -> List[str]:
    """A WordPiece vocab in bert-base-uncased's layout, then every word of the texts.

    The first 999 entries are bert-base-uncased's: [PAD]=0, [unused0..98], [UNK]=100, [CLS]=101,
    [SEP]=102, [MASK]=103, [unused99..993]; so the special token ids are the usual ones. Single
    letters and ##letters follow the words, so an unseen lower-case word splits instead of
    becoming [UNK].
    """
    words = sorted({word for text in texts for word in WORD_PATTERN.findall(text.lower())})
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + list(BERT_SPECIAL_TOKENS[1:])
             + [f"[unused{i}]" for i in range(99, 994)])
    vocab += list(dict.fromkeys(words + letters + [f"##{letter}" for letter in letters]))
    return vocab


def model_config(vocab_size: int, hidden_size: int) -> dict:
    """A tiny two-stream model in the key set and order of the reference's model configs."""
    return {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size, "initializer_range": 0.1, "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": 512, "num_attention_heads": 2, "num_hidden_layers": 2,
        "type_vocab_size": 2, "vocab_size": vocab_size, "v_feature_size": FEATURE_SIZE,
        "v_target_size": NUM_CLASSES, "v_hidden_size": hidden_size, "v_num_hidden_layers": 1,
        "v_num_attention_heads": 2, "v_intermediate_size": 2 * hidden_size,
        "bi_hidden_size": hidden_size, "bi_num_attention_heads": 2,
        "bi_intermediate_size": 2 * hidden_size, "bi_attention_type": 1,
        "v_attention_probs_dropout_prob": 0.1, "v_hidden_act": "gelu", "v_hidden_dropout_prob": 0.1,
        "v_initializer_range": 0.02, "v_biattention_id": [0], "t_biattention_id": [1],
        "pooling_method": "mul",
    }


def unique_image_ids(count: int, rng: random.Random) -> List[int]:
    return rng.sample(range(100000, 1000000), count)


def make_toy_data(out_dir: Path, seed: int = 0, train_dialogs: int = 600, val_dialogs: int = 40,
                  test_dialogs: int = 20, dense_train_fraction: float = 0.5, boxes_per_image: int = 10,
                  min_objects: int = 2, max_objects: int = 4, noise: float = 0.1,
                  hidden_size: int = 32, write_hdf5: bool = False) -> Dict[str, Path]:
    """Write the toy dataset under out_dir; returns the written paths by name.

    The same arguments always give byte-identical json, vocab and config, and identical features.
    """
    if not 2 <= min_objects <= max_objects <= len(NUMBER_WORDS) - 1:
        raise UserError(f"-min_objects/-max_objects must satisfy 2 <= min <= max <= {len(NUMBER_WORDS) - 1}")
    if boxes_per_image < max_objects:
        raise UserError(f"-boxes_per_image {boxes_per_image} is smaller than -max_objects {max_objects}")
    if min(train_dialogs, val_dialogs, test_dialogs) < 1:
        raise UserError("-train_dialogs, -val_dialogs and -test_dialogs must be at least 1")
    if not 0.0 <= dense_train_fraction <= 1.0:
        raise UserError(f"-dense_train_fraction {dense_train_fraction} is not between 0 and 1")
    rng = random.Random(seed)
    answer_pool = all_answer_strings()
    sizes = {"train": train_dialogs, "val": val_dialogs, "test": test_dialogs}
    image_ids = iter(unique_image_ids(sum(sizes.values()), rng))
    dialogs = {split: [make_dialog(next(image_ids), answer_pool, rng, min_objects, max_objects)
                       for _ in range(size)] for split, size in sizes.items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, Path] = {}
    for split in ("train", "val", "test"):
        paths[split] = out_dir / f"visdial_1.0_{split}.json"
        write_json(paths[split], split_json(split, dialogs[split], rng))
    dense_train = rng.sample(dialogs["train"], round(dense_train_fraction * train_dialogs))
    paths["train_dense"] = out_dir / "visdial_1.0_train_dense_annotations.json"
    write_json(paths["train_dense"], dense_annotations(dense_train, "relevance", rng))
    paths["val_dense"] = out_dir / "visdial_1.0_val_dense_annotations.json"
    write_json(paths["val_dense"], dense_annotations(dialogs["val"], "gt_relevance", rng))

    paths["features"] = out_dir / "visdial_img_feat.lmdb"
    write_lmdb_feature_store(str(paths["features"]),
                             image_records(dialogs, seed, boxes_per_image, noise))
    if write_hdf5:
        paths["features_hdf5"] = out_dir / "visdial_img_feat.h5"
        convert_lmdb_to_hdf5(str(paths["features"]), str(paths["features_hdf5"]), show_progress=False)

    vocab = build_vocab(all_texts(dialogs, answer_pool))
    paths["vocab"] = out_dir / "vocab.txt"
    write_text(paths["vocab"], "\n".join(vocab) + "\n")
    paths["model_config"] = out_dir / "model_config.json"
    write_json(paths["model_config"], model_config(len(vocab), hidden_size))
    return paths


def image_records(dialogs: Dict[str, List[ToyDialog]], seed: int, boxes_per_image: int,
                  noise: float) -> Iterator[dict]:
    directions = FeatureDirections(seed)
    rng = np.random.default_rng(seed + 1)
    for split in ("train", "val", "test"):
        for dialog in dialogs[split]:
            yield image_record(dialog, directions, boxes_per_image, noise, rng)


def all_texts(dialogs: Dict[str, List[ToyDialog]], answer_pool: Sequence[str]) -> List[str]:
    texts = list(answer_pool)
    for split_dialogs in dialogs.values():
        for dialog in split_dialogs:
            texts.append(dialog.caption)
            texts.extend(question.text for question in dialog.questions)
    return texts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-out", "--out", default="data/toy", help="output folder")
    parser.add_argument("-seed", "--seed", type=int, default=0)
    parser.add_argument("-train_dialogs", "--train_dialogs", type=int, default=600)
    parser.add_argument("-val_dialogs", "--val_dialogs", type=int, default=40)
    parser.add_argument("-test_dialogs", "--test_dialogs", type=int, default=20)
    parser.add_argument("-dense_train_fraction", "--dense_train_fraction", type=float, default=0.5,
                        help="share of train dialogs with one densely annotated round")
    parser.add_argument("-boxes_per_image", "--boxes_per_image", type=int, default=10)
    parser.add_argument("-min_objects", "--min_objects", type=int, default=2)
    parser.add_argument("-max_objects", "--max_objects", type=int, default=4)
    parser.add_argument("-noise", "--noise", type=float, default=0.1,
                        help="std of the Gaussian noise added to every region feature")
    parser.add_argument("-hidden_size", "--hidden_size", type=int, default=32,
                        help="hidden size of every stream of the tiny model config")
    parser.add_argument("-h5", "--h5", action="store_true",
                        help="also write the features as HDF5 (visdial_img_feat.h5)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_outputs([Output("-out", Path(args.out), is_folder=True, what="the toy data folder")], {})
    paths = make_toy_data(Path(args.out), seed=args.seed, train_dialogs=args.train_dialogs,
                          val_dialogs=args.val_dialogs, test_dialogs=args.test_dialogs,
                          dense_train_fraction=args.dense_train_fraction,
                          boxes_per_image=args.boxes_per_image, min_objects=args.min_objects,
                          max_objects=args.max_objects, noise=args.noise,
                          hidden_size=args.hidden_size, write_hdf5=args.h5)
    print(f"toy VisDial written to {args.out}:")
    for name, path in paths.items():
        print(f"  {name:13s} {path}")


if __name__ == "__main__":
    run_cli(main)
