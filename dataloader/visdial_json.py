"""Readers of the VisDial v1.0 json files: load, validate, return the data as stored.

A VisDial split file is `{"version", "split", "data": {"questions": [str], "answers": [str],
"dialogs": [dialog]}}`, a dialog `{"image_id": int, "caption": str, "dialog": [round]}`. Train and
val rounds are `{"question", "answer", "answer_options": [100 ints], "gt_index"}` (indices into the
split's question / answer lists, `answer_options[gt_index] == answer`). In test dialogs the earlier
rounds are `{"question", "answer"}` and the last round is `{"question", "answer_options"}`; the
preprocessed test file adds `round_id` (the original number of rounds) to every dialog.

Dense annotation files are lists of `{"image_id", "round_id" (1-based), "gt_relevance" | "relevance":
[100 floats]}` (val files use `gt_relevance`, train files `relevance`).

These readers know nothing about BERT: every problem is reported as a one-line UserError naming
the file, the dialog and what is wrong.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from utils.errors import UserError

NUM_ANSWER_OPTIONS = 100
SPLITS = ("train", "val", "test")


def read_json(path: str | os.PathLike):
    """Parse a json file; a missing or malformed file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def _check_index(value, size: int, where: str, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < size:
        raise UserError(f"{where}: {what} {value!r} is out of range (0..{size - 1})")


def _check_options(options, num_answers: int, where: str) -> None:
    if not isinstance(options, list) or len(options) != NUM_ANSWER_OPTIONS:
        count = len(options) if isinstance(options, list) else type(options).__name__
        raise UserError(f"{where}: has {count} answer options, expected {NUM_ANSWER_OPTIONS}")
    array = np.asarray(options)
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= num_answers:
        raise UserError(f"{where}: an answer option is not an answer index in 0..{num_answers - 1}")


def _validate_dialog(dialog, position: int, split: str, num_questions: int, num_answers: int,
                     path: Path, processed: bool) -> None:
    where = f"{path}: dialog {position}"
    if not isinstance(dialog, dict) or not {"image_id", "caption", "dialog"} <= dialog.keys():
        raise UserError(f"{where}: needs image_id, caption and dialog")
    if not isinstance(dialog["image_id"], int) or not isinstance(dialog["caption"], str):
        raise UserError(f"{where}: image_id must be an int and caption a string")
    where = f"{path}: dialog of image {dialog['image_id']}"
    rounds = dialog["dialog"]
    if not isinstance(rounds, list) or not rounds:
        raise UserError(f"{where}: has no rounds")
    for number, turn in enumerate(rounds, start=1):
        round_where = f"{where}, round {number}"
        if not isinstance(turn, dict) or "question" not in turn:
            raise UserError(f"{round_where}: has no question")
        _check_index(turn["question"], num_questions, round_where, "question index")
        is_last_test_round = split == "test" and number == len(rounds)
        if not is_last_test_round:
            if "answer" not in turn:
                raise UserError(f"{round_where}: has no answer")
            _check_index(turn["answer"], num_answers, round_where, "answer index")
        if split != "test" or is_last_test_round:
            _check_options(turn.get("answer_options"), num_answers, round_where)
        if split != "test":
            _check_index(turn.get("gt_index"), NUM_ANSWER_OPTIONS, round_where, "gt_index")
            if turn["answer_options"][turn["gt_index"]] != turn["answer"]:
                raise UserError(f"{round_where}: answer_options[gt_index] is not the answer")
    if split == "test" and processed and not isinstance(dialog.get("round_id"), int):
        raise UserError(f"{where}: has no round_id (run preprocessing/pre_process_visdial.py first)")


def load_visdial_json(path: str | os.PathLike, split: str, processed: bool = False) -> dict:
    """Load and validate a VisDial split file; returns the parsed json (see the module docstring).

    split: "train", "val" or "test" (decides which round fields are required). processed: the
    file is an output of preprocessing (test dialogs must then carry `round_id`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    content = read_json(path)
    data = content.get("data") if isinstance(content, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("dialogs"), list):
        raise UserError(f"{path}: not a VisDial file (no data.dialogs list)")
    for field in ("questions", "answers"):
        texts = data.get(field)
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise UserError(f"{path}: data.{field} must be a list of strings")
    for position, dialog in enumerate(data["dialogs"]):
        _validate_dialog(dialog, position, split, len(data["questions"]), len(data["answers"]), path, processed)
    return content


def relevance_of(annotation: dict) -> list:
    """The 100 relevance values of a dense annotation (`gt_relevance` in val files, `relevance` in train)."""
    return annotation["gt_relevance"] if "gt_relevance" in annotation else annotation["relevance"]


def load_dense_annotations(path: str | os.PathLike) -> list[dict]:
    """Load and validate a dense annotation file (module docstring); returns the parsed list."""
    path = Path(path)
    annotations = read_json(path)
    if not isinstance(annotations, list):
        raise UserError(f"{path}: not a dense annotation file (expected a json list)")
    for position, annotation in enumerate(annotations):
        where = f"{path}: annotation {position}"
        if not isinstance(annotation, dict) or not {"image_id", "round_id"} <= annotation.keys() or not (
                "gt_relevance" in annotation or "relevance" in annotation):
            raise UserError(f"{where}: needs image_id, round_id and gt_relevance (or relevance)")
        if not isinstance(annotation["round_id"], int) or annotation["round_id"] < 1:
            raise UserError(f"{where}: round_id {annotation['round_id']!r} is not a 1-based round")
        relevance = relevance_of(annotation)
        if not isinstance(relevance, list) or len(relevance) != NUM_ANSWER_OPTIONS or not all(
                isinstance(value, (int, float)) for value in relevance):
            raise UserError(f"{where}: relevance must be {NUM_ANSWER_OPTIONS} numbers")
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
