"""Preprocessing: the reference's outputs, the two documented fixes, summary and atomic writes."""
import json
import subprocess
import sys

import pytest
import torch

from dataloader.preprocess import TokenLengths
from dataloader.tokenizer import load_tokenizer
from preprocessing.pre_process_visdial import parse_args, preprocess
from utils.conformance.data import PROCESSED_FILES, RAW_FILES, UNCHANGED_OUTPUTS, VOCAB_FILE
from utils.errors import UserError
from utils.outputs import TEMPORARY_MARK


def preprocessing_argv(golden_dir, output_dir):
    raw = golden_dir / "visdial_raw"
    max_seq_len = torch.load(golden_dir / "dataset_items.pt", weights_only=True)["meta"]["max_seq_len"]
    return ([f"-{flag}={raw / name}" for flag, name in RAW_FILES.items()]
            + [f"-{flag}={output_dir / name}" for flag, name in PROCESSED_FILES.items()]
            + [f"-max_seq_len={max_seq_len}", f"-vocab={golden_dir / VOCAB_FILE}", "-quiet"])


@pytest.fixture(scope="module")
def outputs(golden_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("processed")
    summary = preprocess(parse_args(preprocessing_argv(golden_dir, folder)))
    return folder, summary


def test_unchanged_outputs_are_byte_identical(golden_dir, outputs):
    folder, _ = outputs
    for name in UNCHANGED_OUTPUTS:
        assert (folder / name).read_bytes() == (golden_dir / "visdial_processed" / name).read_bytes(), name


def test_the_two_fixes(golden_dir, outputs):
    folder, _ = outputs
    reference = golden_dir / "visdial_processed"
    ours_train = json.loads((folder / "train_processed.json").read_text())["data"]["dialogs"]
    ours_dense = json.loads((folder / "train_dense_processed.json").read_text())["data"]["dialogs"]
    raw_train = json.loads((golden_dir / "visdial_raw" / RAW_FILES["visdial_train"]).read_text())["data"]["dialogs"]
    # fix 1: the train output holds every surviving dialog, not only the dense-annotated ones
    assert len(ours_train) > len(ours_dense)
    assert [dialog["image_id"] for dialog in ours_train] == [
        dialog["image_id"] for dialog in raw_train if dialog in ours_train]
    # fix 2: the annotated dialog, not a stale one, decides; the documented annotation is kept
    kept = [(a["image_id"], a["round_id"])
            for a in json.loads((folder / "train_dense_annotations_processed.json").read_text())]
    reference_kept = [(a["image_id"], a["round_id"])
                      for a in json.loads((reference / "train_dense_annotations_processed.json").read_text())]
    assert (492072, 9) in kept and (492072, 9) not in reference_kept
    assert set(reference_kept) < set(kept)


def test_summary_names_what_was_dropped(outputs):
    _, summary = outputs
    text = "\n".join(summary.lines)
    assert "train dialogs dropped: 1" in text and "463648" in text
    assert "val dialogs dropped (with their dense annotation): 1" in text and "239137" in text
    assert "test dialogs truncated from the front: 1" in text and "531887" in text


def test_failed_write_leaves_previous_output_intact(golden_dir, tmp_path, monkeypatch):
    argv = preprocessing_argv(golden_dir, tmp_path)
    preprocess(parse_args(argv))
    before = {name: (tmp_path / name).read_bytes() for name in PROCESSED_FILES.values()}

    def failing_dumps(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", failing_dumps)
    with pytest.raises(UserError, match="disk full"):
        preprocess(parse_args(argv))
    assert {name: (tmp_path / name).read_bytes() for name in PROCESSED_FILES.values()} == before
    assert not [path for path in tmp_path.iterdir() if TEMPORARY_MARK in path.name]


def test_cli_bad_input_is_one_line(golden_dir, tmp_path, repo_root):
    argv = preprocessing_argv(golden_dir, tmp_path)
    argv[0] = f"-visdial_train={tmp_path / 'absent.json'}"
    run = subprocess.run([sys.executable, str(repo_root / "preprocessing" / "pre_process_visdial.py"), *argv],
                         capture_output=True, text=True, cwd=repo_root)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'absent.json'}: file not found"


def test_rounds_to_drop_cuts_the_history_from_the_front(golden_dir):
    """Round 3 of a dialog of one-token texts with a five-token option needs
    `[CLS] caption [SEP] (q [SEP] a [SEP]) x kept q [SEP] option [SEP]` = 11 + 4 * kept tokens."""
    tokenizer = load_tokenizer(str(golden_dir / VOCAB_FILE))
    turn = {"question": 0, "answer": 0, "answer_options": [0, 1]}
    data = {"questions": ["what"], "answers": ["yes", "one two three four five"],
            "dialogs": [{"caption": "dog", "dialog": [turn, turn, turn]}]}
    lengths = TokenLengths(tokenizer, data)
    assert list(lengths.answer) == [1, 5]
    for max_seq_len in range(8, 22):
        fitting = [dropped for dropped in range(3) if 11 + 4 * (2 - dropped) <= max_seq_len]
        expected = fitting[0] if fitting else None
        assert lengths.rounds_to_drop(0, data["dialogs"][0]["dialog"], 2, max_seq_len) == expected, max_seq_len
