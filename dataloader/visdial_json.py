"""Readers of the VisDial v1.0 json files (split files, dense annotations): load, validate every
field, return the data as stored; a problem is one UserError naming the file, the dialog and what is
wrong. The formats and their checks: docs/data.md "File formats"."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.inputs import is_text, read_json

NUM_ANSWER_OPTIONS = 100
MAX_ROUNDS = 10


@dataclass(frozen=True)
class Split:
    """One VisDial split, described once: the code asks these fields, never the split's name.

    last_round_only (test): a dialog stops at the round asked, which alone has answer options and no
    answer or gt_index. same_round_count (val): every dialog has as many rounds. A flag or phase of
    "" means none (samples_flag "": served whole; evalai_phase "": evaluate.py does not take it).
    """
    name: str
    json_flag: str
    dense_annotations_flag: str
    last_round_only: bool
    same_round_count: bool
    samples_flag: str
    evalai_phase: str


SPLITS = {split.name: split for split in (
    Split("train", "visdial_processed_train", "", last_round_only=False, same_round_count=False,
          samples_flag="num_train_samples", evalai_phase=""),
    Split("val", "visdial_processed_val", "visdial_processed_val_dense_annotations", last_round_only=False,
          same_round_count=True, samples_flag="num_val_samples", evalai_phase="val"),
    Split("test", "visdial_processed_test", "", last_round_only=True, same_round_count=False, samples_flag="",
          evalai_phase="test-std"),
)}
EVALUATED_SPLITS = tuple(name for name, split in SPLITS.items() if split.evalai_phase)


def _is_int(value) -> bool:
    return type(value) is int


def _check_image_id(value, where: str) -> None:
    if not _is_int(value) or not 0 <= value < 2**63:
        raise UserError(f"{where}: image_id {value!r} is not an image id (an integer >= 0)")


def _check_texts(texts: list, path: Path, what: str) -> None:
    """Every text must be a string that encodes to UTF-8 (json escapes can make lone surrogates)."""
    if not all(isinstance(text, str) for text in texts):
        position = next(index for index, text in enumerate(texts) if not isinstance(text, str))
        raise UserError(f"{path}: {what} {position} is a {type(texts[position]).__name__}, expected a string")
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        position = next(index for index, text in enumerate(texts) if not is_text(text))
        raise UserError(f"{path}: {what} {position} is not valid text (a lone UTF-16 surrogate escape)") from None


def _check_index(value, size: int, path: Path, dialog: dict, number: int, what: str) -> None:
    if not _is_int(value):
        raise UserError(f"{_round_where(path, dialog, number)}: {what} {value!r} is not an integer")
    if not 0 <= value < size:
        raise UserError(f"{_round_where(path, dialog, number)}: {what} {value!r} is out of range (0..{size - 1})")


def _round_where(path: Path, dialog: dict, number: int) -> str:
    return f"{path}: dialog of image {dialog['image_id']}, round {number}"


def _validate_dialog(dialog, position: int, split: str, num_questions: int, num_answers: int,
                     path: Path, processed: bool, with_options: list) -> None:
    """Check one dialog's fields and indices; append (dialog, round number, round) to
    `with_options` for every round whose answer options are checked later, all at once."""
    where = f"{path}: dialog {position}"
    if not isinstance(dialog, dict) or not {"image_id", "caption", "dialog"} <= dialog.keys():
        raise UserError(f"{where}: needs image_id, caption and dialog")
    _check_image_id(dialog["image_id"], where)
    if not isinstance(dialog["caption"], str):
        raise UserError(f"{where}: caption must be a string")
    rounds = dialog["dialog"]
    if not isinstance(rounds, list) or not 1 <= len(rounds) <= MAX_ROUNDS:
        count = len(rounds) if isinstance(rounds, list) else f"a {type(rounds).__name__}, no list of"
        raise UserError(f"{path}: dialog of image {dialog['image_id']}: has {count} rounds, expected "
                        f"1..{MAX_ROUNDS}")
    for number, turn in enumerate(rounds, start=1):
        if not isinstance(turn, dict) or "question" not in turn:
            raise UserError(f"{_round_where(path, dialog, number)}: has no question")
        _check_index(turn["question"], num_questions, path, dialog, number, "question index")
        is_last_test_round = SPLITS[split].last_round_only and number == len(rounds)
        if not is_last_test_round:
            if "answer" not in turn:
                raise UserError(f"{_round_where(path, dialog, number)}: has no answer")
            _check_index(turn["answer"], num_answers, path, dialog, number, "answer index")
        if not SPLITS[split].last_round_only:
            _check_index(turn.get("gt_index"), NUM_ANSWER_OPTIONS, path, dialog, number, "gt_index")
        if "history_start" in turn:
            _check_index(turn["history_start"], number, path, dialog, number, "history_start")
        if not SPLITS[split].last_round_only or is_last_test_round:
            with_options.append((dialog, number, turn))
    if SPLITS[split].last_round_only and processed:
        if "round_id" not in dialog:
            raise UserError(f"{path}: dialog of image {dialog['image_id']}: has no round_id "
                            "(run preprocessing/pre_process_visdial.py first)")
        round_id = dialog["round_id"]
        if not _is_int(round_id) or not len(rounds) <= round_id <= MAX_ROUNDS:
            raise UserError(f"{path}: dialog of image {dialog['image_id']}: round_id {round_id!r} must be an "
                            f"integer in {len(rounds)}..{MAX_ROUNDS} (its rounds, or more when the history was cut)")


def _check_answer_options(with_options: list, num_answers: int, check_answer: bool, path: Path) -> None:
    """Every listed round has 100 answer indices in range (and, for train / val, its answer at
    gt_index): one numpy pass over all rounds, then the first offending round is named."""
    for dialog, number, turn in with_options:
        options = turn.get("answer_options")
        if type(options) is not list or len(options) != NUM_ANSWER_OPTIONS:
            count = len(options) if isinstance(options, list) else type(options).__name__
            raise UserError(f"{_round_where(path, dialog, number)}: has {count} answer options, "
                            f"expected {NUM_ANSWER_OPTIONS}")
    try:
        options = np.array([turn["answer_options"] for _, _, turn in with_options])
    except ValueError:  # a list or an object among the options
        options = np.zeros(0)
    # (booleans, which numpy would take for integers, never get here: read_json(booleans=False) refuses them)
    if options.dtype.kind not in "iu" or options.ndim != 2:
        bad = np.ones(len(with_options), dtype=bool)
    else:
        bad = ((options < 0) | (options >= num_answers)).any(axis=1)
    for (dialog, number, turn), is_bad in zip(with_options, bad):
        wrong = [option for option in turn["answer_options"] if not (_is_int(option) and 0 <= option < num_answers)] \
            if is_bad else []
        if wrong:
            raise UserError(f"{_round_where(path, dialog, number)}: answer option {wrong[0]!r} is not an answer "
                            f"index in 0..{num_answers - 1}")
    if check_answer:
        gt_index = np.array([turn["gt_index"] for _, _, turn in with_options])
        answer = np.array([turn["answer"] for _, _, turn in with_options])
        wrong = np.flatnonzero(options[np.arange(len(options)), gt_index] != answer)
        if len(wrong):
            dialog, number, _ = with_options[int(wrong[0])]
            raise UserError(f"{_round_where(path, dialog, number)}: answer_options[gt_index] is not the answer")


def load_visdial_json(path: str | os.PathLike, split: str | None, processed: bool = False) -> dict:
    """Load and validate a VisDial split file; returns the parsed json. split: "train", "val",
    "test" or None for the one its "split" field names (`split_of`); processed: an output of
    preprocessing (test dialogs must then carry `round_id`)."""
    if split not in (*SPLITS, None):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}")
    path = Path(path)
    content = read_json(path, "file", booleans=False)
    if split is None:
        split = split_of(content, path)
    data = content.get("data") if isinstance(content, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("dialogs"), list):
        raise UserError(f"{path}: not a VisDial file (no data.dialogs list)")
    if not data["dialogs"]:
        raise UserError(f"{path}: the {split} split holds no dialogs")
    for field in ("questions", "answers"):
        texts = data.get(field)
        if not isinstance(texts, list):
            raise UserError(f"{path}: data.{field} must be a list of strings")
        _check_texts(texts, path, f"data.{field}")
    with_options = []
    for position, dialog in enumerate(data["dialogs"]):
        _validate_dialog(dialog, position, split, len(data["questions"]), len(data["answers"]), path, processed,
                         with_options)
    _check_texts([dialog["caption"] for dialog in data["dialogs"]], path, "caption of dialog")
    _check_unique_images(data["dialogs"], path)
    if SPLITS[split].same_round_count:
        _check_same_round_count(data["dialogs"], path)
    _check_answer_options(with_options, len(data["answers"]), not SPLITS[split].last_round_only, path)
    return content


def split_of(content, path: Path) -> str:
    """The split a parsed VisDial file names in its "split" field (train, val or test; VisDial's
    own files say "val2018" and the like)."""
    named = content.get("split") if isinstance(content, dict) else None
    split = next((split for split in SPLITS if isinstance(named, str) and named.startswith(split)), None)
    if split is None:
        raise UserError(f"{path}: not a VisDial split file (its \"split\" field is {named!r}, expected train, val "
                        "or test)")
    return split


def _check_unique_images(dialogs: list, path: Path) -> None:
    seen = {}
    for position, dialog in enumerate(dialogs):
        if dialog["image_id"] in seen:
            raise UserError(f"{path}: image {dialog['image_id']} has two dialogs ({seen[dialog['image_id']]} and "
                            f"{position})")
        seen[dialog["image_id"]] = position


def _check_same_round_count(dialogs: list, path: Path) -> None:
    expected = len(dialogs[0]["dialog"])
    for dialog in dialogs:
        if len(dialog["dialog"]) != expected:
            raise UserError(f"{path}: dialog of image {dialog['image_id']} has {len(dialog['dialog'])} rounds, "
                            f"the first val dialog {expected} (every val dialog needs the same number of rounds)")


def relevance_of(annotation: dict) -> list:
    """The 100 relevance values of a dense annotation (`gt_relevance` in val files, `relevance` in train)."""
    return annotation["gt_relevance"] if "gt_relevance" in annotation else annotation["relevance"]


def load_dense_annotations(path: str | os.PathLike) -> list[dict]:
    """Load and validate a dense annotation file; returns the parsed list."""
    path = Path(path)
    annotations = read_json(path, "file", booleans=False)
    if not isinstance(annotations, list):
        raise UserError(f"{path}: not a dense annotation file (expected a json list)")
    if not annotations:
        raise UserError(f"{path}: holds no dense annotations")
    for position, annotation in enumerate(annotations):
        where = f"{path}: annotation {position}"
        if not isinstance(annotation, dict) or not {"image_id", "round_id"} <= annotation.keys() or not (
                "gt_relevance" in annotation or "relevance" in annotation):
            raise UserError(f"{where}: needs image_id, round_id and gt_relevance (or relevance)")
        _check_image_id(annotation["image_id"], where)
        if not _is_int(annotation["round_id"]) or not 1 <= annotation["round_id"] <= MAX_ROUNDS:
            raise UserError(f"{where}: round_id {annotation['round_id']!r} is not a round in 1..{MAX_ROUNDS}")
        relevance = relevance_of(annotation)
        if not isinstance(relevance, list) or len(relevance) != NUM_ANSWER_OPTIONS or not all(
                type(value) in (int, float) for value in relevance):
            raise UserError(f"{where}: relevance must be {NUM_ANSWER_OPTIONS} numbers")
        wrong = [value for value in relevance if not (math.isfinite(value) and 0 <= value <= 1)]
        if wrong:
            raise UserError(f"{where}: relevance {wrong[0]!r} is not in [0, 1]")
    return annotations


def check_annotations_follow_dialogs(annotations: list[dict], dialogs: list[dict],
                                     annotation_path: str | os.PathLike) -> None:
    """Val files pair dialog i with annotation i: check the counts, image ids and round ids agree."""
    if len(annotations) != len(dialogs):
        raise UserError(f"{annotation_path}: {len(annotations)} annotations for {len(dialogs)} dialogs "
                        "(val needs one per dialog, in dialog order)")
    for position, (annotation, dialog) in enumerate(zip(annotations, dialogs)):
        if annotation["image_id"] != dialog["image_id"]:
            raise UserError(f"{annotation_path}: annotation {position} is for image {annotation['image_id']} "
                            f"but dialog {position} shows image {dialog['image_id']} (annotations must follow "
                            "the dialog order)")
        if annotation["round_id"] > len(dialog["dialog"]):
            raise UserError(f"{annotation_path}: annotation {position} names round {annotation['round_id']} "
                            f"but the dialog of image {dialog['image_id']} has {len(dialog['dialog'])} rounds")
