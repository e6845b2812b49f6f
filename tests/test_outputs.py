"""No output may destroy an input or another output (utils/outputs.py, utils/outputs.py), on every
command line that writes: train.py, evaluate.py, preprocessing/pre_process_visdial.py,
preprocessing/convert_features.py and preprocessing/make_toy_data.py (scripts/check_reference.py
writes only into its own temporary folders).

By mechanism: an output that is an input (the same path, through a symbolic or a hard link, an
output folder that holds an input, an output inside an input folder); two outputs that are the same
path; an output of the wrong kind (a folder where a file is written, a file where a folder is); an
output behind a symbolic-link loop; an output folder that holds files the command does not write;
-compare_metrics labels that collide with a column, and its files' value types; the outputs of one
command written as a set (a full disk during the EvalAI pair, an LMDB store in folders that do not
exist yet, the toy data replaced as a whole); SIGTERM during preprocessing; demo.sh's own-folder
mark. Every command-line case asserts: exit code 2, exactly one
`error:` line naming both flags (or the flag and the file) and the problem, no traceback, and every
file and folder of the case (its inputs and outputs) exactly as before. The cases run in this
process under `run_cli`, as their command lines run them; the command-line contract itself, the
signal and demo.sh run as subprocesses.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import utils.outputs
from preprocessing import question_types_by_word
from tests import hostile_inputs as hostile
from tests.test_bad_input import MAINS, copied_store, eval_argv, preprocess_argv, processed, train_argv, written
from dataloader.feature_store import open_feature_store, write_hdf5_feature_store
from utils.errors import Terminated, UserError, run_cli
from utils.outputs import TEMPORARY_MARK, check_outputs, write_files

REPO_ROOT = Path(__file__).resolve().parents[1]


def listing(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` with its type, and for a file (or link) its size and modification
    time: a file written, replaced or created shows (links are not followed)."""
    def state(path: Path) -> tuple:
        status = os.lstat(path)
        return (status.st_mode,) if path.is_dir() and not path.is_symlink() else (
            status.st_mode, status.st_size, status.st_mtime_ns)
    return {str(path.relative_to(folder)): state(path) for path in sorted(folder.rglob("*"))}


def assert_one_error_line(returncode: int, stderr: str, *named: str) -> str:
    """Exit code 2, one `error:` line (the last; progress bars may come before it) naming every
    string of `named`, no traceback; returns the line."""
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and stderr.endswith(errors[0] + "\n"), stderr
    for name in named:
        assert name in errors[0], f"{name!r} not named in: {errors[0]}"
    return errors[0]


@dataclass(frozen=True)
class Case:
    """A command line whose outputs clash: `build(folder, golden)` copies the inputs it needs into
    `folder` and returns (argv of `script`, the strings its one error line must contain)."""
    name: str
    script: str
    build: Callable[[Path, Path], tuple[list[str], tuple[str, ...]]]


def copied(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def raw(golden: Path, split: str) -> Path:
    return golden / "visdial_raw" / f"visdial_1.0_{split}.json"


# ---- an output that is an input -------------------------------------------------------------

def preprocess_output_is_input(folder, golden):
    train = copied(raw(golden, "train"), folder / "in" / "train.json")
    return (preprocess_argv(folder, golden, visdial_train=str(train), save_path_train=str(train)),
            (str(train), "-save_path_train", "-visdial_train", "is the input"))


def preprocess_output_links_to_input(folder, golden):
    val = copied(raw(golden, "val"), folder / "in" / "val.json")
    link = folder / "out" / "val.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(val)
    return (preprocess_argv(folder, golden, visdial_val=str(val), save_path_val=str(link)),
            ("-save_path_val", "-visdial_val", "is the input"))


def preprocess_output_hard_links_to_input(folder, golden):
    test = copied(raw(golden, "test"), folder / "in" / "test.json")
    link = folder / "out" / "test.json"
    link.parent.mkdir(parents=True)
    os.link(test, link)
    return (preprocess_argv(folder, golden, visdial_test=str(test), save_path_test=str(link)),
            ("-save_path_test", "-visdial_test", "is the input"))


def convert_output_is_input(folder, golden):
    store = copied_store(golden, folder / "in" / "features.lmdb")
    return ["-input", str(store), "-output", str(store)], (str(store), "-output", "-input", "is the input")


def convert_output_inside_input(folder, golden):
    store = copied_store(golden, folder / "in" / "features.lmdb")
    return (["-input", str(store), "-output", str(store / "data.mdb")],
            ("-output", "-input", "is inside the input"))


def eval_predictions_are_input(folder, golden):
    test = copied(processed(golden, "test_processed.json"), folder / "in" / "mine_predictions.json")
    return (eval_argv(folder, golden, "-split", "test", "-visdial_processed_test", str(test),
                      "-save_path", str(folder / "in"), "-save_name", "mine"),
            (str(test), "-save_path/-save_name", "-visdial_processed_test", "is the input"))


def eval_report_holds_input(folder, golden):
    val = copied(processed(golden, "val_processed.json"), folder / "in" / "val.json")
    return (eval_argv(folder, golden, "-visdial_processed_val", str(val), "-report", str(folder / "in")),
            ("-report", "-visdial_processed_val", "holds the input"))


def train_run_folder_holds_input(folder, golden):
    store = copied_store(golden, folder / "in" / "run" / "features.lmdb")
    return (train_argv(folder, golden, "-visdial_image_feats", str(store), "-save_path", str(folder / "in"),
                       "-save_name", "run"),
            ("-save_path/-save_name", "-visdial_image_feats", "holds the input"))


# ---- two outputs that are the same path -------------------------------------------------------

def preprocess_two_outputs_collide(folder, golden):
    train = folder / "out" / "train.json"
    return (preprocess_argv(folder, golden, save_path_val=str(train)),
            (str(train), "-save_path_train", "-save_path_val", "are the same path"))


def eval_report_is_the_metrics_file(folder, golden):
    metrics = folder / "out" / "val_metrics.json"
    return (eval_argv(folder, golden, "-report", str(metrics)),
            (str(metrics), "-save_path/-save_name", "-report", "are the same path"))


# ---- an output of the wrong kind ------------------------------------------------------------

def preprocess_output_is_a_folder(folder, golden):
    (folder / "out" / "test.json").mkdir(parents=True)
    return preprocess_argv(folder, golden), (str(folder / "out" / "test.json"), "-save_path_test",
                                             "is a folder, expected a file")


def convert_output_is_a_folder(folder, golden):
    (folder / "out" / "features.h5").mkdir(parents=True)
    return (["-input", str(golden / "visdial_img_feat.lmdb"), "-output", str(folder / "out" / "features.h5")],
            ("-output", "is a folder, expected a file"))


def toy_out_is_a_file(folder, golden):
    path = folder / "out" / "toy"
    path.parent.mkdir(parents=True)
    path.write_text("a file")
    return ["-out", str(path)], (str(path), "-out", "is a file, expected a folder")


def train_run_folder_is_a_file(folder, golden):
    path = folder / "out" / "run"
    path.parent.mkdir(parents=True)
    path.write_text("a file")
    return train_argv(folder, golden), (str(path), "-save_path/-save_name", "is a file, expected a folder")


def eval_report_is_a_file(folder, golden):
    path = folder / "out" / "report"
    path.parent.mkdir(parents=True)
    path.write_text("a file")
    return eval_argv(folder, golden, "-report", str(path)), (str(path), "-report", "is a file, expected a folder")


# ---- a symbolic-link loop where an output goes ----------------------------------------------

def loop_output(script: str, flag: str):
    """A case of `script` whose output `flag` is a symbolic link that loops (through another one)."""
    def build(folder, golden):
        loop = hostile.symlink_loop(folder / "out", "loop")
        argv = {PREPROCESS: lambda: preprocess_argv(folder, golden, save_path_val=str(loop)),
                CONVERT: lambda: ["-input", str(golden / "visdial_img_feat.lmdb"), "-output", str(loop / "x.h5")],
                TOY: lambda: ["-out", str(loop)],
                "evaluate.py": lambda: eval_argv(folder, golden, "-save_path", str(loop)),
                "train.py": lambda: train_argv(folder, golden, "-save_path", str(loop))}[script]()
        return argv, (str(loop), flag, "cannot resolve it (symbolic links form a loop)")
    return build


# ---- an output folder that holds something else: not replaced ------------------------------

def convert_over_a_folder_of_other_files(folder, golden):
    store = folder / "out" / "features.lmdb"
    written(store / "notes.txt", b"mine")
    return (["-input", str(golden / "visdial_img_feat.lmdb"), "-output", str(store)],
            (str(store), "exists and is not an LMDB feature store; not replaced"))


def toy_over_a_folder_of_other_files(folder, golden):
    out = folder / "out" / "toy"
    written(out / "notes.txt", b"mine")
    return (["-out", str(out), *TOY_FLAGS], (str(out), "holds notes.txt, not a toy data set; not replaced"))


def toy_over_pictures_it_did_not_draw(name: str):
    """A toy set whose images/ folder holds `name` besides the pictures the generator drew."""
    def build(folder, golden):
        out = folder / "out" / "toy"
        MAINS[TOY](["-out", str(out), *TOY_FLAGS])
        written(out / "images" / name, b"mine")
        return ["-out", str(out), "-seed", "1", *TOY_FLAGS], (str(out), f"holds images/{name}, not a toy data set")
    return build


# ---- -compare_metrics: a label that collides, values of the wrong type ---------------------

def compared_run(folder: Path, golden: Path, compare: str, metrics: dict) -> list[str]:
    """evaluate.py -split val with a question-type file of the val dialogs and `compare`, whose FILE
    is written with `metrics` (FILE stands for its path)."""
    types = folder / "in" / "types.json"
    types.parent.mkdir(parents=True, exist_ok=True)
    question_types_by_word.main(["-visdial_json", str(processed(golden, "val_processed.json")), "-out", str(types)])
    metrics_path = written(folder / "in" / "other_metrics.json", json.dumps(metrics).encode())
    return eval_argv(folder, golden, "-question_types", str(types), "-compare_metrics",
                     compare.replace("FILE", str(metrics_path)))


OTHER_RUN = {"mrr": 0.5, "r@1": 0.3, "rounds_type_color": 3, "mrr_type_color": 0.4, "r_1_type_color": 0.2}


def compare_label_is_the_model(folder, golden):
    return (compared_run(folder, golden, "vilbert=FILE", OTHER_RUN),
            ("-compare_metrics", "'vilbert'", "the evaluated model's own column"))


def compare_label_is_random(folder, golden):
    return (compared_run(folder, golden, "random=FILE", OTHER_RUN),
            ("-compare_metrics", "'random'", "the random ranking's own column"))


def compare_label_twice(folder, golden):
    return (compared_run(folder, golden, "base=FILE,base=FILE", OTHER_RUN),
            ("-compare_metrics", "the label 'base' is given 2 times"))


def compare_value_of_the_wrong_type(folder, golden):
    return (compared_run(folder, golden, "base=FILE", {**OTHER_RUN, "mrr_type_color": "0.4"}),
            (str(folder / "in" / "other_metrics.json"), "mrr_type_color must be a finite number, got '0.4'"))


def compare_round_count_not_an_integer(folder, golden):
    return (compared_run(folder, golden, "base=FILE", {**OTHER_RUN, "rounds_type_color": 2.5}),
            (str(folder / "in" / "other_metrics.json"), "rounds_type_color must be an integer >= 0, got 2.5"))


PREPROCESS, CONVERT = "preprocessing/pre_process_visdial.py", "preprocessing/convert_features.py"
TOY = "preprocessing/make_toy_data.py"
TOY_FLAGS = ("-train_dialogs", "3", "-val_dialogs", "2", "-test_dialogs", "1")
CASES = [
    Case("preprocess_output_is_input", PREPROCESS, preprocess_output_is_input),
    Case("preprocess_output_links_to_input", PREPROCESS, preprocess_output_links_to_input),
    Case("preprocess_output_hard_links_to_input", PREPROCESS, preprocess_output_hard_links_to_input),
    Case("convert_output_inside_input", CONVERT, convert_output_inside_input),
    Case("eval_predictions_are_input", "evaluate.py", eval_predictions_are_input),
    Case("eval_report_holds_input", "evaluate.py", eval_report_holds_input),
    Case("train_run_folder_holds_input", "train.py", train_run_folder_holds_input),
    Case("preprocess_two_outputs_collide", PREPROCESS, preprocess_two_outputs_collide),
    Case("eval_report_is_the_metrics_file", "evaluate.py", eval_report_is_the_metrics_file),
    Case("preprocess_output_is_a_folder", PREPROCESS, preprocess_output_is_a_folder),
    Case("convert_output_is_a_folder", CONVERT, convert_output_is_a_folder),
    Case("toy_out_is_a_file", "preprocessing/make_toy_data.py", toy_out_is_a_file),
    Case("train_run_folder_is_a_file", "train.py", train_run_folder_is_a_file),
    Case("eval_report_is_a_file", "evaluate.py", eval_report_is_a_file),
    Case("preprocess_output_loops", PREPROCESS, loop_output(PREPROCESS, "-save_path_val")),
    Case("convert_output_loops", CONVERT, loop_output(CONVERT, "-output")),
    Case("toy_out_loops", TOY, loop_output(TOY, "-out")),
    Case("eval_save_path_loops", "evaluate.py", loop_output("evaluate.py", "-save_path/-save_name")),
    Case("train_save_path_loops", "train.py", loop_output("train.py", "-save_path/-save_name")),
    Case("convert_over_a_folder_of_other_files", CONVERT, convert_over_a_folder_of_other_files),
    Case("toy_over_a_folder_of_other_files", TOY, toy_over_a_folder_of_other_files),
    Case("toy_over_a_picture_it_did_not_draw", TOY, toy_over_pictures_it_did_not_draw("cat.jpg")),
    Case("toy_over_pictures_in_a_folder_of_images", TOY, toy_over_pictures_it_did_not_draw("old/123456.png")),
    Case("eval_compare_label_is_the_model", "evaluate.py", compare_label_is_the_model),
    Case("eval_compare_label_is_random", "evaluate.py", compare_label_is_random),
    Case("eval_compare_label_twice", "evaluate.py", compare_label_twice),
    Case("eval_compare_value_of_the_wrong_type", "evaluate.py", compare_value_of_the_wrong_type),
    Case("eval_compare_round_count_not_an_integer", "evaluate.py", compare_round_count_not_an_integer),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_an_output_that_would_destroy_an_input_or_output_is_refused(case, golden_dir, tmp_path, capsys):
    argv, named = case.build(tmp_path, golden_dir)
    before = listing(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: MAINS[case.script](argv))
    assert_one_error_line(exit_info.value.code, capsys.readouterr().err, *named)
    assert listing(tmp_path) == before


def test_convert_onto_its_own_input_is_refused_on_the_command_line(golden_dir, tmp_path, single_thread_env):
    """The issue's example: `convert_features.py -input X -output X` replaced the LMDB with HDF5."""
    argv, named = convert_output_is_input(tmp_path, golden_dir)
    before = listing(tmp_path)
    result = subprocess.run([sys.executable, CONVERT, *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                            env=single_thread_env, timeout=120)
    assert_one_error_line(result.returncode, result.stderr, *named)
    assert listing(tmp_path) == before


# ---- outputs written as a set ---------------------------------------------------------------

def test_full_disk_during_the_evalai_pair_replaces_neither_file(golden_dir, tmp_path, capsys, monkeypatch,
                                                                one_torch_thread):
    """The .txt's data cannot reach the disk (fsync fails with ENOSPC, as on a full disk with
    delayed allocation) after the .json was written: neither file of the earlier run is replaced."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "test_predictions.json").write_text("[] earlier run")
    (out / "test_predictions.txt").write_text("[] earlier run")
    real_fsync = utils.outputs._fsync

    def full_disk_on_the_txt(path):
        if path.name.startswith(f".test_predictions.txt{TEMPORARY_MARK}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(path)

    monkeypatch.setattr(utils.outputs, "_fsync", full_disk_on_the_txt)
    before = listing(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: MAINS["evaluate.py"](eval_argv(tmp_path, golden_dir, "-split", "test")))
    assert_one_error_line(exit_info.value.code, capsys.readouterr().err, str(out / "test_predictions.txt"),
                          "No space left on device", "none of the 2 files was replaced")
    assert listing(tmp_path) == before


def test_a_set_that_fails_midway_leaves_no_file_and_no_temporary(tmp_path):
    def write(file):
        file.write(b"complete")

    def fill_the_disk(file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match="b.json: cannot write .*none of the 3 files was replaced"):
        write_files({tmp_path / "a.json": write, tmp_path / "sub" / "b.json": fill_the_disk,
                     tmp_path / "c.json": write})
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == []
    write_files({tmp_path / "a.json": write, tmp_path / "sub" / "b.json": write})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "sub" / "b.json").read_bytes() == b"complete"


# ---- SIGTERM --------------------------------------------------------------------------------

# preprocessing's command line, whose fourth output waits after it is on disk: a window in which the
# test sends SIGTERM while temporary files exist
PREPROCESS_WITH_A_SLOW_WRITE = """
import sys, time
import utils.outputs
from preprocessing.pre_process_visdial import main
from utils.errors import run_cli

real_fsync, written = utils.outputs._fsync, []

def fsync_then_wait(path):
    real_fsync(path)
    written.append(path)
    if len(written) == 4:
        print("writing", flush=True)
        time.sleep(60)

utils.outputs._fsync = fsync_then_wait
run_cli(lambda: main(sys.argv[1:]))
"""


def test_sigterm_during_preprocessing_removes_its_temporary_files(golden_dir, tmp_path, single_thread_env):
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", PREPROCESS_WITH_A_SLOW_WRITE,
                                *preprocess_argv(tmp_path, golden_dir)], cwd=REPO_ROOT, env=single_thread_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "writing\n", process.stderr.read()
        temporaries = [path.name for path in out.iterdir()]
        assert len(temporaries) == 4 and all(TEMPORARY_MARK in name for name in temporaries), temporaries
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip() == "error: terminated (SIGTERM)"
    assert list(out.iterdir()) == []


def test_sigterm_during_a_feature_conversion_leaves_no_partial_file(golden_dir, tmp_path):
    """convert_features.py's writer, stopped as run_cli stops it on SIGTERM (Terminated) after
    its first image: no HDF5 file, no temporary."""
    store = open_feature_store(golden_dir / "visdial_img_feat.lmdb")

    def records():
        for image_id in store.image_ids():
            yield store.read_raw(image_id)
            raise Terminated()

    with pytest.raises(Terminated):
        write_hdf5_feature_store(tmp_path / "features.h5", records())
    assert list(tmp_path.iterdir()) == []


# ---- demo.sh's own folder -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "file"])
def test_demo_refuses_a_folder_it_did_not_make_before_any_setup(kind, tmp_path):
    """DEMO_DIR holds someone's files (or is a file): demo.sh stops before setting up anything (a
    setup would fail differently here: its Python does not exist) and deletes nothing."""
    demo_dir = tmp_path / "precious"
    if kind == "folder":
        demo_dir.mkdir()
        (demo_dir / "results.txt").write_text("not the demo's")
    else:
        demo_dir.write_text("not the demo's")
    before = listing(tmp_path)
    env = {**os.environ, "DEMO_DIR": str(demo_dir), "VENV": str(tmp_path / "no_venv"), "PYTHON": "false"}
    started = time.monotonic()
    result = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert time.monotonic() - started < 1.0
    assert_one_error_line(result.returncode, result.stderr, str(demo_dir), "DEMO_DIR", "not made by scripts/demo.sh")
    assert result.stdout == ""
    assert listing(tmp_path) == before


def test_output_files_given_as_flag_to_path_are_checked_as_outputs(golden_dir, tmp_path):
    """The short form a script calls with its own flags: `check_outputs({"--out": path}, inputs)`."""
    config = golden_dir / "model_config.json"
    with pytest.raises(UserError, match=f"^{config}: the output --out is the input -model_config; writing it"):
        check_outputs({"--out": config}, {"-model_config": config})
    with pytest.raises(UserError, match=f"^{tmp_path}: the output --out is a folder, expected a file$"):
        check_outputs({"--out": tmp_path, "--log": ""}, {"-model_config": config})
    check_outputs({"--out": tmp_path / "new" / "results.json", "--log": ""}, {"-model_config": config})
    assert list(tmp_path.iterdir()) == []


# ---- outputs written as one set, in folders that may not exist yet ---------------------------

def test_an_lmdb_output_gets_its_missing_folders_and_replaces_an_earlier_store(golden_dir, tmp_path):
    golden = open_feature_store(golden_dir / "visdial_img_feat.lmdb")
    store = tmp_path / "new" / "deeper" / "features.lmdb"
    for _ in range(2):  # the second run replaces the first store
        MAINS[CONVERT](["-input", str(golden_dir / "visdial_img_feat.lmdb"), "-output", str(store), "-quiet"])
        assert sorted(path.name for path in store.iterdir()) == ["data.mdb", "lock.mdb"]
        assert open_feature_store(store).image_ids() == golden.image_ids()
    assert [path.name for path in store.parent.iterdir()] == ["features.lmdb"]  # no temporary left


def test_the_toy_data_set_is_replaced_as_a_whole(tmp_path):
    out = tmp_path / "a" / "toy"
    MAINS[TOY](["-out", str(out), "-h5", *TOY_FLAGS])
    first = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    first_pictures = sorted(path.name for path in (out / "images").iterdir())
    assert "visdial_img_feat.h5" in first
    MAINS[TOY](["-out", str(out), "-seed", "1", *TOY_FLAGS])
    second = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    pictures = sorted(path.name for path in (out / "images").iterdir())  # the first seed's other ids are gone
    assert len(pictures) == len(first_pictures) == 6 and pictures != first_pictures
    # the earlier run's HDF5 copy went with its set; the dialogs are the new seed's
    assert set(second) == set(first) - {"visdial_img_feat.h5"}
    assert second["visdial_1.0_train.json"] != first["visdial_1.0_train.json"]
    assert second["vocab.txt"] == first["vocab.txt"]
    assert [path.name for path in tmp_path.rglob("*") if TEMPORARY_MARK in path.name or ".old-" in path.name] == []


def raised_while_handling_an_oserror(error: BaseException, suppress: bool) -> Callable:
    """A writer that meets an OSError and raises `error` in its handler (`from None` when
    `suppress`, as a reader converting its own OSError does)."""
    def write(file):
        try:
            raise OSError(errno.ENOENT, "No such file or directory", "input.npz")
        except OSError:
            if suppress:
                raise error from None
            raise error
    return write


@pytest.mark.parametrize("suppress", [True, False], ids=["from None", "in the handler"])
def test_a_writers_own_error_and_ctrl_c_pass_the_atomic_writers_unchanged(tmp_path, suppress):
    """Only an OSError behind a failure is the output's 'cannot write': a UserError naming an input
    and Ctrl-C (exit 130, not 2) keep what they are, and nothing is left behind."""
    out = tmp_path / "out.bin"
    with pytest.raises(UserError) as caught:
        write_files({out: raised_while_handling_an_oserror(UserError("input.npz: not found"), suppress)})
    assert str(caught.value) == "input.npz: not found"
    with pytest.raises(KeyboardInterrupt):
        write_files({out: raised_while_handling_an_oserror(KeyboardInterrupt(), suppress)})
    with pytest.raises(UserError, match=f"^{out}: cannot write \\(No such file or directory"):
        write_files({out: raised_while_handling_an_oserror(RuntimeError("a library's wrapper"), False)})
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_npz_link_names_the_input_not_the_output(tmp_path):
    from dataloader.feature_formats import convert_features
    from tests.test_convert_features import make_image, write_npz_folder

    folder = write_npz_folder(tmp_path / "detections", [make_image(np.random.default_rng(0), 1, 2)], True)
    (folder / "2.npz").symlink_to(tmp_path / "missing.npz")
    with pytest.raises(UserError) as caught:
        convert_features([str(folder)], str(tmp_path / "out.h5"), note=lambda line: None, show_progress=False)
    assert str(caught.value).startswith(f"{folder / '2.npz'}") and "out.h5" not in str(caught.value)
    assert not (tmp_path / "out.h5").exists()
