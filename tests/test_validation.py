"""Validation at the door of every reader (issue 12, mechanism 1), one section per mechanism.

Every hostile input is a golden fixture file copied and corrupted by tests/hostile_inputs.py. In
process, each must raise one UserError line naming the file (and the image or key) and the
problem; a handful of command lines, run as subprocesses, hold the CLI contract: exit code 2,
exactly one `error:` line naming the file, no traceback, nothing new in the output locations.

    1 input files      every reader: devices, FIFOs, folders, huge, binary, deeply nested files
    2 json schema      types and shapes of every field, round counts, empty splits, relevance
    3 feature stores   one record check for LMDB and HDF5, readers and writers; store structure
    4 model config     field types and ranges; the config against the vocab, lengths and features
    5 presets          null, lists, wrong types, binary files, deep YAML
    6 checkpoints      keys, meta and non-finite tensors; every field of a -continue state
    7 resource flags   -num_workers
    8 command lines    the CLI contract
"""
import copy
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dataloader.feature_store import open_feature_store, write_hdf5_feature_store, write_lmdb_feature_store
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import load_dense_annotations, load_visdial_json
from models import build_model
from models.config import BertConfig
from models.weights import load_model_weights
from options import CPU_COUNT, EvalOptions, TrainOptions, model_config_for, parse_options
from tests import hostile_inputs as hostile
from tests.train_helpers import fixture_flags
from utils.distributed import DistributedContext
from utils.errors import UserError
from utils.inputs import read_checkpoint
from utils.training.checkpoints import CheckpointManager
from utils.training.resume_checks import check_resume_content
from utils.training.run_state import RunState

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def one_line_error(call, *fragments) -> str:
    """Run `call`; it must raise one UserError line holding every fragment."""
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, (fragment, message)
    return message


# ---------------------------------------------------------------- 1. input files

READERS = {
    "split json": lambda path: load_visdial_json(path, "val", processed=True),
    "dense annotations": load_dense_annotations,
    "model config": BertConfig.from_json_file,
    "preset": lambda path: parse_options(["-config", str(path)], TrainOptions),
    "vocabulary": load_tokenizer,
    "checkpoint": read_checkpoint,
}
TEXT_READERS = ("split json", "dense annotations", "model config", "preset", "vocabulary")
JSON_READERS = ("split json", "dense annotations", "model config")
HOSTILE_FILES = [  # (kind, build(folder), expected fragment, readers)
    ("device", lambda folder: Path("/dev/zero"), "not a regular file", tuple(READERS)),
    ("fifo", lambda folder: hostile.fifo(folder, "pipe"), "not a regular file", tuple(READERS)),
    ("folder", lambda folder: folder, "is a folder", tuple(name for name in READERS if name != "vocabulary")),
    ("huge", lambda folder: hostile.huge_sparse_file(folder, "huge.json", 3 * GIB), "larger than", TEXT_READERS),
    ("binary", lambda folder: hostile.written(folder / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00"), "not a text file",
     TEXT_READERS),
    ("nested", lambda folder: hostile.deeply_nested_json(folder, "deep.json"), "nested", (*JSON_READERS, "preset")),
    ("nan", lambda folder: hostile.written(folder / "nan.json", b'{"hidden_size": NaN}'), "NaN is not a number",
     JSON_READERS),
]


@pytest.mark.parametrize("kind, build, fragment, reader", [
    pytest.param(kind, build, fragment, reader, id=f"{reader}-{kind}")
    for kind, build, fragment, readers in HOSTILE_FILES for reader in readers])
def test_every_reader_refuses_hostile_files(kind, build, fragment, reader, tmp_path):
    path = build(tmp_path)
    one_line_error(lambda: READERS[reader](path), path, fragment)


EDITOR_FORMS = {  # how an editor may save a text file
    "a byte-order mark": lambda text: "\ufeff" + text,
    "CRLF line ends": lambda text: text.replace("\n", "\r\n"),
    "CR line ends": lambda text: text.replace("\n", "\r"),
    "a byte-order mark and CRLF": lambda text: "\ufeff" + text.replace("\n", "\r\n"),
}
TEXT_FILES = {  # reader -> the text of a valid file (from the golden fixtures), what to compare of what it read
    "split json": (lambda golden: json.dumps(json.loads((golden / "visdial_processed" / "val_processed.json")
                                                        .read_text()), indent=1), lambda read: read),
    "dense annotations": (lambda golden: json.dumps(json.loads(
        (golden / "visdial_processed" / "val_dense_annotations_processed.json").read_text()), indent=1),
        lambda read: read),
    "model config": (lambda golden: (golden / "model_config.json").read_text(), lambda read: read.to_dict()),
    "preset": (lambda golden: "batch_size: 2\nlr: 0.001\nmode: dense\n", lambda read: (read.batch_size, read.lr,
                                                                                         read.mode)),
    "vocabulary": (lambda golden: (golden / "bert-base-uncased-vocab.txt").read_text(),
                   lambda read: read.get_vocab()),
}


@pytest.mark.parametrize("form", EDITOR_FORMS)
@pytest.mark.parametrize("reader", TEXT_FILES)
def test_every_text_reader_reads_a_file_as_an_editor_saves_it(reader, form, golden_dir, tmp_path):
    text_of, compared = TEXT_FILES[reader]
    plain = hostile.written(tmp_path / "plain.txt", text_of(golden_dir).encode())
    edited = hostile.written(tmp_path / "edited.txt", EDITOR_FORMS[form](text_of(golden_dir)).encode())
    assert compared(READERS[reader](edited)) == compared(READERS[reader](plain))


def test_deep_but_sane_json_is_read_and_too_deep_json_is_one_line(tmp_path):
    """No depth limit of our own: json that Python's parser follows is read (brackets inside strings
    too); one deeper than it can follow is refused in one line, not a RecursionError traceback."""
    from utils.inputs import read_json

    depth = 500
    path = hostile.written(tmp_path / "deep.json", b"[" * depth + b'"[[[ \\" {"' + b"]" * depth)
    value = read_json(path, "file")
    for _ in range(depth - 1):
        value = value[0]
    assert value == ['[[[ " {']
    deeper = hostile.deeply_nested_json(tmp_path, "deeper.json")
    one_line_error(lambda: read_json(deeper, "file"), deeper,
                   "not valid JSON (nested deeper than the reader can follow)")


# ---------------------------------------------------------------- 2. json schema

SPLIT_CASES = [  # (name, split file, edit, fragments)
    ("option_float", "val", hostile.set_option(0, 2, 7, 3.5), ["round 3", "answer option 3.5"]),
    ("option_string", "train", hostile.set_option(1, 0, 0, "3"), ["round 1", "answer option '3'"]),
    ("option_boolean", "val", hostile.set_option(0, 0, 1, True), ["true/false at line 1"]),
    ("option_list", "test", lambda content: hostile.set_option(0, len(content["data"]["dialogs"][0]["dialog"]) - 1,
                                                              4, [1, 2])(content), ["answer option [1, 2]"]),
    ("question_string", "val", lambda content: content["data"]["dialogs"][1]["dialog"][4].update(question="7"),
     ["round 5", "question index '7' is not an integer"]),
    ("image_id_string", "val", hostile.set_dialog_field(1, "image_id", "185565"), ["dialog 1", "image_id '185565'"]),
    ("image_id_negative", "train", hostile.set_dialog_field(0, "image_id", -4), ["dialog 0", "image_id -4"]),
    ("caption_number", "val", hostile.set_dialog_field(2, "caption", 12), ["dialog 2", "caption must be a string"]),
    ("caption_surrogate", "val", hostile.set_dialog_field(2, "caption", "a \ud800 b"),
     ["caption of dialog 2 is not valid text"]),
    ("question_not_text", "val", lambda content: content["data"]["questions"].__setitem__(3, ["q"]),
     ["data.questions 3 is a list"]),
    ("val_9_rounds", "val", hostile.drop_rounds(1, 1), ["has 9 rounds", "the same number of rounds"]),
    ("dialog_11_rounds", "train", hostile.add_rounds(0, 1), ["has 11 rounds, expected 1..10"]),
    ("empty_split", "test", hostile.no_dialogs, ["the test split holds no dialogs"]),
    ("image_twice", "val", hostile.duplicate_first_dialog, ["has two dialogs (0 and 1)"]),
    ("round_id_string", "test", hostile.set_dialog_field(0, "round_id", "3"), ["round_id '3' must be an integer"]),
    ("round_id_below_rounds", "test", hostile.set_dialog_field(1, "round_id", 1), ["round_id 1 must be"]),
]


@pytest.mark.parametrize("name, split, edit, fragments", SPLIT_CASES, ids=[case[0] for case in SPLIT_CASES])
def test_split_json_fields_are_checked(name, split, edit, fragments, golden_dir, tmp_path):
    path = hostile.edited_json(golden_dir, f"{split}_processed.json", tmp_path, edit)
    one_line_error(lambda: load_visdial_json(path, split, processed=True), path, *fragments)


ANNOTATION_CASES = [
    ("relevance_above_1", hostile.set_relevance(1, 5, 1.5), ["annotation 1", "relevance 1.5 is not in [0, 1]"]),
    ("relevance_negative", hostile.set_relevance(0, 0, -0.25), ["relevance -0.25"]),
    ("relevance_infinite", hostile.set_relevance(0, 9, hostile.HUGE), ["relevance inf"]),
    ("relevance_string", hostile.set_relevance(2, 1, "1"), ["relevance must be 100 numbers"]),
    ("round_id_0", hostile.set_annotation_field(0, "round_id", 0), ["round_id 0 is not a round in 1..10"]),
    ("image_id_float", hostile.set_annotation_field(1, "image_id", 2.0), ["image_id 2.0"]),
    ("no_annotations", lambda annotations: annotations.clear(), ["holds no dense annotations"]),
]


@pytest.mark.parametrize("name, edit, fragments", ANNOTATION_CASES, ids=[case[0] for case in ANNOTATION_CASES])
def test_dense_annotation_fields_are_checked(name, edit, fragments, golden_dir, tmp_path):
    path = hostile.edited_json(golden_dir, "val_dense_annotations_processed.json", tmp_path, edit)
    one_line_error(lambda: load_dense_annotations(path), path, *fragments)


def test_the_golden_files_pass_every_check(golden_dir):
    for split in ("train", "val", "test"):
        assert load_visdial_json(golden_dir / "visdial_processed" / f"{split}_processed.json", split, processed=True)
    assert load_dense_annotations(golden_dir / "visdial_processed" / "train_dense_annotations_processed.json")


# ---------------------------------------------------------------- 3. feature stores

def set_array(field: str, index: tuple, value):
    def change(record):
        record[field][index] = value
    return change


def set_field(field: str, value):
    def change(record):
        record[field] = value
    return change


def unorder_box(record):
    record["boxes"][2, 0] = record["boxes"][2, 2] + 1


RECORD_CASES = [  # the same corruption in both formats, read and written: one shared check
    ("nan_feature", set_array("features", (1, 5), np.nan), "'features' holds NaN or inf (box 1)"),
    ("inf_box", set_array("boxes", (0, 2), np.inf), "'boxes' holds NaN or inf (box 0)"),
    ("nan_class", set_array("cls_prob", (3, 0), np.nan), "'cls_prob' holds NaN or inf (box 3)"),
    ("unordered_box", unorder_box, "box 2 is"),
    ("zero_width", set_field("image_w", 0), "image_w must be at least 1"),
    ("negative_height", set_field("image_h", -5), "image_h must be at least 1"),
]


def store_of(kind: str, folder: Path, records: list) -> Path:
    if kind == "lmdb":
        return hostile.raw_lmdb(folder / "features.lmdb", records)
    return hostile.raw_hdf5(folder / "features.h5", records)


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
@pytest.mark.parametrize("name, change, fragment", RECORD_CASES, ids=[case[0] for case in RECORD_CASES])
def test_feature_readers_share_one_record_check(kind, name, change, fragment, golden_dir, tmp_path):
    records = hostile.corrupted_record(golden_dir, change)
    store = open_feature_store(store_of(kind, tmp_path, records))
    image_id, other = records[0]["image_id"], records[1]["image_id"]
    one_line_error(lambda: store[image_id], store.path, f"image {image_id}", fragment)
    assert store[other]["num_boxes"] == records[1]["num_boxes"] + 1  # the other image still reads


@pytest.mark.parametrize("writer", [write_lmdb_feature_store, write_hdf5_feature_store],
                         ids=["lmdb_writer", "hdf5_writer"])
@pytest.mark.parametrize("name, change, fragment", RECORD_CASES, ids=[case[0] for case in RECORD_CASES])
def test_feature_writers_share_the_same_check_and_leave_nothing(writer, name, change, fragment, golden_dir,
                                                                tmp_path):
    records = hostile.corrupted_record(golden_dir, change)
    records.reverse()  # the bad record comes second: something was already written
    output = tmp_path / ("out.lmdb" if writer is write_lmdb_feature_store else "out.h5")
    one_line_error(lambda: writer(output, records), output, f"image {records[1]['image_id']}", fragment)
    assert list(tmp_path.iterdir()) == []


def lmdb_structure_case(golden: Path, folder: Path, case: str) -> Path:
    records = [hostile.decoded(record) for record in hostile.golden_records(golden)]
    keys = {"duplicate_key": [b"492072", b"492072"], "key_not_an_id": [b"492072", b"abc"]}.get(case)
    extra = {b"feature_size": 1024} if case == "declared_width" else None
    return hostile.raw_lmdb(folder / "features.lmdb", records, keys=keys, extra=extra)


def hdf5_structure_case(golden: Path, folder: Path, case: str) -> Path:
    records = [hostile.decoded(record) for record in hostile.golden_records(golden)]
    datasets = {
        "image_id_2d": {"image_id": np.array([[492072], [562944]])},
        "image_id_twice": {"image_id": np.array([492072, 492072])},
        "boxes_rows": {"boxes": np.zeros((2, 3, 4), np.float32)},
        "image_id_text": {"image_id": np.array([b"a", b"b"])},
    }[case]
    return hostile.raw_hdf5(folder / "features.h5", records, datasets)


@pytest.mark.parametrize("build, case, fragment", [
    (lmdb_structure_case, "duplicate_key", "image 492072 is listed twice"),
    (lmdb_structure_case, "key_not_an_id", "image id 1 must be an integer"),
    (hdf5_structure_case, "image_id_2d", "expected [N] (1-d)"),
    (hdf5_structure_case, "image_id_twice", "image 492072 is listed twice"),
    (hdf5_structure_case, "boxes_rows", "'boxes' has shape [2, 3, 4], expected [2, 12, 4]"),
    (hdf5_structure_case, "image_id_text", "'image_id' is not a dataset of integers"),
], ids=lambda value: value if isinstance(value, str) and " " not in value else None)
def test_store_structure_is_checked_when_opened(build, case, fragment, golden_dir, tmp_path):
    path = build(golden_dir, tmp_path, case)
    one_line_error(lambda: open_feature_store(path), path, fragment)


def test_rows_beyond_the_stored_ones_and_widths_are_refused(golden_dir, tmp_path):
    records = [hostile.decoded(record) for record in hostile.golden_records(golden_dir)]
    path = hostile.raw_hdf5(tmp_path / "features.h5", records, {"num_boxes": np.array([13, 11], np.int32)})
    one_line_error(lambda: open_feature_store(path)[492072], "image 492072", "num_boxes must be in 1..12, got 13")
    path = lmdb_structure_case(golden_dir, tmp_path, "declared_width")
    one_line_error(lambda: open_feature_store(path)[492072], "image 492072", "holds 98304 bytes, expected 49152")


# ---------------------------------------------------------------- 4. model config

@pytest.mark.parametrize("change, fragment", [
    ({"hidden_size": "16"}, "hidden_size must be an integer, got '16'"),
    ({"num_attention_heads": 3}, "hidden_size (16) is not a multiple of num_attention_heads (3)"),
    ({"num_attention_heads": 0}, "num_attention_heads must be at least 1"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob must be in [0, 1]"),
    ({"v_biattention_id": [0, "1"]}, "v_biattention_id must be a list of integers"),
    ({"type_vocab_size": 1}, "type_vocab_size must be at least 2"),
    ({"initializer_range": None}, "initializer_range must be a number, got None"),
])
def test_model_config_fields_are_typed(change, fragment, golden_dir, tmp_path):
    values = {**json.loads((golden_dir / "model_config.json").read_text()), **change}
    path = hostile.written(tmp_path / "config.json", json.dumps(values).encode())
    one_line_error(lambda: build_model(path), path, fragment)


@pytest.fixture(scope="module")
def golden_data(golden_dir):
    """What `model_config_for` reads of a dataset: its vocabulary size and feature store (the
    train.py command line below checks the same through a real dataset)."""
    return SimpleNamespace(vocabulary_size=30522, features=open_feature_store(golden_dir / "visdial_img_feat.lmdb"))


def eval_options(golden: Path, config: Path) -> EvalOptions:
    return parse_options(["-model_config", str(config), "-vocab", str(golden / "bert-base-uncased-vocab.txt"),
                          "-max_seq_len", "108"], EvalOptions)


@pytest.mark.parametrize("change, fragment", [
    ({"vocab_size": 1000}, "vocab_size 1000 is smaller than the 30522 token ids of"),
    ({"max_position_embeddings": 64}, "max_position_embeddings 64 is smaller than -max_seq_len 108"),
    ({"v_feature_size": 1024}, "v_feature_size 1024 does not match the 2048-d features of"),
    ({"v_target_size": 91}, "v_target_size 91 does not match the 1601 class probabilities"),
])
def test_model_config_is_checked_against_the_data(change, fragment, golden_dir, golden_data, tmp_path):
    values = {**json.loads((golden_dir / "model_config.json").read_text()), **change}
    path = hostile.written(tmp_path / "config.json", json.dumps(values).encode())
    one_line_error(lambda: model_config_for(eval_options(golden_dir, path), golden_data), path, fragment)
    assert model_config_for(eval_options(golden_dir, golden_dir / "model_config.json"), golden_data)


# ---------------------------------------------------------------- 5. presets

@pytest.mark.parametrize("text, fragment", [
    (b"visdial_processed_val: null\n", "option 'visdial_processed_val' must be a string"),
    (b"model_config: [a.json, b.json]\n", "option 'model_config' must be a string"),
    (b"save_name: 2024\n", "option 'save_name' must be a string (quote a value"),
    (b"batch_size: {a: 1}\n", "option 'batch_size' must be an integer"),
    (b"lr: [0.1]\n", "option 'lr' must be a number"),
    (b"overfit: 1\n", "option 'overfit' must be true or false"),
    (b"batch_size: " + b"[" * 600 + b"]" * 600 + b"\n", "nested deeper"),
    (b"\xff\xfebatch_size: 2\n", "not a text file"),
])
def test_presets_check_each_value(text, fragment, tmp_path):
    preset = hostile.written(tmp_path / "preset.yml", text)
    one_line_error(lambda: parse_options(["-config", str(preset)], TrainOptions), preset, fragment)


# ---------------------------------------------------------------- 6. checkpoints

@pytest.mark.parametrize("change, fragment", [
    (lambda state: state.update({7: torch.zeros(1)}), "key 7 is not a string"),
    (lambda state: state.update({"meta": torch.empty(2, device="meta")}), "meta is not a dense tensor with data"),
    (lambda state: next(value for value in state.values() if value.is_floating_point()).view(-1).__setitem__(
        0, float("nan")), "holds NaN or inf"),
])
def test_checkpoint_weights_are_real_and_finite(change, fragment, golden_dir, tmp_path):
    state = torch.load(golden_dir / "model_raw.pt", weights_only=True)
    change(state)
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    one_line_error(lambda: load_model_weights(build_model(golden_dir / "model_config.json"), path), path, fragment)


@pytest.fixture(scope="module")
def resume_run(golden_dir, tmp_path_factory):
    """A valid -continue checkpoint (after one optimizer step of the tiny model, gradients
    pending), its options, and a fresh run state to resume it into."""
    folder = tmp_path_factory.mktemp("resume")
    options = parse_options(fixture_flags(golden_dir, folder, "run", "-continue"), TrainOptions)
    context = DistributedContext(0, 1, 0, torch.device("cpu"))
    state = RunState.start(build_model(golden_dir / "model_config.json"), options, "fp32")
    for parameter in state.model.parameters():
        parameter.grad = torch.full_like(parameter, 1e-3)
    state.optimizer.step()
    state.progress.iteration = 1
    folder = CheckpointManager(folder / "run")
    folder.path.mkdir()
    folder.save(state, options, context)
    fresh = RunState.start(build_model(golden_dir / "model_config.json"), options, "fp32")
    return SimpleNamespace(folder=folder, path=folder.checkpoint(1), options=options, context=context, state=fresh,
                           content=torch.load(folder.checkpoint(1), weights_only=True))


def first_moment(content):
    return next(iter(content["optimizer_state_dict"]["state"].values()))


RESUME_CASES = [  # (name, change(content), fragments)
    ("progress_missing_field", lambda content: content["progress"].pop("epoch"), ["progress lacks epoch"]),
    ("progress_foreign_field", lambda content: content["progress"].update(speed=3), ["unknown field(s) speed"]),
    ("progress_wrong_type", lambda content: content["progress"].update(iteration="1"), ["progress.iteration"]),
    ("foreign_top_field", lambda content: content.update(hyper=1), ["the checkpoint has unknown field(s) hyper"]),
    ("world_size", lambda content: content.update(world_size=2), ["per_rank holds 1 entries for world_size 2"]),
    ("model_config_values", lambda content: content["model_config"].update(values=3),
     ["model_config.values must be a mapping"]),
    ("model_config_hash", lambda content: content["model_config"].update(sha256=None),
     ["model_config.sha256 must be a string"]),
    ("model_config_foreign_field", lambda content: content["model_config"].update(path="x"),
     ["model_config has unknown field(s) path"]),
    ("rng_garbage", lambda content: content["per_rank"][0].update(rng={"python": 5}), ["per_rank[0].rng"]),
    ("moment_shape", lambda content: first_moment(content).update(exp_avg=torch.zeros(3)),
     ["exp_avg has shape (3,)"]),
    ("moment_missing", lambda content: first_moment(content).pop("exp_avg_sq"), ["lacks exp_avg_sq"]),
    ("group_size", lambda content: content["optimizer_state_dict"]["param_groups"][0]["params"].pop(),
     ["parameter groups of sizes"]),
    ("nan_weight", lambda content: content["model_state_dict"].update(
        {"bert_pretrained.cls.predictions.bias": torch.full((30522,), float("inf"))}), ["holds NaN or inf"]),
    ("pending_gradient_shape", lambda content: content["per_rank"][0]["pending_gradients"].update(
        {"bert_pretrained.cls.predictions.bias": torch.zeros(2)}), ["pending gradient"]),
]


@pytest.mark.parametrize("name, change, fragments", RESUME_CASES, ids=[case[0] for case in RESUME_CASES])
def test_every_field_of_a_resume_state_is_checked(name, change, fragments, resume_run):
    """Each field corrupted in a copy of the content of a checkpoint read from disk (every check
    runs before the state changes, so one fresh state serves every case)."""
    content = copy.deepcopy(resume_run.content)
    change(content)

    def resume():
        check_resume_content(content, resume_run.path)
        CheckpointManager.restore(resume_run.path, content, resume_run.state, resume_run.context, print)

    one_line_error(resume, resume_run.path, *fragments)


def test_an_untouched_resume_state_resumes(resume_run):
    path, content = resume_run.folder.read_for_resume("", resume_run.options, print)
    resume_run.folder.restore(path, content, resume_run.state, resume_run.context, print)
    assert resume_run.state.progress.iteration == content["progress"]["iteration"]


# ---------------------------------------------------------------- 7. resource flags

def test_num_workers_is_at_most_the_cpus():
    assert parse_options(["-num_workers", str(CPU_COUNT)], EvalOptions).problems() == []
    problems = parse_options(["-num_workers", str(CPU_COUNT + 1)], EvalOptions).problems()
    assert problems == [f"-num_workers must be in 0..{CPU_COUNT} (the CPUs of this machine), got {CPU_COUNT + 1}"]


# ---------------------------------------------------------------- 8. command lines

def listing(*folders: Path) -> list:
    return sorted(str(path) for folder in folders for path in folder.rglob("*"))


def cli_train_vocab_beyond_the_config(golden: Path, folder: Path):
    """The config against the data, end to end: the tokenizer's vocabulary has 30522 ids."""
    values = {**json.loads((golden / "model_config.json").read_text()), "vocab_size": 30000}
    config = hostile.written(folder / "in" / "config.json", json.dumps(values).encode())
    out = folder / "out"
    return ["train.py", *fixture_flags(golden, out, "run", "-model_config", str(config))], str(config), out


def cli_convert_tsv_with_nan(golden: Path, folder: Path):
    from tests.test_convert_features import tsv_line

    features = np.ones((2, 8), np.float32)
    features[1, 3] = np.nan
    tsv = hostile.written(folder / "in" / "features.tsv", tsv_line(42, features) + b"\n")
    out = folder / "out"
    return ["preprocessing/convert_features.py", "-input", str(tsv), "-output", str(out / "f.h5")], \
        f"{tsv} line 1 (image 42)", out


CLI_CASES = {"train_vocab_beyond_the_config": cli_train_vocab_beyond_the_config,
             "convert_tsv_with_nan": cli_convert_tsv_with_nan}


@pytest.fixture(scope="module")
def cli_outcomes(golden_dir, tmp_path_factory, single_thread_env):
    """Each CLI case run once as a subprocess (all at once), with the listing of its output
    folder (created empty beforehand) and input folder before and after."""
    def run(name):
        folder = tmp_path_factory.mktemp(name)
        (folder / "in").mkdir(exist_ok=True)
        argv, subject, out = CLI_CASES[name](golden_dir, folder)
        out.mkdir()
        before = listing(folder)
        result = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=600, env=single_thread_env)
        return result, subject, before, listing(folder)

    with ThreadPoolExecutor(max_workers=len(CLI_CASES)) as pool:
        return dict(zip(CLI_CASES, pool.map(run, CLI_CASES)))


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_the_command_lines_keep_the_contract(name, cli_outcomes):
    result, subject, before, after = cli_outcomes[name]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and subject in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert after == before, "something new in the output or input folders"
