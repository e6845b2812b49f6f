"""From the raw VisDial v1.0 json files to the processed ones: the reference's length rules (token
counts without special tokens, as the BERT tokenizer gives them), with its two preprocessing bugs
fixed (docs/data.md "Preprocessing", docs/reference.md). `preprocess` runs it all."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from dataloader.tokenizer import encode_texts, load_tokenizer
from dataloader.visdial_json import (check_annotations_follow_dialogs, load_dense_annotations,
                                     load_visdial_json)
from utils.errors import UserError
from utils.outputs import Output, check_outputs, json_writer, write_files

INPUT_FILES = ("visdial_train", "visdial_val", "visdial_test", "visdial_val_ndcg", "visdial_train_ndcg")
OUTPUT_FILES = ("save_path_train", "save_path_val", "save_path_test", "save_path_train_dense_samples",
                "save_path_val_ndcg", "save_path_train_ndcg")
"""The keys of `preprocess`'s `files`: raw inputs and processed outputs (named as the flags)."""


class TokenLengths:
    """Token counts of every question, answer and caption of one split (each string tokenised once)."""

    def __init__(self, tokenizer, split_data: dict):
        self.question = np.array([len(ids) for ids in encode_texts(tokenizer, split_data["questions"])], dtype=np.int64)
        self.answer = np.array([len(ids) for ids in encode_texts(tokenizer, split_data["answers"])], dtype=np.int64)
        captions = encode_texts(tokenizer, [dialog["caption"] for dialog in split_data["dialogs"]])
        self.caption = [len(ids) for ids in captions]

    def history_before(self, position: int, rounds: list[dict], round_index: int) -> int:
        """Tokens before the answer slot of round `round_index` (0-based): [CLS] caption [SEP], the
        earlier rounds' q [SEP] a [SEP], and this round's q [SEP]."""
        total = 1 + self.caption[position] + 1
        for turn in rounds[:round_index]:
            total += self.question[turn["question"]] + 1 + self.answer[turn["answer"]] + 1
        return total + self.question[rounds[round_index]["question"]] + 1

    def longest_option(self, turn: dict) -> int:
        return int(self.answer[turn["answer_options"]].max())

    def rounds_to_drop(self, position: int, rounds: list[dict], round_index: int, max_seq_len: int):
        history = [(self.question[turn["question"]], self.answer[turn["answer"]]) for turn in rounds[:round_index]]
        return rounds_to_drop(self.caption[position], history, self.question[rounds[round_index]["question"]],
                              self.longest_option(rounds[round_index]), max_seq_len)


def rounds_to_drop(caption: int, history: Sequence[tuple[int, int]], question: int, longest_answer: int,
                   max_seq_len: int) -> Optional[int]:
    """How many rounds to remove from the front of the history (the caption stays) so that
    `[CLS] caption [SEP] (q [SEP] a [SEP])... question [SEP] answer [SEP]` fits in max_seq_len for
    the longest answer (the test split's rule); None when even no history does not fit. Token counts
    without special tokens; `history`: (question, answer) per earlier round."""
    longest = 1 + caption + 1 + sum(q + 1 + a + 1 for q, a in history) + question + 1 + longest_answer + 1
    dropped = 0
    while longest > max_seq_len:
        if dropped == len(history):
            return None
        longest -= history[dropped][0] + 1 + history[dropped][1] + 1
        dropped += 1
    return dropped


@dataclass
class Summary:
    """What preprocessing removed, per split, with the reason and the image ids."""

    lines: list[str] = field(default_factory=list)

    def add(self, what: str, image_ids: list, reason: str) -> None:
        shown = ", ".join(str(image_id) for image_id in image_ids[:20]) + (" ..." if len(image_ids) > 20 else "")
        self.lines.append(f"{what}: {len(image_ids)}" + (f" ({reason}): {shown}" if image_ids else ""))


def filter_train(train: dict, lengths: TokenLengths, max_seq_len: int, summary: Summary) -> list[dict]:
    """Dialogs whose whole length fits (the reference's rule, 22 = [CLS] + 21 [SEP])."""
    kept, dropped = [], []
    for position, dialog in enumerate(train["data"]["dialogs"]):
        total = 22 + lengths.caption[position] + sum(
            lengths.question[turn["question"]] + lengths.answer[turn["answer"]] for turn in dialog["dialog"])
        (kept if total <= max_seq_len else dropped).append(dialog)
    summary.add("train dialogs dropped", [dialog["image_id"] for dialog in dropped],
                f"full dialog longer than {max_seq_len} tokens")
    return kept


def filter_train_dense(annotations: list[dict], kept_train: list[dict], lengths: TokenLengths,
                       position_of_dialog: dict[int, int], max_seq_len: int,
                       summary: Summary) -> tuple[list[dict], list[dict]]:
    """Annotations (and their dialogs, in annotation order) whose dialog survived and whose
    annotated round fits for every answer option."""
    kept_by_image = {dialog["image_id"]: dialog for dialog in kept_train}
    kept_annotations, dialogs, without_dialog, too_long = [], [], [], []
    for annotation in annotations:
        image_id = annotation["image_id"]
        dialog = kept_by_image.get(image_id)
        if dialog is None:
            without_dialog.append(image_id)
            continue
        round_index = annotation["round_id"] - 1
        if round_index >= len(dialog["dialog"]):
            raise UserError(f"train dense annotation of image {image_id} names round {annotation['round_id']}, "
                            f"its dialog has {len(dialog['dialog'])} rounds")
        turn = dialog["dialog"][round_index]
        history = lengths.history_before(position_of_dialog[image_id], dialog["dialog"], round_index)
        if history + lengths.longest_option(turn) + 1 > max_seq_len:
            too_long.append(image_id)
            continue
        kept_annotations.append(annotation)
        dialogs.append(dialog)
    summary.add("train dense annotations dropped", without_dialog, "their dialog was dropped or is absent")
    summary.add("train dense annotations dropped", too_long, f"an option of the annotated round exceeds {max_seq_len}")
    return kept_annotations, dialogs


def keep_all_val_dialogs(val: dict, lengths: TokenLengths, max_seq_len: int, summary: Summary) -> list[dict]:
    """Every val dialog: a round whose longest option does not fit with its whole history gets
    `history_start`, the rounds the test split's rule drops from the front of its history."""
    cut = []
    for position, dialog in enumerate(val["data"]["dialogs"]):
        rounds = dialog["dialog"]
        for index, turn in enumerate(rounds):
            removed = lengths.rounds_to_drop(position, rounds, index, max_seq_len)
            if removed is None:
                raise UserError(f"val dialog of image {dialog['image_id']}, round {index + 1}: even without history "
                                f"its question and longest answer option are longer than -max_seq_len {max_seq_len}")
            if removed:
                turn["history_start"] = removed
        if any("history_start" in turn for turn in rounds):
            cut.append(dialog["image_id"])
    summary.add("val dialogs kept with the history of late rounds cut from the front (-keep_all_val)", cut,
                f"history + longest option longer than {max_seq_len}")
    return val["data"]["dialogs"]


def filter_val(val: dict, annotations: list[dict], lengths: TokenLengths, max_seq_len: int,
               summary: Summary) -> tuple[list[dict], list[dict]]:
    """Val dialogs (and their annotations) where every option of every round fits (the reference's rule)."""
    kept_dialogs, kept_annotations, dropped = [], [], []
    for position, (dialog, annotation) in enumerate(zip(val["data"]["dialogs"], annotations)):
        rounds = dialog["dialog"]
        fits = all(lengths.history_before(position, rounds, index) + lengths.longest_option(turn) + 1 <= max_seq_len
                   for index, turn in enumerate(rounds))
        if fits:
            kept_dialogs.append(dialog)
            kept_annotations.append(annotation)
        else:
            dropped.append(dialog["image_id"])
    summary.add("val dialogs dropped (with their dense annotation)", dropped,
                f"an answer option makes a sequence longer than {max_seq_len}")
    return kept_dialogs, kept_annotations


def truncate_test(test: dict, lengths: TokenLengths, max_seq_len: int, summary: Summary) -> None:
    """Add `round_id` to every test dialog and drop leading rounds of the ones that do not fit."""
    truncated = []
    for position, dialog in enumerate(test["data"]["dialogs"]):
        rounds = dialog["dialog"]
        dialog["round_id"] = len(rounds)
        removed = lengths.rounds_to_drop(position, rounds, len(rounds) - 1, max_seq_len)
        if removed is None:
            raise UserError(f"test dialog of image {dialog['image_id']}: even its last round alone "
                            f"is longer than -max_seq_len {max_seq_len}")
        if removed:
            dialog["dialog"] = rounds[removed:]
            truncated.append(dialog["image_id"])
    summary.add("test dialogs truncated from the front", truncated,
                f"history + longest last-round option longer than {max_seq_len}")


def preprocess(files: dict, max_seq_len: int, vocab: str, show_progress: bool = False,
               keep_all_val: bool = False) -> Summary:
    """Check the outputs against the inputs, validate the inputs, apply the rules and write the
    outputs as one set; returns the summary of what was dropped. files: a path for every name of
    INPUT_FILES (raw json) and OUTPUT_FILES (processed json). keep_all_val: cut the history of the
    val rounds that do not fit (`keep_all_val_dialogs`) instead of dropping their dialog."""
    check_outputs([Output(f"-{name}", Path(files[name])) for name in OUTPUT_FILES],
                  {**{f"-{name}": files[name] for name in INPUT_FILES}, "-vocab": vocab})
    train = load_visdial_json(files["visdial_train"], "train")
    val = load_visdial_json(files["visdial_val"], "val")
    test = load_visdial_json(files["visdial_test"], "test")
    train_annotations = load_dense_annotations(files["visdial_train_ndcg"])
    val_annotations = load_dense_annotations(files["visdial_val_ndcg"])
    check_annotations_follow_dialogs(val_annotations, val["data"]["dialogs"], files["visdial_val_ndcg"])
    tokenizer = load_tokenizer(vocab)

    splits = tqdm([("train", train), ("val", val), ("test", test)], desc="tokenising", disable=not show_progress)
    lengths = {name: TokenLengths(tokenizer, content["data"]) for name, content in splits}
    summary = Summary()

    kept_train = filter_train(train, lengths["train"], max_seq_len, summary)
    position_of_dialog = {dialog["image_id"]: position for position, dialog in enumerate(train["data"]["dialogs"])}
    kept_train_annotations, train_dense_dialogs = filter_train_dense(
        train_annotations, kept_train, lengths["train"], position_of_dialog, max_seq_len, summary)
    if keep_all_val:
        kept_val = keep_all_val_dialogs(val, lengths["val"], max_seq_len, summary)
        kept_val_annotations = val_annotations
    else:
        kept_val, kept_val_annotations = filter_val(val, val_annotations, lengths["val"], max_seq_len, summary)
    truncate_test(test, lengths["test"], max_seq_len, summary)

    train_dense = copy.copy(train)
    train_dense["data"] = {**train["data"], "dialogs": train_dense_dialogs}
    train["data"]["dialogs"] = kept_train
    val["data"]["dialogs"] = kept_val
    outputs = {"save_path_train": train, "save_path_val": val, "save_path_val_ndcg": kept_val_annotations,
               "save_path_test": test, "save_path_train_dense_samples": train_dense,
               "save_path_train_ndcg": kept_train_annotations}
    write_files({files[name]: json_writer(content) for name, content in outputs.items()})
    summary.lines.append(f"kept: {len(kept_train)} train dialogs, {len(kept_train_annotations)} train dense "
                         f"annotations, {len(kept_val)} val dialogs, {len(test['data']['dialogs'])} test dialogs")
    return summary
