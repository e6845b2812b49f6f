"""The files of the EvalAI VisDial server (docs/evaluation.md): entries from scores, ranks in the json's
option order, and the format check every file passes before it is written."""
from typing import Optional

import torch

from dataloader.datasets import val_option_order
from dataloader.feature_record import MAX_IMAGE_ID
from dataloader.visdial_json import NUM_ANSWER_OPTIONS, SPLITS
from utils.errors import UserError
from utils.evaluation.metrics import scores_to_ranks
from utils.evaluation.scoring import ScoredDialogs

NUM_ROUNDS = 10


def evalai_test_entries(scored: ScoredDialogs) -> list[dict]:
    """Test-std entries: per dialog its image_id, round_id and the 1-based ranks of the last round's options."""
    ranks = scores_to_ranks(scored.scores[:, -1])
    return [{"image_id": int(image_id), "round_id": int(round_id), "ranks": row}
            for image_id, round_id, row in zip(scored.fields["image_id"].tolist(),
                                               scored.fields["round_id"].tolist(), ranks.tolist())]


def evalai_val_entries(scored: ScoredDialogs, dialogs: list[dict]) -> list[dict]:
    """Val-phase entries: one per dialog and round."""
    ranks = scores_to_ranks(scored.scores)
    entries = []
    for dialog, image_id, dialog_ranks in zip(dialogs, scored.fields["image_id"].tolist(), ranks):
        for round_index, turn in enumerate(dialog["dialog"]):
            in_json_order = torch.empty(NUM_ANSWER_OPTIONS, dtype=torch.long)
            in_json_order[val_option_order(turn["gt_index"], NUM_ANSWER_OPTIONS)] = dialog_ranks[round_index]
            entries.append({"image_id": int(image_id), "round_id": round_index + 1, "ranks": in_json_order.tolist()})
    return entries


def expected_entries(split: str, dialogs: list[dict]) -> dict[int, list[int]]:
    """image_id -> the round ids a submission holds for it: test, the dialog's last round (`round_id` of a
    processed file, else its number of rounds); val, every round."""
    if SPLITS[split].last_round_only:
        return {dialog["image_id"]: [dialog.get("round_id", len(dialog["dialog"]))] for dialog in dialogs}
    return {dialog["image_id"]: list(range(1, len(dialog["dialog"]) + 1)) for dialog in dialogs}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry) -> str:
    if not isinstance(entry, dict) or set(entry) != {"image_id", "round_id", "ranks"}:
        return "must be an object with exactly image_id, round_id and ranks"
    if not _is_int(entry["image_id"]):
        return f"image_id {entry['image_id']!r} is not an integer"
    if not 0 <= entry["image_id"] <= MAX_IMAGE_ID:
        return f"image_id {entry['image_id']} is not an image id (an integer in 0..{MAX_IMAGE_ID})"
    if not _is_int(entry["round_id"]) or not 1 <= entry["round_id"] <= NUM_ROUNDS:
        return f"round_id {entry['round_id']!r} is not an integer in 1..{NUM_ROUNDS}"
    ranks = entry["ranks"]
    if not (isinstance(ranks, list) and all(_is_int(rank) for rank in ranks)
            and sorted(ranks) == list(range(1, NUM_ANSWER_OPTIONS + 1))):
        return f"ranks are not a permutation of 1..{NUM_ANSWER_OPTIONS}"
    return ""


def submission_problems(entries, split: str, expected: Optional[dict[int, list[int]]] = None) -> list[str]:
    """Every problem of an EvalAI submission of `split`, one line each naming the entry ([]: valid); with
    `expected` (`expected_entries`) exactly the image ids and rounds it lists."""
    if not isinstance(entries, list) or not entries:
        return ["must be a non-empty json list of {image_id, round_id, ranks} objects"]
    problems, seen, per_dialog = [], {}, SPLITS[split].last_round_only
    for position, entry in enumerate(entries):
        where = f"entry {position}"
        if problem := _entry_problem(entry):
            problems.append(f"{where}: {problem}")
            continue
        image_id, round_id = entry["image_id"], entry["round_id"]
        where = f"entry {position} (image {image_id}, round {round_id})"
        key = image_id if per_dialog else (image_id, round_id)
        if key in seen:
            rule = "one entry per dialog" if per_dialog else "one entry per dialog and round"
            problems.append(f"{where}: a duplicate of entry {seen[key]} ({split}: {rule})")
            continue
        seen[key] = position
        if expected is not None and image_id not in expected:
            problems.append(f"{where}: no dialog of image {image_id} in the {split} dialogs")
        elif expected is not None and round_id not in expected[image_id]:
            wanted = "its last round" if per_dialog else "a round of the dialog"
            problems.append(f"{where}: round {round_id} is not {wanted} ({', '.join(map(str, expected[image_id]))})")
    if expected is None and SPLITS[split].same_round_count:  # VisDial val dialogs have 10 rounds, each needs an entry
        expected = {image_id: list(range(1, NUM_ROUNDS + 1)) for image_id, _ in seen}
    if expected is not None:
        for image_id, rounds in expected.items():
            missing = [round_id for round_id in rounds
                       if (image_id if per_dialog else (image_id, round_id)) not in seen]
            if missing:
                problems.append(f"dialog of image {image_id}: no entry for round {', '.join(map(str, missing))}")
    return problems


def check_submission(entries: list[dict], split: str, expected: Optional[dict[int, list[int]]], path) -> None:
    """UserError naming `path` and the first of the `submission_problems`, if any."""
    problems = submission_problems(entries, split, expected)
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise UserError(f"{path}: predictions fail the EvalAI format check ({problems[0]}{more}); not written")
