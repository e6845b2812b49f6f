"""scripts/toy_paper_table.py checks everything at the door: its numeric flags, --dense_flags, and
its output folder (never a preset or a folder that holds one, never a non-empty folder it did not
make), before any work; `-h` prints the usage. The work itself (minutes of training) is replaced
by a stop here: what reaches it was accepted."""
import pytest

from scripts import toy_paper_table
from utils.errors import run_cli


class ReachedTheWork(Exception):
    pass


@pytest.fixture
def run_script(monkeypatch, capsys):
    """Run the script's command line with `argv`; (exit code, stderr, stdout). Reaching the data
    generation (the first work) is exit code None."""
    def stop(*args, **kwargs):
        raise ReachedTheWork

    monkeypatch.setattr(toy_paper_table, "make_toy_visdial", stop)

    def run(*argv: str):
        try:
            run_cli(lambda: toy_paper_table.main(list(argv)))
        except ReachedTheWork:
            code = None
        except SystemExit as exit_info:
            code = exit_info.code
        captured = capsys.readouterr()
        return code, captured.err, captured.out
    return run


def test_help_prints_the_usage_and_exits_0(run_script):
    code, _, out = run_script("-h")
    assert code == 0 and "usage:" in out and "--dense_flags" in out


@pytest.mark.parametrize("flag", ["--seeds", "--val_dialogs", "--jobs"])
@pytest.mark.parametrize("value, problem", [("0", "must be a number >= 1, got 0"), ("-2", "must be a number >= 1, got -2"),
                                            ("many", "invalid int value: 'many'")])
def test_numeric_flags_below_1_are_refused_naming_the_flag(run_script, tmp_path, flag, value, problem):
    code, err, _ = run_script("--out", str(tmp_path / "out"), flag, value)
    assert code == 2 and err.strip() == f"error: {flag}: {problem}"
    assert not (tmp_path / "out").exists()


def test_accepted_numbers_reach_the_work_in_a_new_folder_marked_as_the_script_s(run_script, tmp_path):
    code, err, _ = run_script("--out", str(tmp_path / "out"), "--seeds", "1", "--val_dialogs", "5", "-jobs", "1",
                              "--dense_flags", "-lr 3e-4 -dense_target_temperature 1")
    assert code is None, err
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [toy_paper_table.MARK, "logs"]


@pytest.mark.parametrize("dense_flags, problem", [
    ("-lr -1", "--dense_flags: -lr must be a finite number >= 0, got -1.0"),
    ("-dense_target_temperature 0", "--dense_flags: -dense_target_temperature must be a finite number >= 0.001"),
    ("-dense_loss listmle -dense_target_temperature 0.5", "--dense_flags: -dense_target_temperature 0.5 needs"),
    ("-lr fast", "--dense_flags: -lr: invalid float value: 'fast'"),
    ("-lr '1e-3", "--dense_flags: No closing quotation"),
])
def test_dense_flags_train_py_would_refuse_are_refused_first(run_script, tmp_path, dense_flags, problem):
    code, err, _ = run_script("--out", str(tmp_path / "out"), "--dense_flags", dense_flags)
    assert code == 2 and err.startswith(f"error: {problem}") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out, problem", [("config/presets/toy_dense.yml", "is the input preset"),
                                          ("config", "holds the input preset"), (".", "holds the input preset")])
def test_an_output_folder_that_is_or_holds_a_preset_is_refused(run_script, repo_root, out, problem):
    code, err, _ = run_script("--out", str(repo_root / out))
    assert code == 2 and problem in err and "--out" in err
    assert (repo_root / "config" / "presets" / "toy_dense.yml").is_file()
    assert not (repo_root / toy_paper_table.MARK).exists() and not (repo_root / "config" / toy_paper_table.MARK).exists()


def test_a_non_empty_folder_it_did_not_make_is_refused_and_left_as_it_was(run_script, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, err, _ = run_script("--out", str(tmp_path))
    assert code == 2 and err.startswith(f"error: {tmp_path}: --out is not empty and was not made by this script")
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_a_folder_it_made_that_holds_a_users_file_is_refused_and_left_as_it_was(run_script, tmp_path):
    (tmp_path / toy_paper_table.MARK).touch()
    (tmp_path / "notes.txt").write_text("mine")
    code, err, _ = run_script("--out", str(tmp_path))
    assert code == 2 and err.startswith(f"error: {tmp_path}: holds notes.txt, which this script did not write")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_empty_folder_or_one_it_made_is_taken_and_emptied(run_script, tmp_path):
    code, err, _ = run_script("--out", str(tmp_path))
    assert code is None, err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old.log").write_text("an earlier run")
    code, err, _ = run_script("--out", str(tmp_path))
    assert code is None, err
    assert sorted(path.name for path in tmp_path.iterdir()) == [toy_paper_table.MARK, "logs"]
