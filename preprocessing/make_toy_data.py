"""Build a small synthetic VisDial v1.0 dataset ("toy VisDial") whose questions come in graded types.

Every synthetic image has a background (a colour and a pattern) and 2-4 objects of distinct
shapes and distinct colours. The region features hold fixed random directions of these attributes
plus a little noise: a background region the background's colour and pattern, an object's region
its shape and colour. The boxes are drawn at random and tell nothing. Every dialog is drawn on
some day, which only its caption says. Each round's question has one of these types
(`QUESTION_TYPES`), so what a model learned can be read off type by type:

    one_hop     a property of the whole image      what color is the background ? -> white
    binding     an attribute of the object named   what color is the square ? -> red
                by another attribute               what shape is the red one ? -> square
    counting    how many objects                   how many shapes are there ? -> three
    existence   yes / no                           is there a star ? -> no
    caption     told by the caption only           what day was it drawn ? -> monday
    history     told by the previous round only    what did i just ask about ? -> the square

The ground truth is always the bare value ("white"); its paraphrases ("it is white", "the
background is white") are options too, relevance 1.0 in the dense annotations, so a perfect model
reaches MRR 1. The 100 options of a round are ordered by hardness, the ground truth at a random
position: first every other value of the question's kind (hard negatives: the image decides),
then the paraphrases of the right answer, then one bare value of every other kind ("yes" to a
colour question: the question decides), then the rest. Base training draws its negatives from the
first `-num_options - 1` wrong options of a round, so a small `-num_options` (config/presets/toy.yml)
trains on the hard and the type-revealing negatives.

Outputs, in the layout the real data uses (all written under ``-out``):

    visdial_1.0_{train,val,test}.json                raw VisDial v1.0 dialogs
    visdial_1.0_{train,val,test}_question_types.json the type of every round's question and, for
                                                     binding, counting and "yes" existence rounds,
                                                     the regions of the objects they are about and
                                                     of every object of the image
    visdial_1.0_val_dense_annotations.json           one annotated round per val dialog
    visdial_1.0_train_dense_annotations.json         one annotated round for some train dialogs
    visdial_img_feat.lmdb/                           region features in the released LMDB layout
    visdial_img_feat.h5                              the same features as HDF5 (with -h5)
    images/<image_id>.png                            each image drawn (not with -no_images): the
                                                     background in its colour and pattern, each
                                                     object as its shape in its colour in its box
    vocab.txt                                        WordPiece vocabulary covering every word
    model_config.json                                a tiny model in the reference config schema

They are written as one set: into a temporary folder renamed to ``-out`` at the end, replacing the
previous set there (a failure halfway leaves it as it was; a folder holding other files is refused).
Every flag is checked before anything is written.

A dialog's first round asks about the caption (so it is answerable for every -visdial_tot_rounds);
the other nine hold two one-hop, two binding, one counting, two existence and two history
questions in random order, a history round never following another. `-question_types` keeps only
some types (then dialogs are as long as the types allow, at most `-rounds`).
`-whole_image_dialogs N` adds N train dialogs on other images that ask only the one-hop questions:
the toy's stand-in for the image-text pretraining data the paper's model saw before VisDial. A
tiny model trained from scratch for minutes on the six types alone never starts to use the image;
with as many such dialogs as mixed ones it does (scripts/demo.sh, docs/learning.md).
`-binding_dialogs N` adds N train dialogs on other images that ask only binding questions, one per
object (its colour or its shape), after the others and from a random stream of their own: the rest
of the set is byte for byte the set without them (the data of scripts/binding_study.py).

Usage:
    python preprocessing/make_toy_data.py -out data/toy -seed 0 -train_dialogs 1000
"""
import argparse
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from dataloader.feature_store import convert_lmdb_to_hdf5, write_lmdb_feature_store
from dataloader.question_types import write_question_types
from dataloader.visdial_json import SPLITS
from utils.errors import ArgumentParser, UserError, run_cli
from utils.outputs import Output, atomic_folder, check_outputs, write_json, write_text

SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
# Properties of the whole image, each asked by one one-hop question:
# name -> (question, what a history answer calls it, values, phrasings of a value)
SCENE_PROPERTIES = {
    "background": ("what color is the background ?", "the background color",
                   ("white", "black", "gray", "pink", "brown", "beige"),
                   ("{}", "it is {}", "the background is {}")),
    "pattern": ("what pattern is the background ?", "the background pattern",
                ("plain", "striped", "dotted", "checkered", "wavy", "grid"),
                ("{}", "it is {}", "the background is {}")),
}
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
# Answers that are never right: they fill the 100 options like VisDial's popular answers do.
FILLER_ANSWERS = (
    "i can not tell", "not sure", "maybe", "i do not know", "it is hard to say",
    "the picture is clear", "no people", "it is daytime", "there is no text",
    "nothing else", "i think so", "probably not", "hard to tell",
    "not really", "the image is bright", "some of them", "a few", "all of them",
    "it is small", "it is big", "very clear", "looks new", "i guess",
)
QUESTION_TYPES = {  # name -> what answers it; the order of the per-type tables
    "one_hop": "a property of the whole image (the background's colour or pattern)",
    "binding": "an attribute of the object named by another attribute (the colour of the square)",
    "counting": "how many objects the image holds",
    "existence": "yes / no: is there an object of this shape",
    "caption": "told by the caption only (the day the picture was drawn)",
    "history": "told by the previous round only (what it asked about)",
}
# The nine rounds after the caption round of a dialog with every type.
ROUND_PLAN = {"one_hop": len(SCENE_PROPERTIES), "binding": 2, "counting": 1, "existence": 2, "history": 2}
# Every other question the generator asks ({shape} and {colour} filled in).
QUESTION_TEXTS = {
    "colour_of": "what color is the {shape} ?",
    "shape_of": "what shape is the {colour} one ?",
    "counting": "how many shapes are there ?",
    "existence": "is there a {shape} ?",
    "caption": "what day was it drawn ?",
    "history": "what did i just ask about ?",
}
NUM_OPTIONS, NUM_ROUNDS = 100, 10
IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480
FEATURE_SIZE, NUM_CLASSES = 2048, 1601
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class ToyObject:
    shape: str
    colour: str


@dataclass(frozen=True)
class ToyScene:
    """What one image shows (objects, a value of every scene property) and the day its caption names."""
    objects: Tuple[ToyObject, ...]
    properties: Tuple[str, ...]   # in the order of SCENE_PROPERTIES
    day: str

    def property(self, name: str) -> str:
        return self.properties[list(SCENE_PROPERTIES).index(name)]


@dataclass(frozen=True)
class ToyQuestion:
    """A question, its type, the kind and value of its answer, values true of other objects
    (relevance 0.5), what it asks about (the answer of a history question after it) and the
    objects whose regions answer it (the object named, the objects counted; none for a "no")."""
    text: str
    question_type: str
    kind: str
    value: str
    subject: str
    related_values: Tuple[str, ...] = ()
    objects: Tuple[ToyObject, ...] = ()


def subject_phrase(shape: str = "", colour: str = "") -> str:
    return f"the {shape}" if shape else f"the {colour} one"


# Answer kinds: their values and phrasings (the first phrasing is the ground truth's).
VALUES: Dict[str, Tuple[str, ...]] = {
    **{name: values for name, (_, _, values, _) in SCENE_PROPERTIES.items()},
    "colour": COLOURS,
    "shape": SHAPES,
    "count": NUMBER_WORDS[1:],
    "yes_no": ("yes", "no"),
    "day": DAYS,
    "subject": ("the day", "the number of shapes") + tuple(subject for _, subject, _, _ in SCENE_PROPERTIES.values())
               + tuple(subject_phrase(shape=shape) for shape in SHAPES)
               + tuple(subject_phrase(colour=colour) for colour in COLOURS),
}
PHRASINGS: Dict[str, Callable[[str], Tuple[str, ...]]] = {
    **{name: (lambda templates: lambda value: tuple(template.format(value) for template in templates))(templates)
       for name, (_, _, _, templates) in SCENE_PROPERTIES.items()},
    "colour": lambda value: (value, f"it is {value}", f"it is {value} colored"),
    "shape": lambda value: (value, f"a {value}", f"it is a {value}"),
    "count": lambda value: (value, str(NUMBER_WORDS.index(value)), f"there are {value}"),
    "yes_no": lambda value: (("yes", "yes there is", "yes i see one") if value == "yes"
                             else ("no", "no there is not", "no i do not see one")),
    "day": lambda value: (value, f"on {value}", f"it was {value}"),
    "subject": lambda value: (value, f"about {value}", f"you asked about {value}"),
}


def all_answer_strings() -> List[str]:
    """Every answer the generator can produce, in a fixed order (the distractor pool)."""
    answers = [text for kind, phrase in PHRASINGS.items() for value in VALUES[kind] for text in phrase(value)]
    return list(dict.fromkeys(answers + list(FILLER_ANSWERS)))


def sample_scene(rng: random.Random, min_objects: int, max_objects: int) -> ToyScene:
    """min..max objects with distinct shapes and distinct colours, scene properties and a day."""
    count = rng.randint(min_objects, max_objects)
    objects = tuple(ToyObject(shape, colour)
                    for shape, colour in zip(rng.sample(SHAPES, count), rng.sample(COLOURS, count)))
    properties = tuple(rng.choice(values) for _, _, values, _ in SCENE_PROPERTIES.values())
    return ToyScene(objects, properties, rng.choice(DAYS))


def caption_of(scene: ToyScene, with_day: bool) -> str:
    """The caption names the day (when caption questions are asked) and nothing the image shows."""
    return f"a drawing made on {scene.day}" if with_day else "a drawing"


def question_pools(scene: ToyScene, rng: random.Random) -> Dict[str, List[ToyQuestion]]:
    """The questions of each image-or-caption type for this scene, in the order they are asked."""
    objects = list(scene.objects)
    rng.shuffle(objects)
    colour_of, shape_of = objects[0], objects[1 % len(objects)]
    present = [obj.shape for obj in objects if obj not in (colour_of, shape_of)] or [objects[-1].shape]
    absent = [shape for shape in SHAPES if shape not in {obj.shape for obj in objects}]
    existence = [
        ToyQuestion(QUESTION_TEXTS["existence"].format(shape=shape), "existence", "yes_no", answer,
                    subject_phrase(shape=shape), objects=tuple(obj for obj in objects if obj.shape == shape))
        for shape, answer in ((rng.choice(present), "yes"), (rng.choice(absent), "no"))]
    rng.shuffle(existence)
    one_hop = [ToyQuestion(question, "one_hop", name, scene.property(name), subject)
               for name, (question, subject, _, _) in SCENE_PROPERTIES.items()]
    rng.shuffle(one_hop)
    binding = [binding_question(colour_of, "colour", objects), binding_question(shape_of, "shape", objects)]
    rng.shuffle(binding)
    return {
        "one_hop": one_hop, "binding": binding, "existence": existence,
        "counting": [ToyQuestion(QUESTION_TEXTS["counting"], "counting", "count",
                                 NUMBER_WORDS[len(objects)], "the number of shapes", objects=tuple(objects))],
        "caption": [ToyQuestion(QUESTION_TEXTS["caption"], "caption", "day", scene.day, "the day")],
    }


def binding_question(obj: ToyObject, kind: str, objects: Sequence[ToyObject]) -> ToyQuestion:
    """The binding question about `obj` among `objects`: its colour (kind "colour", named by its
    shape) or its shape (kind "shape", named by its colour); the other objects' values of that kind
    are its related values."""
    if kind == "colour":
        return ToyQuestion(QUESTION_TEXTS["colour_of"].format(shape=obj.shape), "binding", "colour", obj.colour,
                           subject_phrase(shape=obj.shape),
                           tuple(other.colour for other in objects if other is not obj), (obj,))
    return ToyQuestion(QUESTION_TEXTS["shape_of"].format(colour=obj.colour), "binding", "shape", obj.shape,
                       subject_phrase(colour=obj.colour),
                       tuple(other.shape for other in objects if other is not obj), (obj,))


def history_question(previous: ToyQuestion) -> ToyQuestion:
    return ToyQuestion(QUESTION_TEXTS["history"], "history", "subject", previous.subject, "the last question")


def round_plan(types: Sequence[str], max_rounds: int, rng: random.Random) -> List[str]:
    """The question type of each round: the caption round first, then the others shuffled, history
    rounds placed in distinct gaps (never first, never after another history round)."""
    others = [name for name in ROUND_PLAN if name != "history" and name in types
              for _ in range(ROUND_PLAN[name])]
    rng.shuffle(others)
    plan = (["caption"] if "caption" in types else []) + others
    if "history" in types and plan:
        gaps = sorted(rng.sample(range(1, len(plan) + 1), min(ROUND_PLAN["history"], len(plan))), reverse=True)
        for gap in gaps:
            plan.insert(gap, "history")
    return plan[:max_rounds]


def round_options(question: ToyQuestion, answer_pool: Sequence[str], rng: random.Random) -> Tuple[List[str], int]:
    """100 distinct options ordered by hardness (module docstring) and the ground truth's position:
    the other values of the question's kind, the right answer's paraphrases, one right-looking
    answer of every other kind (so that training sees "yes" to a colour question), the rest."""
    phrase = PHRASINGS[question.kind]
    answer, *paraphrases = phrase(question.value)
    hard = [phrase(value)[0] for value in VALUES[question.kind] if value != question.value]
    other_kinds = [PHRASINGS[kind](rng.choice(VALUES[kind]))[0] for kind in VALUES if kind != question.kind]
    rng.shuffle(hard)
    medium = paraphrases + other_kinds
    rng.shuffle(medium)
    taken = set(hard) | set(medium) | {answer}
    rest = rng.sample([text for text in answer_pool if text not in taken], NUM_OPTIONS - len(taken))
    wrong = hard + medium + rest
    gt_index = rng.randrange(NUM_OPTIONS)
    return wrong[:gt_index] + [answer] + wrong[gt_index:], gt_index


def option_relevance(question: ToyQuestion, options: Sequence[str]) -> List[float]:
    """1.0 for the right answer and its paraphrases, 0.5 for values true of another object, else 0."""
    phrase = PHRASINGS[question.kind]
    right = set(phrase(question.value))
    related = {text for value in question.related_values for text in phrase(value)}
    return [1.0 if text in right else 0.5 if text in related else 0.0 for text in options]


@dataclass
class ToyDialog:
    image_id: int
    scene: ToyScene
    caption: str
    questions: List[ToyQuestion]
    options: List[List[str]]   # 100 options per round
    gt_indices: List[int]


def make_dialog(image_id: int, answer_pool: Sequence[str], rng: random.Random, min_objects: int,
                max_objects: int, types: Sequence[str], max_rounds: int) -> ToyDialog:
    """A dialog of the graded types `types` (round_plan) about a new scene."""
    scene = sample_scene(rng, min_objects, max_objects)
    pools = question_pools(scene, rng)
    questions: List[ToyQuestion] = []
    for question_type in round_plan(types, max_rounds, rng):
        questions.append(history_question(questions[-1]) if question_type == "history"
                         else pools[question_type].pop())
    return dialog_of(image_id, scene, questions, "caption" in types, answer_pool, rng)


def make_binding_dialog(image_id: int, answer_pool: Sequence[str], rng: random.Random, min_objects: int,
                        max_objects: int, max_rounds: int) -> ToyDialog:
    """A dialog of binding questions about a new scene: one per object, in random order, its colour
    or its shape at random (never both, so that no round is told by the one before)."""
    scene = sample_scene(rng, min_objects, max_objects)
    objects = list(scene.objects)
    rng.shuffle(objects)
    questions = [binding_question(obj, rng.choice(("colour", "shape")), scene.objects) for obj in objects]
    return dialog_of(image_id, scene, questions[:max_rounds], False, answer_pool, rng)


def make_binding_dialogs(count: int, seed: int, used_ids: set, answer_pool: Sequence[str], min_objects: int,
                         max_objects: int, max_rounds: int) -> List[ToyDialog]:
    """`count` binding dialogs (make_binding_dialog) on images not in `used_ids`, drawn from their own
    random stream, so that the rest of the set is the same with or without them."""
    rng = random.Random(f"{seed} binding")
    image_ids = [image_id for image_id in rng.sample(IMAGE_IDS, count + len(used_ids)) if image_id not in used_ids]
    return [make_binding_dialog(image_id, answer_pool, rng, min_objects, max_objects, max_rounds)
            for image_id in image_ids[:count]]


def dialog_of(image_id: int, scene: ToyScene, questions: List[ToyQuestion], with_day: bool,
              answer_pool: Sequence[str], rng: random.Random) -> ToyDialog:
    """The dialog asking `questions` about `scene`, with each round's options (round_options)."""
    options, gt_indices = zip(*(round_options(question, answer_pool, rng) for question in questions))
    return ToyDialog(image_id, scene, caption_of(scene, with_day), questions, list(options), list(gt_indices))


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


def split_json(split: str, dialogs: Sequence[ToyDialog], test_rounds: Dict[int, int]) -> dict:
    """The raw VisDial v1.0 json of a split; a test dialog stops at round test_rounds[image_id],
    which has options but no answer."""
    questions, answers = TextIndex(), TextIndex()
    json_dialogs = []
    last_round_only = SPLITS[split].last_round_only
    for dialog in dialogs:
        num_rounds = test_rounds[dialog.image_id] if last_round_only else len(dialog.questions)
        rounds = []
        for round_index in range(num_rounds):
            question = questions(dialog.questions[round_index].text)
            option_ids = [answers(text) for text in dialog.options[round_index]]
            gt_index = dialog.gt_indices[round_index]
            if not last_round_only:
                rounds.append({"question": question, "answer": option_ids[gt_index],
                               "answer_options": option_ids, "gt_index": gt_index})
            elif round_index < num_rounds - 1:
                rounds.append({"question": question, "answer": option_ids[gt_index]})
            else:
                rounds.append({"question": question, "answer_options": option_ids})
        json_dialogs.append({"image_id": dialog.image_id, "caption": dialog.caption, "dialog": rounds})
    return {"version": "1.0", "split": split,
            "data": {"questions": questions.texts, "answers": answers.texts, "dialogs": json_dialogs}}


def round_types(dialogs: Sequence[ToyDialog], object_regions: Dict[int, Dict[ToyObject, int]],
                num_rounds: Optional[Dict[int, int]] = None) -> List[dict]:
    """The question type of every round (1-based round_id) of the dialogs, for the types file,
    with the regions of the objects that answer it (`relevant_regions`, where there are any) and
    then the regions of all the image's objects (`object_regions`). object_regions: image id ->
    object -> its region (0 is the whole image, 1.. the boxes)."""
    return [{"image_id": dialog.image_id, "round_id": number, "question_type": question.question_type,
             **({"relevant_regions": sorted(object_regions[dialog.image_id][obj] for obj in question.objects),
                 "object_regions": sorted(object_regions[dialog.image_id].values())}
                if question.objects else {})}
            for dialog in dialogs
            for number, question in enumerate(dialog.questions, start=1)
            if num_rounds is None or number <= num_rounds[dialog.image_id]]


def dense_annotations(dialogs: Sequence[ToyDialog], relevance_key: str, rng: random.Random) -> List[dict]:
    """One annotated round (1-based round_id) per dialog, relevance in the order of its options."""
    annotations = []
    for dialog in dialogs:
        round_index = rng.randrange(len(dialog.questions))
        relevance = option_relevance(dialog.questions[round_index], dialog.options[round_index])
        annotations.append({"image_id": dialog.image_id, "round_id": round_index + 1, relevance_key: relevance})
    return annotations


class FeatureDirections:
    """Fixed random unit-variance directions in feature space, one per attribute value."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._directions: Dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._directions:
            self._directions[name] = self._rng.standard_normal(FEATURE_SIZE).astype(np.float32)
        return self._directions[name]


def object_class(obj: ToyObject) -> int:
    """Detector class of an object (1..36); class 0 is the whole image."""
    return 1 + SHAPES.index(obj.shape) * len(COLOURS) + COLOURS.index(obj.colour)


def background_class(scene: ToyScene) -> int:
    """Detector class of a background region: 37 + the scene's property values as base-6 digits."""
    index = 0
    for (_, _, values, _), value in zip(SCENE_PROPERTIES.values(), scene.properties):
        index = index * len(values) + values.index(value)
    return 1 + len(SHAPES) * len(COLOURS) + index


def class_distribution(class_id: int) -> np.ndarray:
    """A peaked detector distribution over NUM_CLASSES classes: 0.9 on class_id, rest spread."""
    probs = np.full(NUM_CLASSES, 0.1 / NUM_CLASSES, dtype=np.float32)
    probs[class_id] += 0.9
    return probs / probs.sum(dtype=np.float32)


def region_box(rng: np.random.Generator) -> np.ndarray:
    """A random box (x1, y1, x2, y2 in pixels); objects and background regions are drawn alike, so
    the boxes tell nothing about the scene: every answer is in the features."""
    x1, y1 = rng.uniform(0, 0.7, size=2)
    width, height = rng.uniform(0.1, 0.3, size=2)
    return np.array([x1 * IMAGE_WIDTH, y1 * IMAGE_HEIGHT, (x1 + width) * IMAGE_WIDTH,
                     (y1 + height) * IMAGE_HEIGHT], dtype=np.float32)


def image_record(dialog: ToyDialog, directions: FeatureDirections, boxes_per_image: int,
                 signal: float, noise: float, rng: np.random.Generator) -> dict:
    """The feature-store record of a dialog's image: its objects plus background regions, the
    attribute directions scaled by `signal`, plus Gaussian noise of std `noise`."""
    scene = dialog.scene
    background = sum(directions[f"{name}:{value}"] for name, value in zip(SCENE_PROPERTIES, scene.properties))
    features = [directions[f"shape:{obj.shape}"] + directions[f"colour:{obj.colour}"] for obj in scene.objects]
    classes = [object_class(obj) for obj in scene.objects]
    for _ in range(boxes_per_image - len(scene.objects)):
        features.append(background.copy())
        classes.append(background_class(scene))
    boxes = [region_box(rng) for _ in range(boxes_per_image)]
    order = rng.permutation(boxes_per_image)
    feature_array = signal * np.stack(features)[order]
    feature_array += noise * rng.standard_normal(feature_array.shape).astype(np.float32)
    return {
        "image_id": dialog.image_id, "image_h": IMAGE_HEIGHT, "image_w": IMAGE_WIDTH,
        "num_boxes": boxes_per_image, "features": feature_array.astype(np.float32),
        "boxes": np.stack(boxes)[order].astype(np.float32),
        "cls_prob": np.stack([class_distribution(classes[i]) for i in order]),
    }


def object_regions(scene: ToyScene, record: dict) -> Dict[ToyObject, int]:
    """Each object's region as the model sees the image: 1 + its box in the record (region 0 is
    the whole image); objects have distinct shapes, so their detector classes tell them apart."""
    classes = record["cls_prob"].argmax(axis=1).tolist()
    return {obj: 1 + classes.index(object_class(obj)) for obj in scene.objects}


RGB = {
    "red": (230, 25, 45), "blue": (30, 90, 230), "green": (40, 170, 60), "yellow": (250, 225, 20),
    "purple": (140, 50, 180), "orange": (250, 130, 20),
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "pink": (255, 182, 193),
    "brown": (139, 69, 19), "beige": (245, 245, 220),
}
"""The drawn colour of every object and background colour (the two sets share no colour)."""
PATTERN_STEP = 24
"""Pixels between the stripes, dots or lines of a background pattern."""


def pattern_colour(background: str) -> Tuple[int, int, int]:
    """The colour of a background's pattern marks: the background 40% of the way to black (light
    backgrounds) or to white (dark ones), so they never look like an object's colour."""
    rgb = np.array(RGB[background], dtype=np.float64)
    target = 0.0 if rgb.mean() > 100 else 255.0
    return tuple(int(round(value + 0.4 * (target - value))) for value in rgb)


def draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, colour: Tuple[int, int, int]) -> None:
    """The marks of a background pattern over the whole picture (nothing for plain)."""
    step = PATTERN_STEP
    if pattern in ("striped", "grid"):
        for y in range(step // 2, IMAGE_HEIGHT, step):
            draw.rectangle((0, y, IMAGE_WIDTH, y + (step // 3 if pattern == "striped" else 2)), fill=colour)
    if pattern == "grid":
        for x in range(step // 2, IMAGE_WIDTH, step):
            draw.rectangle((x, 0, x + 2, IMAGE_HEIGHT), fill=colour)
    if pattern == "dotted":
        for y in range(step // 2, IMAGE_HEIGHT, step):
            for x in range(step // 2, IMAGE_WIDTH, step):
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    if pattern == "checkered":
        for y in range(0, IMAGE_HEIGHT, step):
            for x in range((y // step) % 2 * step, IMAGE_WIDTH, 2 * step):
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=colour)
    if pattern == "wavy":
        xs = np.arange(0, IMAGE_WIDTH + 1, 4)
        for y in range(step // 2, IMAGE_HEIGHT, step):
            draw.line(list(zip(xs.tolist(), (y + 5 * np.sin(xs / 12.0)).tolist())), fill=colour, width=3)


def shape_outline(shape: str, box: Sequence[float]) -> List[Tuple[float, float]]:
    """The polygon of a shape in a box (x1, y1, x2, y2), for the shapes drawn as polygons."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    if shape == "star":  # five points on the box's ellipse, the inner corners at 0.4 of it
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
        xs, ys = cx + radii * width * np.cos(angles), cy - radii * height * np.sin(angles)
        return list(zip(xs.tolist(), ys.tolist()))
    if shape == "heart":  # the lower point of a heart; the two lobes are ellipses (draw_object)
        return [(x1, y1 + 0.35 * height), (x2, y1 + 0.35 * height), (cx, y2)]
    raise ValueError(shape)


def draw_object(draw: ImageDraw.ImageDraw, obj: ToyObject, box: Sequence[float]) -> None:
    """An object as its shape in its colour, filling its box."""
    colour = RGB[obj.colour]
    x1, y1, x2, y2 = box
    if obj.shape == "circle":
        draw.ellipse(tuple(box), fill=colour)
    elif obj.shape == "square":
        draw.rectangle(tuple(box), fill=colour)
    else:
        draw.polygon(shape_outline(obj.shape, box), fill=colour)
    if obj.shape == "heart":
        width, height = x2 - x1, y2 - y1
        draw.ellipse((x1, y1, x1 + width / 2, y1 + 0.6 * height), fill=colour)
        draw.ellipse((x1 + width / 2, y1, x2, y1 + 0.6 * height), fill=colour)


def draw_scene(scene: ToyScene, record: dict, path: Path) -> None:
    """Write the picture of a scene as PNG: the background in its colour and pattern, then each
    object in its box of `record` (largest first, so a small object stays visible on a large one)."""
    image = Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT), RGB[scene.property("background")])
    draw = ImageDraw.Draw(image)
    draw_pattern(draw, scene.property("pattern"), pattern_colour(scene.property("background")))
    boxes = {obj: record["boxes"][region - 1].tolist() for obj, region in object_regions(scene, record).items()}
    area = {obj: (x2 - x1) * (y2 - y1) for obj, (x1, y1, x2, y2) in boxes.items()}
    for obj in sorted(scene.objects, key=lambda obj: -area[obj]):
        draw_object(draw, obj, boxes[obj])
    image.save(path, format="PNG", compress_level=1)


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
    """A tiny two-stream model in the key set and order of the reference's model configs, without
    dropout (a model this small, trained for minutes from scratch, underfits; dropout also costs
    a tenth of a CPU training step)."""
    return {
        "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "hidden_size": hidden_size, "initializer_range": 0.1, "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": 512, "num_attention_heads": 2, "num_hidden_layers": 2,
        "type_vocab_size": 2, "vocab_size": vocab_size, "v_feature_size": FEATURE_SIZE,
        "v_target_size": NUM_CLASSES, "v_hidden_size": hidden_size, "v_num_hidden_layers": 1,
        "v_num_attention_heads": 2, "v_intermediate_size": 2 * hidden_size,
        "bi_hidden_size": hidden_size, "bi_num_attention_heads": 2,
        "bi_intermediate_size": 2 * hidden_size, "bi_attention_type": 1,
        "v_attention_probs_dropout_prob": 0.0, "v_hidden_act": "gelu", "v_hidden_dropout_prob": 0.0,
        "v_initializer_range": 0.02, "v_biattention_id": [0], "t_biattention_id": [1],
        "pooling_method": "mul",
    }


IMAGE_IDS = range(100000, 1000000)
"""The image ids the generator draws from, one per dialog."""
MAX_SEED = 2**32 - 1
"""Seeds are 0..MAX_SEED (NumPy's generators take no negative seed)."""
EXTRA_OUTPUTS = frozenset({"visdial_img_feat.h5", "images/" + "[0-9]" * len(str(IMAGE_IDS[-1])) + ".png"} | {
    f"visdial_1.0_{stem}_processed.json" for stem in ("train", "val", "test", "train_dense",
                                                      "train_dense_annotations", "val_dense_annotations")})
"""What an earlier run may have written that this one need not (-h5, the pictures of other image
ids or that -no_images skips), and what scripts/demo.sh and utils/benchmarking/toy.py preprocess
into the folder beside the set: replaced with the set (utils/outputs.atomic_folder patterns)."""


def unique_image_ids(count: int, rng: random.Random) -> List[int]:
    return rng.sample(IMAGE_IDS, count)


def check_arguments(seed: int, train_dialogs: int, whole_image_dialogs: int, binding_dialogs: int, val_dialogs: int,
                    test_dialogs: int, dense_train_fraction: float, boxes_per_image: int, min_objects: int,
                    max_objects: int, image_signal: float, noise: float, hidden_size: int,
                    question_types: Sequence[str], rounds: int) -> None:
    """Raise UserError for the first bad argument, before anything is written."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"-seed must be in 0..{MAX_SEED}, got {seed}")
    if hidden_size < 2 or hidden_size % 2:
        raise UserError(f"-hidden_size must be an even number >= 2 (the toy model has 2 attention heads), "
                        f"got {hidden_size}")
    if not 2 <= min_objects <= max_objects <= len(SHAPES) - 1:
        raise UserError(f"-min_objects/-max_objects must satisfy 2 <= min <= max <= {len(SHAPES) - 1}")
    if boxes_per_image <= max_objects:
        raise UserError(f"-boxes_per_image {boxes_per_image} must be more than -max_objects {max_objects} "
                        "(the background needs a region)")
    if min(train_dialogs, val_dialogs, test_dialogs) < 1:
        raise UserError("-train_dialogs, -val_dialogs and -test_dialogs must be at least 1")
    for flag, value in (("-whole_image_dialogs", whole_image_dialogs), ("-binding_dialogs", binding_dialogs)):
        if value < 0:
            raise UserError(f"{flag} must be at least 0, got {value}")
    if (dialogs := train_dialogs + whole_image_dialogs + binding_dialogs + val_dialogs + test_dialogs) > len(IMAGE_IDS):
        raise UserError(f"-train_dialogs, -whole_image_dialogs, -binding_dialogs, -val_dialogs and -test_dialogs: "
                        f"{dialogs} dialogs, "
                        f"more than the {len(IMAGE_IDS)} image ids the generator has (one image per dialog)")
    if not 0.0 <= dense_train_fraction <= 1.0:
        raise UserError(f"-dense_train_fraction {dense_train_fraction} is not between 0 and 1")
    for flag, value in (("-image_signal", image_signal), ("-noise", noise)):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{flag} must be a finite number >= 0, got {value}")
    unknown = [name for name in question_types if name not in QUESTION_TYPES]
    if unknown or not question_types:
        raise UserError(f"-question_types: unknown type {unknown[0] if unknown else '(none given)'}; "
                        f"choose from {', '.join(QUESTION_TYPES)}")
    if question_types == ["history"]:
        raise UserError("-question_types: history questions need a round of another type before them")
    if not 1 <= rounds <= NUM_ROUNDS:
        raise UserError(f"-rounds must be in 1..{NUM_ROUNDS}, got {rounds}")


def make_toy_data(out_dir: Path, **settings) -> Dict[str, Path]:
    """Write the toy dataset (`write_toy_data`, which takes `settings`) as one set: into a
    temporary folder renamed to `out_dir` at the end, so a failure halfway leaves the previous set
    there as it was; returns the written paths by name."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir, "a toy data set", EXTRA_OUTPUTS) as folder:
        paths = write_toy_data(folder, **settings)
    return {name: out_dir / path.relative_to(folder) for name, path in paths.items()}


def write_toy_data(out_dir: Path, seed: int = 0, train_dialogs: int = 1000, val_dialogs: int = 40,
                  test_dialogs: int = 20, dense_train_fraction: float = 0.5, boxes_per_image: int = 6,
                  min_objects: int = 2, max_objects: int = 4, image_signal: float = 1.0, noise: float = 0.1,
                  hidden_size: int = 32,
                  write_hdf5: bool = False, question_types: Sequence[str] = tuple(QUESTION_TYPES),
                  rounds: int = NUM_ROUNDS, whole_image_dialogs: int = 0, binding_dialogs: int = 0,
                  draw_images: bool = True) -> Dict[str, Path]:
    """Write the toy dataset under out_dir; returns the written paths by name (`draw_images`:
    also the pictures, images/<image_id>.png).

    The same arguments always give byte-identical json, vocab and config, and identical features;
    `image_signal` and `noise` change the features only (`image_signal=0`: images that tell nothing,
    a control for how much a model relies on them).
    """
    out_dir = Path(out_dir)
    question_types = list(dict.fromkeys(question_types))
    check_arguments(seed, train_dialogs, whole_image_dialogs, binding_dialogs, val_dialogs, test_dialogs,
                    dense_train_fraction, boxes_per_image, min_objects, max_objects, image_signal, noise, hidden_size,
                    question_types, rounds)
    rng = random.Random(seed)
    answer_pool = all_answer_strings()
    sizes = {"train": train_dialogs, "val": val_dialogs, "test": test_dialogs}
    image_ids = iter(unique_image_ids(sum(sizes.values()) + whole_image_dialogs, rng))
    dialogs = {split: [make_dialog(next(image_ids), answer_pool, rng, min_objects, max_objects, question_types,
                                   rounds) for _ in range(size)] for split, size in sizes.items()}
    dialogs["train"] += [make_dialog(next(image_ids), answer_pool, rng, min_objects, max_objects, ["one_hop"],
                                     rounds) for _ in range(whole_image_dialogs)]
    rng.shuffle(dialogs["train"])
    test_rounds = {dialog.image_id: rng.randint(1, len(dialog.questions)) for dialog in dialogs["test"]}
    binding = make_binding_dialogs(binding_dialogs, seed, {dialog.image_id for split in dialogs.values()
                                                           for dialog in split}, answer_pool, min_objects,
                                   max_objects, rounds)
    written = {**dialogs, "train": dialogs["train"] + binding}  # the binding dialogs last, in the json and the LMDB

    paths: Dict[str, Path] = {}
    for split in SPLITS:
        paths[split] = out_dir / f"visdial_1.0_{split}.json"
        write_json(paths[split], split_json(split, written[split], test_rounds))
    dense_train = rng.sample(dialogs["train"], round(dense_train_fraction * train_dialogs))
    paths["train_dense"] = out_dir / "visdial_1.0_train_dense_annotations.json"
    write_json(paths["train_dense"], dense_annotations(dense_train, "relevance", rng))
    paths["val_dense"] = out_dir / "visdial_1.0_val_dense_annotations.json"
    write_json(paths["val_dense"], dense_annotations(dialogs["val"], "gt_relevance", rng))

    paths["features"] = out_dir / "visdial_img_feat.lmdb"
    if draw_images:
        paths["images"] = out_dir / "images"
        paths["images"].mkdir(exist_ok=True)
    regions: Dict[int, Dict[ToyObject, int]] = {}
    write_lmdb_feature_store(str(paths["features"]), image_records([*dialogs.values(), binding], seed, boxes_per_image,
                                                                   image_signal, noise, regions, paths.get("images")))
    for split in SPLITS:
        paths[f"{split}_question_types"] = out_dir / f"visdial_1.0_{split}_question_types.json"
        asked_rounds = test_rounds if SPLITS[split].last_round_only else None
        write_question_types(paths[f"{split}_question_types"],
                             {name: QUESTION_TYPES[name] for name in question_types},
                             round_types(written[split], regions, asked_rounds))
    if write_hdf5:
        paths["features_hdf5"] = out_dir / "visdial_img_feat.h5"
        convert_lmdb_to_hdf5(str(paths["features"]), str(paths["features_hdf5"]), show_progress=False)

    vocab = build_vocab(all_texts(answer_pool))
    paths["vocab"] = out_dir / "vocab.txt"
    write_text(paths["vocab"], "\n".join(vocab) + "\n")
    paths["model_config"] = out_dir / "model_config.json"
    write_json(paths["model_config"], model_config(len(vocab), hidden_size))
    return paths


def image_records(dialogs: Sequence[List[ToyDialog]], seed: int, boxes_per_image: int, signal: float,
                  noise: float, regions: Dict[int, Dict[ToyObject, int]], images: Optional[Path]) -> Iterator[dict]:
    """The feature records of the images of every list of `dialogs`, in order; fills `regions` (image
    id -> object -> its region) and draws each image into the folder `images` when it is given."""
    directions = FeatureDirections(seed)
    rng = np.random.default_rng(seed + 1)
    for split in dialogs:
        for dialog in split:
            record = image_record(dialog, directions, boxes_per_image, signal, noise, rng)
            regions[dialog.image_id] = object_regions(dialog.scene, record)
            if images is not None:
                draw_scene(dialog.scene, record, images / f"{dialog.image_id}.png")
            yield record


def all_texts(answer_pool: Sequence[str]) -> List[str]:
    """Every caption, question and answer the generator can write (the vocab does not depend on
    which of them a seed draws)."""
    questions = [template.format(shape=shape, colour=colour) for template in QUESTION_TEXTS.values()
                 for shape, colour in zip(SHAPES, COLOURS)]
    questions += [question for question, _, _, _ in SCENE_PROPERTIES.values()]
    captions = [caption_of(ToyScene((), (), day), with_day) for day in DAYS for with_day in (True, False)]
    return list(answer_pool) + questions + captions


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-out", "--out", default="data/toy", help="output folder")
    parser.add_argument("-seed", "--seed", type=int, default=0)
    parser.add_argument("-train_dialogs", "--train_dialogs", type=int, default=1000)
    parser.add_argument("-val_dialogs", "--val_dialogs", type=int, default=40)
    parser.add_argument("-test_dialogs", "--test_dialogs", type=int, default=20)
    parser.add_argument("-dense_train_fraction", "--dense_train_fraction", type=float, default=0.5,
                        help="share of train dialogs with one densely annotated round")
    parser.add_argument("-boxes_per_image", "--boxes_per_image", type=int, default=6,
                        help="regions per image: the objects, the rest background")
    parser.add_argument("-min_objects", "--min_objects", type=int, default=2)
    parser.add_argument("-max_objects", "--max_objects", type=int, default=4)
    parser.add_argument("-image_signal", "--image_signal", type=float, default=1.0,
                        help="scale of the attribute directions in the region features (0: images that "
                             "tell nothing, a control)")
    parser.add_argument("-noise", "--noise", type=float, default=0.1,
                        help="std of the Gaussian noise added to every region feature")
    parser.add_argument("-hidden_size", "--hidden_size", type=int, default=32,
                        help="hidden size of every stream of the tiny model config")
    parser.add_argument("-question_types", "--question_types", default=",".join(QUESTION_TYPES),
                        help=f"comma-separated question types to ask (default: all of {', '.join(QUESTION_TYPES)})")
    parser.add_argument("-rounds", "--rounds", type=int, default=NUM_ROUNDS,
                        help="at most this many rounds per dialog")
    parser.add_argument("-whole_image_dialogs", "--whole_image_dialogs", type=int, default=0,
                        help="more train dialogs, on other images, that ask only the one-hop (whole-image) questions")
    parser.add_argument("-binding_dialogs", "--binding_dialogs", type=int, default=0,
                        help="more train dialogs, on other images, that ask only binding questions (one per object)")
    parser.add_argument("-h5", "--h5", action="store_true",
                        help="also write the features as HDF5 (visdial_img_feat.h5)")
    parser.add_argument("-no_images", "--no_images", action="store_true",
                        help="do not draw the images (images/<image_id>.png)")
    args = parser.parse_args(argv)
    args.question_types = list(dict.fromkeys(name.strip() for name in args.question_types.split(",") if name.strip()))
    check_arguments(args.seed, args.train_dialogs, args.whole_image_dialogs, args.binding_dialogs, args.val_dialogs,
                    args.test_dialogs, args.dense_train_fraction, args.boxes_per_image, args.min_objects,
                    args.max_objects, args.image_signal, args.noise, args.hidden_size, args.question_types, args.rounds)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    check_outputs([Output("-out", Path(args.out), is_folder=True, what="the toy data folder")], {})
    paths = make_toy_data(Path(args.out), seed=args.seed, train_dialogs=args.train_dialogs,
                          val_dialogs=args.val_dialogs, test_dialogs=args.test_dialogs,
                          dense_train_fraction=args.dense_train_fraction,
                          boxes_per_image=args.boxes_per_image, min_objects=args.min_objects,
                          max_objects=args.max_objects, image_signal=args.image_signal, noise=args.noise,
                          hidden_size=args.hidden_size, write_hdf5=args.h5,
                          question_types=args.question_types,
                          rounds=args.rounds, whole_image_dialogs=args.whole_image_dialogs,
                          binding_dialogs=args.binding_dialogs,
                          draw_images=not args.no_images)
    print(f"toy VisDial written to {args.out}:")
    for name, path in paths.items():
        print(f"  {name:20s} {path}")


if __name__ == "__main__":
    run_cli(main)
