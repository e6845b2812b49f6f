"""The files of the EvalAI VisDial server: entries from scores, the format check, and writing.

Test-std: one entry per dialog, `{"image_id", "round_id", "ranks": [100]}` with `ranks[j]` the
1-based rank of option j of the last round in the json option order. Val phase: one entry per
dialog and round, ranks mapped back to the json order (dataloader.datasets.val_option_order).
A file is checked before it is written (`write_predictions`), never after; the files of one
submission are written as a set (the .json and its .txt: both or neither).
"""
from pathlib import Path

import torch

from dataloader.datasets import val_option_order
from dataloader.visdial_json import NUM_ANSWER_OPTIONS
from utils.errors import UserError
from utils.evaluation.metrics import scores_to_ranks
from utils.evaluation.scoring import ScoredDialogs
from utils.files import write_json_files

NUM_ROUNDS = 10


def evalai_test_entries(scored: ScoredDialogs) -> list[dict]:
    """EvalAI test-std entries: per dialog its image_id, round_id and the 1-based rank of each of
    the last round's options, in the json option order."""
    ranks = scores_to_ranks(scored.scores[:, -1])
    return [{"image_id": int(image_id), "round_id": int(round_id), "ranks": row}
            for image_id, round_id, row in zip(scored.fields["image_id"].tolist(),
                                               scored.fields["round_id"].tolist(), ranks.tolist())]


def evalai_val_entries(scored: ScoredDialogs, dialogs: list[dict]) -> list[dict]:
    """EvalAI val-phase entries: one per dialog and round, ranks in the json option order."""
    ranks = scores_to_ranks(scored.scores)
    entries = []
    for dialog, image_id, dialog_ranks in zip(dialogs, scored.fields["image_id"].tolist(), ranks):
        for round_index, turn in enumerate(dialog["dialog"]):
            in_json_order = torch.empty(NUM_ANSWER_OPTIONS, dtype=torch.long)
            in_json_order[val_option_order(turn["gt_index"], NUM_ANSWER_OPTIONS)] = dialog_ranks[round_index]
            entries.append({"image_id": int(image_id), "round_id": round_index + 1,
                            "ranks": in_json_order.tolist()})
    return entries


def check_predictions(entries: list[dict], expected_count: int, one_per_image: bool, path: Path) -> None:
    """The EvalAI format: ranks a permutation of 1..100, round_id in 1..10, the expected number of
    entries, and (test) one entry per image. Raises UserError naming `path` otherwise."""
    permutation = list(range(1, NUM_ANSWER_OPTIONS + 1))
    problems = []
    if len(entries) != expected_count:
        problems.append(f"{len(entries)} entries for {expected_count} expected")
    if one_per_image and len({entry["image_id"] for entry in entries}) != len(entries):
        problems.append("an image_id appears more than once")
    for entry in entries:
        if not 1 <= entry["round_id"] <= NUM_ROUNDS:
            problems.append(f"image {entry['image_id']}: round_id {entry['round_id']} not in 1..{NUM_ROUNDS}")
        if sorted(entry["ranks"]) != permutation:
            problems.append(f"image {entry['image_id']}: ranks are not a permutation of 1..{NUM_ANSWER_OPTIONS}")
    if problems:
        raise UserError(f"{path}: predictions fail the EvalAI format check ({problems[0]}); not written")


def write_predictions(files: dict[Path, list[dict]], expected_count: int, one_per_image: bool) -> None:
    """Check each file's entries (`check_predictions`), then write them all as JSON, as one set:
    every file or none (utils/files.write_files)."""
    for path, entries in files.items():
        check_predictions(entries, expected_count, one_per_image, path)
    write_json_files(files)
