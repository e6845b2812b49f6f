"""Question-type files: the kind of question each dialog round asks, and optionally its relevant
and object regions (the format: docs/evaluation.md, "Metrics per question type").

    types = load_question_types("data/visdial_1.0_val_question_types.json")
    types.of(image_id=185565, round_id=1)    # -> "one_hop", or None when not listed
    types.regions[(185565, 3)]               # -> (2,): the relevant regions, for rounds that list them
    types.objects[(185565, 3)]               # -> (1, 2, 4): the object regions, for rounds that list them
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import UserError
from utils.outputs import write_json
from utils.inputs import read_json


@dataclass(frozen=True)
class QuestionTypes:
    """The contents of a question-type file: descriptions by type name (in table order), the
    type of each listed (image_id, round_id), and the relevant regions and object regions of the
    rounds that list them."""
    descriptions: dict[str, str]
    by_round: dict[tuple[int, int], str]
    regions: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)
    objects: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)

    def of(self, image_id: int, round_id: int) -> str | None:
        return self.by_round.get((image_id, round_id))


def load_question_types(path: str | os.PathLike) -> QuestionTypes:
    """Read and validate a question-type file (docs/evaluation.md); a bad file is a UserError."""
    path = Path(path)
    content = read_json(path, "question-type file", booleans=False)
    descriptions = content.get("question_types") if isinstance(content, dict) else None
    rounds = content.get("rounds") if isinstance(content, dict) else None
    if not isinstance(descriptions, dict) or not isinstance(rounds, list):
        raise UserError(f"{path}: not a question-type file (needs a question_types object and a rounds list)")
    if not descriptions or not all(isinstance(text, str) for text in descriptions.values()):
        raise UserError(f"{path}: question_types must map at least one type name to a description string")
    by_round: dict[tuple[int, int], str] = {}
    regions: dict[tuple[int, int], tuple[int, ...]] = {}
    objects: dict[tuple[int, int], tuple[int, ...]] = {}
    for position, entry in enumerate(rounds):
        where = f"{path}: rounds[{position}]"
        if not isinstance(entry, dict) or not {"image_id", "round_id", "question_type"} <= entry.keys():
            raise UserError(f"{where}: needs image_id, round_id and question_type")
        image_id, round_id, name = entry["image_id"], entry["round_id"], entry["question_type"]
        if type(image_id) is not int or type(round_id) is not int or round_id < 1:
            raise UserError(f"{where}: image_id must be an int and round_id a 1-based int")
        if name not in descriptions:
            raise UserError(f"{where}: question_type {name!r} is not one of question_types "
                            f"({', '.join(descriptions)})")
        if (image_id, round_id) in by_round:
            raise UserError(f"{where}: round {round_id} of image {image_id} is listed twice")
        by_round[(image_id, round_id)] = name
        for field_name, listed in (("relevant_regions", regions), ("object_regions", objects)):
            if field_name in entry:
                indices = entry[field_name]
                if not isinstance(indices, list) or not indices or \
                        not all(type(region) is int and region >= 0 for region in indices):
                    raise UserError(f"{where}: {field_name} must be a non-empty list of region indices (ints >= 0)")
                listed[(image_id, round_id)] = tuple(indices)
    return QuestionTypes(dict(descriptions), by_round, regions, objects)


def write_question_types(path: str | os.PathLike, descriptions: dict[str, str], rounds: list[dict]) -> None:
    """Write a question-type file atomically: `descriptions` type name -> description (table
    order), `rounds` [{"image_id", "round_id", "question_type"}, optional "relevant_regions" and
    "object_regions"]."""
    write_json(path, {"question_types": descriptions, "rounds": rounds})
