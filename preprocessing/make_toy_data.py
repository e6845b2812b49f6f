"""Build a small synthetic VisDial v1.0 dataset ("toy VisDial") whose questions come in graded types.

The types, the option order and the pictures: docs/learning.md and docs/explain.md. Every flag is
checked before anything is written; the files are written as one set (utils/outputs.atomic_folder).

Usage:
    python preprocessing/make_toy_data.py -out data/toy -seed 0 -train_dialogs 1000
"""
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, fields
from numbers import Integral, Real
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
    text: str
    question_type: str
    kind: str   # of the answer (VALUES)
    value: str
    subject: str   # what it asks about: the answer of a history question after it
    related_values: Tuple[str, ...] = ()   # true of other objects: relevance 0.5
    objects: Tuple[ToyObject, ...] = ()   # whose regions answer it (none for a "no")


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


def sample_scene(rng: random.Random, min_objects: int, max_objects: int) -> ToyScene:
    count = rng.randint(min_objects, max_objects)
    objects = tuple(ToyObject(shape, colour)
                    for shape, colour in zip(rng.sample(SHAPES, count), rng.sample(COLOURS, count)))
    properties = tuple(rng.choice(values) for _, _, values, _ in SCENE_PROPERTIES.values())
    return ToyScene(objects, properties, rng.choice(DAYS))


def caption_of(scene: ToyScene, with_day: bool) -> str:  # nothing the image shows
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
    """The question about `obj`'s `kind` ("colour" or "shape"), naming it by the other attribute."""
    name = {"shape": obj.shape} if kind == "colour" else {"colour": obj.colour}
    return ToyQuestion(QUESTION_TEXTS[f"{kind}_of"].format(**name), "binding", kind, getattr(obj, kind),
                       subject_phrase(**name), tuple(getattr(other, kind) for other in objects if other is not obj),
                       (obj,))


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
    """100 distinct options and the ground truth's position: the other values of the question's kind,
    the right answer's paraphrases, one answer of every other kind ("yes" to a colour question), the rest."""
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
    scene = sample_scene(rng, min_objects, max_objects)
    pools = question_pools(scene, rng)
    questions: List[ToyQuestion] = []
    for question_type in round_plan(types, max_rounds, rng):
        questions.append(ToyQuestion(QUESTION_TEXTS["history"], "history", "subject", questions[-1].subject,
                                     "the last question") if question_type == "history"
                         else pools[question_type].pop())
    return dialog_of(image_id, scene, questions, "caption" in types, answer_pool, rng)


def make_binding_dialogs(count: int, seed: int, used_ids: set, answer_pool: Sequence[str], min_objects: int,
                         max_objects: int, max_rounds: int) -> List[ToyDialog]:
    """`count` dialogs on images not in `used_ids` asking one binding question per object, in random
    order, its colour or its shape (never both: no round is told by the one before); drawn from their
    own random stream, so that the rest of the set is the same with or without them."""
    rng = random.Random(f"{seed} binding")
    image_ids = [image_id for image_id in rng.sample(IMAGE_IDS, count + len(used_ids)) if image_id not in used_ids]
    dialogs = []
    for image_id in image_ids[:count]:
        scene = sample_scene(rng, min_objects, max_objects)
        objects = list(scene.objects)
        rng.shuffle(objects)
        questions = [binding_question(obj, rng.choice(("colour", "shape")), scene.objects) for obj in objects]
        dialogs.append(dialog_of(image_id, scene, questions[:max_rounds], False, answer_pool, rng))
    return dialogs


def dialog_of(image_id: int, scene: ToyScene, questions: List[ToyQuestion], with_day: bool,
              answer_pool: Sequence[str], rng: random.Random) -> ToyDialog:
    options, gt_indices = zip(*(round_options(question, answer_pool, rng) for question in questions))
    return ToyDialog(image_id, scene, caption_of(scene, with_day), questions, list(options), list(gt_indices))


def split_json(split: str, dialogs: Sequence[ToyDialog], test_rounds: Dict[int, int]) -> dict:
    """The raw VisDial v1.0 json of a split; a test dialog stops at round test_rounds[image_id],
    which has options but no answer."""
    questions: Dict[str, int] = {}   # text -> its position in the json's list
    answers: Dict[str, int] = {}
    json_dialogs = []
    last_round_only = SPLITS[split].last_round_only
    for dialog in dialogs:
        num_rounds = test_rounds[dialog.image_id] if last_round_only else len(dialog.questions)
        rounds = []
        for round_index in range(num_rounds):
            question = questions.setdefault(dialog.questions[round_index].text, len(questions))
            option_ids = [answers.setdefault(text, len(answers)) for text in dialog.options[round_index]]
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
            "data": {"questions": list(questions), "answers": list(answers), "dialogs": json_dialogs}}


def round_types(dialogs: Sequence[ToyDialog], object_regions: Dict[int, Dict[ToyObject, int]],
                num_rounds: Optional[Dict[int, int]] = None) -> List[dict]:
    """The types file's record of every round: its type and, where objects answer it, their regions and
    those of all the image's objects. object_regions: image id -> object -> region (0: the whole image)."""
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
        question, phrase = dialog.questions[round_index], PHRASINGS[dialog.questions[round_index].kind]
        related = {text for value in question.related_values for text in phrase(value)}
        relevance = [1.0 if text in phrase(question.value) else 0.5 if text in related else 0.0
                     for text in dialog.options[round_index]]
        annotations.append({"image_id": dialog.image_id, "round_id": round_index + 1, relevance_key: relevance})
    return annotations


def object_class(obj: ToyObject) -> int:  # 1..36; class 0 is the whole image
    return 1 + SHAPES.index(obj.shape) * len(COLOURS) + COLOURS.index(obj.colour)


def background_class(scene: ToyScene) -> int:  # 37 + the scene's property values as base-6 digits
    index = 0
    for (_, _, values, _), value in zip(SCENE_PROPERTIES.values(), scene.properties):
        index = index * len(values) + values.index(value)
    return 1 + len(SHAPES) * len(COLOURS) + index


def class_distribution(class_id: int) -> np.ndarray:  # 0.9 on class_id, the rest spread
    probs = np.full(NUM_CLASSES, 0.1 / NUM_CLASSES, dtype=np.float32)
    probs[class_id] += 0.9
    return probs / probs.sum(dtype=np.float32)


def region_box(rng: np.random.Generator) -> np.ndarray:
    """A random box (x1, y1, x2, y2 in pixels), drawn alike for every region: every answer is in the features."""
    x1, y1 = rng.uniform(0, 0.7, size=2)
    width, height = rng.uniform(0.1, 0.3, size=2)
    return np.array([x1 * IMAGE_WIDTH, y1 * IMAGE_HEIGHT, (x1 + width) * IMAGE_WIDTH,
                     (y1 + height) * IMAGE_HEIGHT], dtype=np.float32)


def image_record(dialog: ToyDialog, directions: Dict[str, np.ndarray], boxes_per_image: int,
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
    """Each object's region: 1 + its box in the record (found by its detector class; region 0 is the whole image)."""
    classes = record["cls_prob"].argmax(axis=1).tolist()
    return {obj: 1 + classes.index(object_class(obj)) for obj in scene.objects}


RGB = {
    "red": (230, 25, 45), "blue": (30, 90, 230), "green": (40, 170, 60), "yellow": (250, 225, 20),
    "purple": (140, 50, 180), "orange": (250, 130, 20),
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "pink": (255, 182, 193),
    "brown": (139, 69, 19), "beige": (245, 245, 220),
}
PATTERN_STEP = 24  # pixels between the stripes, dots or lines of a background pattern


def draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, background: str) -> None:
    """The marks of a background pattern (nothing for plain), in the background's colour 40% of the
    way to black (light ones) or white (dark ones), so that they never look like an object."""
    rgb = np.array(RGB[background], dtype=np.float64)
    target = 0.0 if rgb.mean() > 100 else 255.0
    colour = tuple(int(round(value + 0.4 * (target - value))) for value in rgb)
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


def draw_object(draw: ImageDraw.ImageDraw, obj: ToyObject, box: Sequence[float]) -> None:
    """An object as its shape in its colour, filling its box (x1, y1, x2, y2)."""
    colour = RGB[obj.colour]
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if obj.shape == "circle":
        draw.ellipse(tuple(box), fill=colour)
    elif obj.shape == "square":
        draw.rectangle(tuple(box), fill=colour)
    elif obj.shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=colour)
    elif obj.shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)
    elif obj.shape == "star":  # five points on the box's ellipse, the inner corners at 0.4 of it
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
        xs, ys = cx + radii * width * np.cos(angles), cy - radii * height * np.sin(angles)
        draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=colour)
    elif obj.shape == "heart":  # a lower point and two ellipses as lobes
        draw.polygon([(x1, y1 + 0.35 * height), (x2, y1 + 0.35 * height), (cx, y2)], fill=colour)
        draw.ellipse((x1, y1, x1 + width / 2, y1 + 0.6 * height), fill=colour)
        draw.ellipse((x1 + width / 2, y1, x2, y1 + 0.6 * height), fill=colour)
    else:
        raise ValueError(obj.shape)


def draw_scene(scene: ToyScene, record: dict, path: Path) -> None:
    """Write the picture of a scene as PNG: the background in its colour and pattern, then each
    object in its box of `record` (largest first, so a small object stays visible on a large one)."""
    image = Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT), RGB[scene.property("background")])
    draw = ImageDraw.Draw(image)
    draw_pattern(draw, scene.property("pattern"), scene.property("background"))
    boxes = {obj: record["boxes"][region - 1].tolist() for obj, region in object_regions(scene, record).items()}
    area = {obj: (x2 - x1) * (y2 - y1) for obj, (x1, y1, x2, y2) in boxes.items()}
    for obj in sorted(scene.objects, key=lambda obj: -area[obj]):
        draw_object(draw, obj, boxes[obj])
    image.save(path, format="PNG", compress_level=1)


WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def build_vocab(texts: Sequence[str]) -> List[str]:
    """bert-base-uncased's first 999 entries (the usual special token ids), every word of the texts, then
    the letters and ##letters, so that an unseen lower-case word splits instead of becoming [UNK]."""
    words = sorted({word for text in texts for word in WORD_PATTERN.findall(text.lower())})
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + list(BERT_SPECIAL_TOKENS[1:])
             + [f"[unused{i}]" for i in range(99, 994)])
    vocab += list(dict.fromkeys(words + letters + [f"##{letter}" for letter in letters]))
    return vocab


def model_config(vocab_size: int, hidden_size: int) -> dict:
    """A tiny model in the keys and order of the reference's configs, without dropout (a model this small,
    trained for minutes from scratch, underfits)."""
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


IMAGE_IDS = range(100000, 1000000)  # one per dialog
MAX_SEED = 2**32 - 1  # NumPy's generators take no negative seed
EXTRA_OUTPUTS = frozenset({"visdial_img_feat.h5", "images/" + "[0-9]" * len(str(IMAGE_IDS[-1])) + ".png"} | {
    f"visdial_1.0_{stem}_processed.json" for stem in ("train", "val", "test", "train_dense",
                                                      "train_dense_annotations", "val_dense_annotations")})
"""What an earlier run may have written that this one need not (-h5, the pictures of other image
ids or that -no_images skips), and what scripts/demo.sh and utils/benchmarking/toy.py preprocess
into the folder beside the set: replaced with the set (utils/outputs.atomic_folder patterns)."""
FLAG_HELP = {
    "dense_train_fraction": "share of train dialogs with one densely annotated round",
    "boxes_per_image": "regions per image: the objects, the rest background",
    "image_signal": "scale of the attribute directions in the region features (0: images that tell nothing, "
                    "a control)",
    "noise": "std of the Gaussian noise added to every region feature",
    "hidden_size": "hidden size of every stream of the tiny model config",
    "question_types": f"comma-separated question types to ask (default: all of {', '.join(QUESTION_TYPES)})",
    "rounds": "at most this many rounds per dialog",
    "whole_image_dialogs": "more train dialogs, on other images, that ask only the one-hop (whole-image) questions",
    "binding_dialogs": "more train dialogs, on other images, that ask only binding questions (one per object)",
}


@dataclass
class ToySettings:
    """The generator's settings (a flag each, in this order, but -h5 and -no_images), checked on
    creation: UserError for the first bad one. The same settings give byte-identical files."""
    seed: int = 0
    train_dialogs: int = 1000
    val_dialogs: int = 40
    test_dialogs: int = 20
    dense_train_fraction: float = 0.5
    boxes_per_image: int = 6
    min_objects: int = 2
    max_objects: int = 4
    image_signal: float = 1.0   # 0: images that tell nothing, a control (changes the features only, as noise)
    noise: float = 0.1
    hidden_size: int = 32
    question_types: Sequence[str] = tuple(QUESTION_TYPES)
    rounds: int = NUM_ROUNDS
    whole_image_dialogs: int = 0
    binding_dialogs: int = 0
    write_hdf5: bool = False
    draw_images: bool = True

    def __post_init__(self) -> None:
        for field in fields(self):
            value, kind = getattr(self, field.name), {int: Integral, float: Real, bool: bool}.get(field.type)
            if kind and (not isinstance(value, kind) or isinstance(value, bool) and field.type is not bool):
                raise UserError(f"{field.name} must be {field.type.__name__}, got {value!r}")
            if kind:
                setattr(self, field.name, field.type(value))  # numpy numbers as Python's
        if isinstance(self.question_types, str):
            raise UserError(f"question_types must be a sequence of type names, got {self.question_types!r}")
        self.question_types = list(dict.fromkeys(self.question_types))
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"-seed must be in 0..{MAX_SEED}, got {self.seed}")
        if self.hidden_size < 2 or self.hidden_size % 2:
            raise UserError(f"-hidden_size must be an even number >= 2 (the toy model has 2 attention heads), "
                            f"got {self.hidden_size}")
        if not 2 <= self.min_objects <= self.max_objects <= len(SHAPES) - 1:
            raise UserError(f"-min_objects/-max_objects must satisfy 2 <= min <= max <= {len(SHAPES) - 1}")
        if self.boxes_per_image <= self.max_objects:
            raise UserError(f"-boxes_per_image {self.boxes_per_image} must be more than -max_objects "
                            f"{self.max_objects} (the background needs a region)")
        if min(self.train_dialogs, self.val_dialogs, self.test_dialogs) < 1:
            raise UserError("-train_dialogs, -val_dialogs and -test_dialogs must be at least 1")
        for flag in ("whole_image_dialogs", "binding_dialogs"):
            if getattr(self, flag) < 0:
                raise UserError(f"-{flag} must be at least 0, got {getattr(self, flag)}")
        dialogs = (self.train_dialogs + self.whole_image_dialogs + self.binding_dialogs + self.val_dialogs
                   + self.test_dialogs)
        if dialogs > len(IMAGE_IDS):
            raise UserError(f"-train_dialogs, -whole_image_dialogs, -binding_dialogs, -val_dialogs and "
                            f"-test_dialogs: {dialogs} dialogs, more than the {len(IMAGE_IDS)} image ids the "
                            "generator has (one image per dialog)")
        if not 0.0 <= self.dense_train_fraction <= 1.0:
            raise UserError(f"-dense_train_fraction {self.dense_train_fraction} is not between 0 and 1")
        for flag in ("image_signal", "noise"):
            if not math.isfinite(getattr(self, flag)) or getattr(self, flag) < 0:
                raise UserError(f"-{flag} must be a finite number >= 0, got {getattr(self, flag)}")
        unknown = [name for name in self.question_types if name not in QUESTION_TYPES]
        if unknown or not self.question_types:
            raise UserError(f"-question_types: unknown type {unknown[0] if unknown else '(none given)'}; "
                            f"choose from {', '.join(QUESTION_TYPES)}")
        if self.question_types == ["history"]:
            raise UserError("-question_types: history questions need a round of another type before them")
        if not 1 <= self.rounds <= NUM_ROUNDS:
            raise UserError(f"-rounds must be in 1..{NUM_ROUNDS}, got {self.rounds}")


def make_toy_data(out_dir: Path, **settings) -> Dict[str, Path]:
    """Write the toy dataset (`settings`: ToySettings's) as one set: into a temporary folder renamed to
    `out_dir` at the end (a failure halfway leaves the previous set as it was); returns the paths by name."""
    options, out_dir = ToySettings(**settings), Path(out_dir)
    with atomic_folder(out_dir, "a toy data set", EXTRA_OUTPUTS) as folder:
        paths = write_toy_data(folder, options)
    return {name: out_dir / path.relative_to(folder) for name, path in paths.items()}


def write_toy_data(out_dir: Path, s: ToySettings) -> Dict[str, Path]:
    rng = random.Random(s.seed)
    answers = [text for kind, phrase in PHRASINGS.items() for value in VALUES[kind] for text in phrase(value)]
    answer_pool = list(dict.fromkeys(answers + list(FILLER_ANSWERS)))
    sizes = {"train": s.train_dialogs, "val": s.val_dialogs, "test": s.test_dialogs}
    image_ids = iter(rng.sample(IMAGE_IDS, sum(sizes.values()) + s.whole_image_dialogs))
    dialogs = {split: [make_dialog(next(image_ids), answer_pool, rng, s.min_objects, s.max_objects,
                                   s.question_types, s.rounds) for _ in range(size)] for split, size in sizes.items()}
    dialogs["train"] += [make_dialog(next(image_ids), answer_pool, rng, s.min_objects, s.max_objects, ["one_hop"],
                                     s.rounds) for _ in range(s.whole_image_dialogs)]
    rng.shuffle(dialogs["train"])
    test_rounds = {dialog.image_id: rng.randint(1, len(dialog.questions)) for dialog in dialogs["test"]}
    binding = make_binding_dialogs(s.binding_dialogs, s.seed, {dialog.image_id for split in dialogs.values()
                                                               for dialog in split}, answer_pool, s.min_objects,
                                   s.max_objects, s.rounds)
    written = {**dialogs, "train": dialogs["train"] + binding}  # the binding dialogs last, in the json and the LMDB

    paths: Dict[str, Path] = {}
    for split in SPLITS:
        paths[split] = out_dir / f"visdial_1.0_{split}.json"
        write_json(paths[split], split_json(split, written[split], test_rounds))
    dense_train = rng.sample(dialogs["train"], round(s.dense_train_fraction * s.train_dialogs))
    paths["train_dense"] = out_dir / "visdial_1.0_train_dense_annotations.json"
    write_json(paths["train_dense"], dense_annotations(dense_train, "relevance", rng))
    paths["val_dense"] = out_dir / "visdial_1.0_val_dense_annotations.json"
    write_json(paths["val_dense"], dense_annotations(dialogs["val"], "gt_relevance", rng))

    paths["features"] = out_dir / "visdial_img_feat.lmdb"
    if s.draw_images:
        paths["images"] = out_dir / "images"
        paths["images"].mkdir(exist_ok=True)
    regions: Dict[int, Dict[ToyObject, int]] = {}
    write_lmdb_feature_store(str(paths["features"]), image_records(
        [*dialogs.values(), binding], s.seed, s.boxes_per_image, s.image_signal, s.noise, regions, paths.get("images")))
    for split in SPLITS:
        paths[f"{split}_question_types"] = out_dir / f"visdial_1.0_{split}_question_types.json"
        asked_rounds = test_rounds if SPLITS[split].last_round_only else None
        write_question_types(paths[f"{split}_question_types"],
                             {name: QUESTION_TYPES[name] for name in s.question_types},
                             round_types(written[split], regions, asked_rounds))
    if s.write_hdf5:
        paths["features_hdf5"] = out_dir / "visdial_img_feat.h5"
        convert_lmdb_to_hdf5(str(paths["features"]), str(paths["features_hdf5"]), show_progress=False)

    # every caption, question and answer the generator can write, whichever of them a seed draws
    texts = answer_pool + [template.format(shape=shape, colour=colour) for template in QUESTION_TEXTS.values()
                           for shape, colour in zip(SHAPES, COLOURS)]
    texts += [question for question, _, _, _ in SCENE_PROPERTIES.values()]
    texts += [caption_of(ToyScene((), (), day), with_day) for day in DAYS for with_day in (True, False)]
    vocab = build_vocab(texts)
    paths["vocab"] = out_dir / "vocab.txt"
    write_text(paths["vocab"], "\n".join(vocab) + "\n")
    paths["model_config"] = out_dir / "model_config.json"
    write_json(paths["model_config"], model_config(len(vocab), s.hidden_size))
    return paths


def image_records(dialogs: Sequence[List[ToyDialog]], seed: int, boxes_per_image: int, signal: float,
                  noise: float, regions: Dict[int, Dict[ToyObject, int]], images: Optional[Path]) -> Iterator[dict]:
    """The feature records of the images of every list of `dialogs`, in order; fills `regions` (image
    id -> object -> its region) and draws each image into the folder `images` when it is given."""
    direction_rng = np.random.default_rng(seed)  # a fixed random direction per attribute value
    directions = defaultdict(lambda: direction_rng.standard_normal(FEATURE_SIZE).astype(np.float32))
    rng = np.random.default_rng(seed + 1)
    for split in dialogs:
        for dialog in split:
            record = image_record(dialog, directions, boxes_per_image, signal, noise, rng)
            regions[dialog.image_id] = object_regions(dialog.scene, record)
            if images is not None:
                draw_scene(dialog.scene, record, images / f"{dialog.image_id}.png")
            yield record


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-out", "--out", default="data/toy", help="output folder")
    for field in fields(ToySettings)[:-2]:
        kind = str if field.name == "question_types" else field.type
        parser.add_argument(f"-{field.name}", f"--{field.name}", type=kind, help=FLAG_HELP.get(field.name),
                            default=",".join(field.default) if kind is str else field.default)
    parser.add_argument("-h5", "--h5", action="store_true",
                        help="also write the features as HDF5 (visdial_img_feat.h5)")
    parser.add_argument("-no_images", "--no_images", action="store_true",
                        help="do not draw the images (images/<image_id>.png)")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    args["question_types"] = [name.strip() for name in args["question_types"].split(",") if name.strip()]
    settings = ToySettings(write_hdf5=args.pop("h5"), draw_images=not args.pop("no_images"), **args)
    check_outputs([Output("-out", Path(out), is_folder=True, what="the toy data folder")], {})
    paths = make_toy_data(Path(out), **vars(settings))
    print(f"toy VisDial written to {out}:")
    for name, path in paths.items():
        print(f"  {name:20s} {path}")


if __name__ == "__main__":
    run_cli(main)
