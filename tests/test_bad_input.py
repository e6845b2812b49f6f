"""The bad-input suite: every CLI, given a bad file or flag, exits non-zero with one clear line.

Each case runs a CLI's `main` as its command line does (`run_cli`), in this process, and asserts:
exit code 2; the last non-empty stderr line is one `error:` line naming the file or flag and the
problem; no traceback (anything but a UserError would escape `run_cli` and fail the test with
one); and nothing left in the case's output folder (no partial output, no temporary files). A
handful of cases, one per command line, run as real subprocesses to hold the command-line
contract itself (exit code, stderr, no "Traceback"); they are launched together from a thread
pool. docs/reliability.md ("Error catalogue") lists these inputs and their messages.
"""
import importlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import lmdb
import pytest
import torch

import evaluate
import train
from options import TrainOptions, parse_options
from preprocessing import convert_features, make_toy_data, pre_process_visdial
from scripts import check_reference
from tests.train_helpers import fixture_flags
from utils.errors import argument_problem, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
CASE_TIMEOUT_S = 600  # a safety net against a hang, far above a case's few seconds
# one more process than cores: each spends part of its start waiting on disk
PARALLEL_PROCESSES = (os.cpu_count() or 2) + 1
MAINS = {"train.py": train.main, "evaluate.py": evaluate.main,
         "preprocessing/pre_process_visdial.py": pre_process_visdial.main,
         "preprocessing/convert_features.py": convert_features.main,
         "preprocessing/make_toy_data.py": make_toy_data.main, "scripts/check_reference.py": check_reference.main}


@dataclass(frozen=True)
class Case:
    """A bad input: `build(folder, golden)` writes the case's inputs into `folder / "in"` and
    returns (argv of `script`, what the message must name: a path or a flag); the message must
    also contain `problem`. Outputs go to `folder / "out"`, which must stay empty. `subprocess`:
    run as a real command line (the CLI contract), else in this process."""
    name: str
    script: str
    build: Callable[[Path, Path], tuple[list[str], str]]
    problem: str
    subprocess: bool = False


@dataclass(frozen=True)
class Outcome:
    returncode: Optional[int]  # None: timed out
    stderr: str
    subject: str
    out_dir: Path


# ---- inputs -------------------------------------------------------------------------------------

def processed(golden: Path, name: str) -> Path:
    return golden / "visdial_processed" / name


def edited_json(source: Path, target: Path, edit: Callable[[object], object]) -> Path:
    """A copy of the json `source` at `target`, changed in place by `edit`."""
    content = json.loads(source.read_text())
    edit(content)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(content))
    return target


def written(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def copied_store(golden: Path, target: Path) -> Path:
    shutil.copytree(golden / "visdial_img_feat.lmdb", target)
    for file in target.iterdir():
        file.chmod(0o644)
    return target


def lmdb_with_records(path: Path, records: dict) -> Path:
    """An LMDB whose values are pickled as given (protocol 3, like the released store)."""
    environment = lmdb.open(str(path), map_size=1 << 24)
    with environment.begin(write=True) as transaction:
        for key, value in records.items():
            transaction.put(key, value if isinstance(value, bytes) else pickle.dumps(value, protocol=3))
    environment.close()
    return path


def golden_image_ids(golden: Path, split_file: str) -> list[int]:
    return [dialog["image_id"] for dialog in json.loads(processed(golden, split_file).read_text())["data"]["dialogs"]]


def train_argv(folder: Path, golden: Path, *extra: str) -> list[str]:
    return fixture_flags(golden, folder / "out", "run", "-val_every", "-1", *extra)


def eval_argv(folder: Path, golden: Path, *extra: str) -> list[str]:
    return ["-split", "val",
            "-visdial_processed_val", str(processed(golden, "val_processed.json")),
            "-visdial_processed_val_dense_annotations", str(processed(golden, "val_dense_annotations_processed.json")),
            "-visdial_processed_test", str(processed(golden, "test_processed.json")),
            "-visdial_image_feats", str(golden / "visdial_img_feat.lmdb"),
            "-vocab", str(golden / "bert-base-uncased-vocab.txt"),
            "-model_config", str(golden / "model_config.json"),
            "-max_seq_len", "108", "-num_workers", "0", "-save_path", str(folder / "out"), *extra]


def preprocess_argv(folder: Path, golden: Path, **replaced: str) -> list[str]:
    raw = golden / "visdial_raw"
    inputs = {"visdial_train": raw / "visdial_1.0_train.json", "visdial_val": raw / "visdial_1.0_val.json",
              "visdial_test": raw / "visdial_1.0_test.json",
              "visdial_train_ndcg": raw / "visdial_1.0_train_dense_annotations.json",
              "visdial_val_ndcg": raw / "visdial_1.0_val_dense_annotations.json"}
    outputs = {f"save_path_{name}": folder / "out" / f"{name}.json"
               for name in ("train", "val", "test", "train_dense_samples", "val_ndcg", "train_ndcg")}
    flags = {**inputs, **outputs, "vocab": golden / "bert-base-uncased-vocab.txt", **replaced}
    return [f"-{name}={value}" for name, value in flags.items()] + ["-quiet"]


# ---- the cases ------------------------------------------------------------------------------------

def flag_case(name: str, script: str, flag: str, problem: str, *values: str) -> Case:
    """A case of train.py or evaluate.py whose bad input is the value of `flag`."""
    argv_of = {"train.py": train_argv, "evaluate.py": eval_argv}[script]
    return Case(name, script, lambda folder, golden: (argv_of(folder, golden, flag, *values), flag), problem)


def train_file_case(name: str, flag: str, make: Callable[[Path, Path], Path], problem: str) -> Case:
    """train.py with the file given to `flag` replaced by `make(folder / "in", golden)`."""
    def build(folder, golden):
        path = make(folder / "in", golden)
        return train_argv(folder, golden, f"-{flag}", str(path)), str(path)
    return Case(name, "train.py", build, problem)


def eval_file_case(name: str, flag: str, make: Callable[[Path, Path], Path], problem: str) -> Case:
    """evaluate.py -split val with the file given to `flag` replaced by `make(folder / "in", golden)`."""
    def build(folder, golden):
        path = make(folder / "in", golden)
        return eval_argv(folder, golden, f"-{flag}", str(path)), str(path)
    return Case(name, "evaluate.py", build, problem)


def edit_round(split_file: str, dialog: int, round_index: int, edit: Callable[[dict], None]):
    def make(folder, golden):
        def change(content):
            edit(content["data"]["dialogs"][dialog]["dialog"][round_index])
        return edited_json(processed(golden, split_file), folder / split_file, change)
    return make


def set_image_id(split_file: str, image_id: int):
    def make(folder, golden):
        def change(content):
            content["data"]["dialogs"][1]["image_id"] = image_id
        return edited_json(processed(golden, split_file), folder / split_file, change)
    return make


def truncated_store(folder, golden):
    store = copied_store(golden, folder / "features.lmdb")
    data = store / "data.mdb"
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    return store


def store_with_record(record_of: Callable[[int], object], split_file: str = "val_processed.json"):
    """An LMDB store whose first image of `split_file` holds `record_of(folder)` (others absent)."""
    def make(folder, golden):
        image_ids = golden_image_ids(golden, split_file)
        keys = [str(image_id).encode() for image_id in image_ids]
        records = {b"keys": keys, **{key: record_of(folder) for key in keys}}
        folder.mkdir(parents=True, exist_ok=True)
        return lmdb_with_records(folder / "features.lmdb", records)
    return make


def model_state(golden: Path) -> dict:
    return torch.load(golden / "model_raw.pt", weights_only=True)


def wrong_shape_checkpoint(folder, golden):
    state = model_state(golden)
    key = next(key for key in state if key.endswith("word_embeddings.weight"))
    state[key] = torch.zeros(10, 3)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "wrong_shapes.ckpt")
    return folder / "wrong_shapes.ckpt"


def config_with(key: str, value):
    def make(folder, golden):
        def change(content):
            content[key] = value
        return edited_json(golden / "model_config.json", folder / "model_config.json", change)
    return make


def unwritable_folder(folder: Path) -> Path:
    """A path inside a regular file: no user (root included) can create or write it."""
    blocker = written(folder / "in" / "not_a_folder", b"a file")
    return blocker / "runs"


def unwritable_save_path(folder, golden):
    path = unwritable_folder(folder)
    return train_argv(folder, golden, "-save_path", str(path)), str(path)


def unwritable_eval_output(folder, golden):
    path = unwritable_folder(folder)
    return eval_argv(folder, golden, "-save_path", str(path)), str(path)


def continue_without_checkpoint(folder, golden):
    return train_argv(folder, golden, "-continue"), str(folder / "out" / "run")


def preset_with_unknown_option(folder, golden):
    preset = written(folder / "in" / "preset.yml", b"batch_size: 2\nlearning_rate: 0.1\n")
    return train_argv(folder, golden, "-config", str(preset)), str(preset)


def preprocess_with(flag: str, make: Callable[[Path, Path], Path]):
    def build(folder, golden):
        path = make(folder / "in", golden)
        return preprocess_argv(folder, golden, **{flag: str(path)}), str(path)
    return build


def raw_val_dialog_without_answer(folder, golden):
    def change(content):
        del content["data"]["dialogs"][0]["dialog"][1]["answer"]
    return edited_json(golden / "visdial_raw" / "visdial_1.0_val.json", folder / "val.json", change)


def unwritable_preprocess_output(folder, golden):
    path = unwritable_folder(folder) / "val.json"
    return preprocess_argv(folder, golden, save_path_val=str(path)), str(path)


def convert(input_of: Callable[[Path, Path], Path], subject: str = "input"):
    def build(folder, golden):
        source = input_of(folder / "in", golden)
        output = folder / "out" / "features.h5"
        return ["-input", str(source), "-output", str(output)], str(source if subject == "input" else output)
    return build


def convert_to_unwritable(folder, golden):
    output = unwritable_folder(folder) / "features.h5"
    return ["-input", str(golden / "visdial_img_feat.lmdb"), "-output", str(output)], str(output)


def toy_data(*flags: str):
    def build(folder, golden):
        return ["-out", str(folder / "out" / "toy"), *flags], flags[0]
    return build


def png_declaring(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def report_with_picture(content: bytes):
    """evaluate.py -report -images, the picture of the first val dialog holding `content`."""
    def build(folder, golden):
        image_id = golden_image_ids(golden, "val_processed.json")[0]
        picture = written(folder / "in" / "images" / f"{image_id}.png", content)
        return eval_argv(folder, golden, "-report", str(folder / "out" / "report"), "-images",
                         str(picture.parent)), str(picture)
    return build


def continue_with_changed_seed(folder, golden):
    """-continue from a checkpoint of a run whose -seed was 5 (the check comes before its weights)."""
    argv = train_argv(folder, golden, "-continue")
    saved = parse_options(argv, TrainOptions).to_dict()
    checkpoint = folder / "in" / "seed5.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": {}, "optimizer_state_dict": {}, "progress": {}, "per_rank": [],
                "options": {**saved, "seed": 5}}, checkpoint)
    return argv + ["-start_path", str(checkpoint)], str(checkpoint)


CASES = [
    # train.py: flags
    Case("train_num_options_1", "train.py",
         lambda folder, golden: (train_argv(folder, golden, "-num_options", "1"), "-num_options"),
         "must be in 2..100", subprocess=True),
    flag_case("train_tot_rounds_12", "train.py", "-visdial_tot_rounds", "must be in 2..11", "12"),
    flag_case("train_sequences_per_image_9", "train.py", "-sequences_per_image", "must be in 1..8", "9"),
    flag_case("train_batch_size_not_divisible", "train.py", "-batch_size", "multiple of -sequences_per_image", "3"),
    flag_case("train_max_seq_len_4", "train.py", "-max_seq_len", "must be in 8..512", "4"),
    Case("train_unwritable_save_path", "train.py", unwritable_save_path, "cannot create the run folder"),
    Case("train_continue_without_checkpoint", "train.py", continue_without_checkpoint, "no checkpoint to continue"),
    Case("train_preset_unknown_option", "train.py", preset_with_unknown_option, "unknown option 'learning_rate'"),
    Case("train_continue_with_changed_seed", "train.py", continue_with_changed_seed,
         "cannot continue exactly, changed since this checkpoint: -seed 5 -> 0"),
    # train.py: files
    train_file_case("train_json_missing", "visdial_processed_train", lambda folder, golden: folder / "absent.json",
                    "file not found"),
    Case("eval_json_not_json", "evaluate.py",
         lambda folder, golden: (eval_argv(folder, golden, "-visdial_processed_val",
                                           str(written(folder / "in" / "val.json", b'{"data": {"dialogs": ['))),
                                 str(folder / "in" / "val.json")),
         "not valid JSON", subprocess=True),
    eval_file_case("eval_json_without_dialogs", "visdial_processed_val",
                   lambda folder, golden: written(folder / "val.json", b'{"data": {"questions": []}}'),
                   "no data.dialogs"),
    train_file_case("train_question_index_out_of_range", "visdial_processed_train",
                    edit_round("train_processed.json", 0, 2, lambda turn: turn.update(question=100000)),
                    "question index 100000 is out of range"),
    eval_file_case("eval_image_absent_from_features", "visdial_processed_val",
                   set_image_id("val_processed.json", 424242), "no features for image(s) 424242"),
    train_file_case("train_truncated_lmdb", "visdial_image_feats", truncated_store, "truncated"),
    eval_file_case("eval_vocab_missing", "vocab", lambda folder, golden: folder / "vocab.txt", "not found"),
    train_file_case("train_model_config_unknown_key", "model_config", config_with("hiden_size", 16),
                    "unknown model config key(s) hiden_size"),
    train_file_case("train_model_config_fast_mode", "model_config", config_with("fast_mode", True),
                    "fast_mode is not supported"),
    train_file_case("train_start_path_not_a_checkpoint", "start_path",
                    lambda folder, golden: written(folder / "weights.ckpt", b"not a checkpoint at all"),
                    "not a PyTorch checkpoint"),
    # evaluate.py
    flag_case("eval_max_seq_len_shorter_than_data", "evaluate.py", "-max_seq_len", "more than -max_seq_len 40",
              "40"),
    flag_case("eval_val_evalai_on_test", "evaluate.py", "-val_evalai", "need -split val", "-split", "test"),
    Case("eval_unwritable_output", "evaluate.py", unwritable_eval_output, "cannot write the output"),
    eval_file_case("eval_round_with_99_options", "visdial_processed_val",
                   edit_round("val_processed.json", 0, 2, lambda turn: turn["answer_options"].pop(50)),
                   "99 answer options"),
    eval_file_case("eval_val_dialog_without_dense_annotation", "visdial_processed_val_dense_annotations",
                   lambda folder, golden: edited_json(processed(golden, "val_dense_annotations_processed.json"),
                                                      folder / "dense.json", lambda content: content.pop(1)),
                   "2 annotations for 3 dialogs"),
    eval_file_case("eval_hdf5_not_hdf5", "visdial_image_feats",
                   lambda folder, golden: written(folder / "features.h5", b"this is not hdf5\n" * 64),
                   "not an HDF5 file"),
    eval_file_case("eval_record_not_a_dict", "visdial_image_feats", store_with_record(lambda folder: [1, 2, 3]),
                   "record is a list, expected a dict"),
    eval_file_case("eval_checkpoint_wrong_shapes", "start_path", wrong_shape_checkpoint, "shape"),
    eval_file_case("eval_model_config_not_json", "model_config",
                   lambda folder, golden: written(folder / "config.json", b"hidden_size: 16"),
                   "not valid JSON"),
    eval_file_case("eval_question_types_not_a_types_file", "question_types",
                   lambda folder, golden: written(folder / "types.json", b'{"rounds": []}'),
                   "not a question-type file"),
    eval_file_case("eval_question_type_not_declared", "question_types",
                   lambda folder, golden: written(folder / "types.json", json.dumps(
                       {"question_types": {"color": "what color"},
                        "rounds": [{"image_id": 1, "round_id": 1, "question_type": "count"}]}).encode()),
                   "question_type 'count' is not one of question_types"),
    flag_case("eval_compare_metrics_without_question_types", "evaluate.py", "-compare_metrics",
              "needs -question_types", "baseline=metrics.json"),
    Case("eval_report_picture_empty", "evaluate.py", report_with_picture(b""), "not a picture that can be read"),
    Case("eval_report_picture_cut_short", "evaluate.py", report_with_picture(png_declaring(64, 48)),
         "not a picture that can be read"),
    Case("eval_report_picture_decompression_bomb", "evaluate.py", report_with_picture(png_declaring(60000, 60000)),
         "could be decompression bomb"),
    Case("eval_report_picture_over_the_pixel_limit", "evaluate.py", report_with_picture(png_declaring(12000, 12000)),
         "could be decompression bomb"),
    # preprocessing/pre_process_visdial.py
    Case("preprocess_raw_train_missing", "preprocessing/pre_process_visdial.py",
         preprocess_with("visdial_train", lambda folder, golden: folder / "absent.json"), "file not found",
         subprocess=True),
    Case("preprocess_max_seq_len_2", "preprocessing/pre_process_visdial.py",
         lambda folder, golden: (preprocess_argv(folder, golden, max_seq_len="2"), "-max_seq_len"),
         "must be at least 4"),
    Case("preprocess_round_without_answer", "preprocessing/pre_process_visdial.py",
         preprocess_with("visdial_val", raw_val_dialog_without_answer), "has no answer"),
    Case("preprocess_unwritable_output", "preprocessing/pre_process_visdial.py", unwritable_preprocess_output,
         "cannot write"),
    # preprocessing/convert_features.py
    Case("convert_input_truncated", "preprocessing/convert_features.py", convert(truncated_store), "truncated",
         subprocess=True),
    Case("convert_unwritable_output", "preprocessing/convert_features.py", convert_to_unwritable, "cannot write"),
    # preprocessing/make_toy_data.py
    Case("toy_zero_train_dialogs", "preprocessing/make_toy_data.py", toy_data("-train_dialogs", "0"),
         "must be at least 1", subprocess=True),
    Case("toy_boxes_fewer_than_objects", "preprocessing/make_toy_data.py", toy_data("-boxes_per_image", "2"),
         "must be more than -max_objects"),
    Case("toy_noise_not_finite", "preprocessing/make_toy_data.py", toy_data("-noise", "nan"),
         "must be a finite number"),
    Case("toy_negative_seed", "preprocessing/make_toy_data.py", toy_data("-seed", "-1"), "must be in 0..4294967295"),
    Case("toy_seed_too_large", "preprocessing/make_toy_data.py", toy_data("-seed", str(2**32)),
         "must be in 0..4294967295"),
    Case("toy_odd_hidden_size", "preprocessing/make_toy_data.py", toy_data("-hidden_size", "3"),
         "must be an even number >= 2"),
    Case("toy_more_dialogs_than_image_ids", "preprocessing/make_toy_data.py",
         toy_data("-train_dialogs", "899990", "-val_dialogs", "10", "-test_dialogs", "1"),
         "900001 dialogs, more than the 900000 image ids"),
    # scripts/check_reference.py
    Case("check_reference_missing_folder", "scripts/check_reference.py",
         lambda folder, golden: (["--fixtures", str(folder / "in" / "no_fixtures")], str(folder / "in" / "no_fixtures")),
         "fixture folder not found", subprocess=True),
]
SUBPROCESS_CASES = [case for case in CASES if case.subprocess]


def run_subprocess(case: Case, folder: Path, golden: Path, env: dict) -> Outcome:
    argv, subject = case.build(folder, golden)
    (folder / "out").mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([sys.executable, case.script, *argv], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=CASE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as timeout:
        return Outcome(None, f"timed out after {CASE_TIMEOUT_S} s: {timeout.stderr}", subject, folder / "out")
    return Outcome(result.returncode, result.stderr, subject, folder / "out")


def run_in_process(case: Case, folder: Path, golden: Path, capsys) -> Outcome:
    """The case's `main` under `run_cli`, as its command line runs it; a traceback would fail the test."""
    argv, subject = case.build(folder, golden)
    (folder / "out").mkdir(parents=True, exist_ok=True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: MAINS[case.script](argv))
    return Outcome(exit_info.value.code, capsys.readouterr().err, subject, folder / "out")


def val_without_dense_annotations(folder, golden):
    absent = folder / "in" / "val_dense.json"
    return eval_argv(folder, golden, "-visdial_processed_val_dense_annotations", str(absent), "-num_options", "4",
                     "-num_val_samples", "2"), str(absent)


# Not a bad input: val scoring without dense annotations warns and gives the metrics without NDCG.
WARNING_CASE = Case("eval_val_without_dense_annotations", "evaluate.py", val_without_dense_annotations,
                    "no val dense annotations; NDCG will not be computed")


@pytest.fixture(scope="module")
def subprocess_outcomes(golden_dir, tmp_path_factory, single_thread_env) -> dict[str, Outcome]:
    """The subprocess cases run once, PARALLEL_PROCESSES single-threaded subprocesses at a time."""
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=PARALLEL_PROCESSES) as pool:
        futures = {case.name: pool.submit(run_subprocess, case, root / case.name, golden_dir, single_thread_env)
                   for case in SUBPROCESS_CASES}
        return {name: future.result() for name, future in futures.items()}


def test_cases_are_distinct_and_many():
    assert len({case.name for case in CASES}) == len(CASES) >= 25
    assert {case.script for case in SUBPROCESS_CASES} == set(MAINS) and len(SUBPROCESS_CASES) == len(MAINS)


def assert_one_clear_line(case: Case, outcome: Outcome) -> None:
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.returncode not in (0, None), outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert "error: " in last, outcome.stderr
    assert outcome.subject in last, f"{outcome.subject!r} not named in: {last}"
    assert case.problem in last, f"{case.problem!r} not in: {last}"
    left = [str(path.relative_to(outcome.out_dir)) for path in outcome.out_dir.rglob("*") if not path.is_dir()]
    assert left == [], f"files left in the output folder: {left}"


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("case", [case for case in CASES if not case.subprocess], ids=lambda case: case.name)
def test_bad_input_is_one_clear_line(case, golden_dir, tmp_path, capsys):
    outcome = run_in_process(case, tmp_path, golden_dir, capsys)
    assert outcome.returncode == 2
    assert_one_clear_line(case, outcome)


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda case: case.name)
def test_bad_input_on_the_command_line_is_one_clear_line(case, subprocess_outcomes):
    assert_one_clear_line(case, subprocess_outcomes[case.name])


@pytest.mark.usefixtures("one_torch_thread")
def test_val_without_dense_annotations_warns_and_reports_metrics_without_ndcg(golden_dir, tmp_path):
    argv, subject = WARNING_CASE.build(tmp_path, golden_dir)
    with pytest.warns(UserWarning, match=WARNING_CASE.problem) as warned:
        evaluate.main(argv)
    assert any(subject in str(warning.message) for warning in warned)
    metrics = json.loads((tmp_path / "out" / "val_metrics.json").read_text())
    assert "ndcg" not in metrics
    assert {"r@1", "r@5", "r@10", "mean", "mrr"} <= metrics.keys()
    assert 0 < metrics["mrr"] <= 1 and 1 <= metrics["mean"] <= 4


# ---- argument errors: the same contract in every command line -----------------------------------------

ARGUMENT_CASES = [  # (script, argv, the flag the line starts with, the problem)
    ("train.py", ["-batch_size", "two"], "-batch_size", "invalid int value: 'two'"),
    ("evaluate.py", ["-split", "dev"], "-split", "invalid choice: 'dev'"),
    ("scripts/chat.py", ["-pool_size"], "-pool_size", "expected one argument"),
    ("scripts/ensemble.py", ["-weights", "heavy"], "-weights", "invalid float value: 'heavy'"),
    ("scripts/check_reference.py", [], "--fixtures", "required"),
    ("scripts/check_download.py", ["--bogus"], "--bogus", "unrecognized argument"),
    ("scripts/validate_submission.py", ["predictions.json"], "-split", "required"),
    ("scripts/benchmark_precision.py", ["--compare", "fp8"], "--compare", "invalid choice"),
    ("scripts/toy_paper_table.py", ["--val_dialogs", "many"], "--val_dialogs", "invalid int value"),
    ("scripts/benchmark.py", ["--time_limit", "soon"], "--time_limit", "invalid float value: 'soon'"),
    ("scripts/binding_study.py", ["--seeds", "0", "0", "--out", "study"], "--seeds", "must be distinct"),
    ("preprocessing/convert_features.py", ["-output", "x.h5"], "-input", "required"),
    ("preprocessing/question_types_by_word.py", ["-visdial_json", "v.json", "-out", "t.json", "-split", "dev"],
     "-split", "invalid choice"),
    ("preprocessing/pre_process_visdial.py", ["-max_seq_len", "x"], "-max_seq_len", "invalid int value"),
    ("preprocessing/make_toy_data.py", ["-seed", "0.5"], "-seed", "invalid int value: '0.5'"),
]


@pytest.mark.parametrize("script, argv, flag, problem", ARGUMENT_CASES, ids=[case[0] for case in ARGUMENT_CASES])
def test_an_argument_error_is_one_line_naming_the_flag(script, argv, flag, problem, tmp_path, monkeypatch, capsys):
    """As the command line runs it (`main()` reads sys.argv): exit code 2, one `error: -flag:` line, no
    usage block, nothing written (the case runs in an empty folder)."""
    module = importlib.import_module(script[:-len(".py")].replace("/", "."))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: {flag}") and problem in lines[0], lines[0]
    assert "usage:" not in captured.err + captured.out
    assert list(tmp_path.iterdir()) == []


def test_every_command_line_is_in_the_argument_cases():
    scripts = {path.relative_to(REPO_ROOT).as_posix() for folder in ("scripts", "preprocessing")
               for path in (REPO_ROOT / folder).glob("*.py") if 'if __name__ == "__main__"' in path.read_text()}
    assert scripts | {"train.py", "evaluate.py"} == {case[0] for case in ARGUMENT_CASES}


@pytest.mark.parametrize("message, line", [
    ("argument -batch_size/--batch_size: invalid int value: 'x'", "-batch_size: invalid int value: 'x'"),
    ("argument file: invalid choice: 'z'", "file: invalid choice: 'z'"),
    ("unrecognized arguments: -bogus", "-bogus: unrecognized argument (-h lists the flags)"),
    ("unrecognized arguments: -x 1", "-x: unrecognized arguments '-x 1' (-h lists the flags)"),
    ("the following arguments are required: file, -split/--split", "file, -split: required (-h lists the flags)"),
    ("ambiguous option: -s could match -split, -seed", "-s: ambiguous, could be -split, -seed"),
    ("something argparse may say one day", "something argparse may say one day"),
])
def test_argparse_messages_become_flag_first_lines(message, line):
    assert argument_problem(message) == line
