"""scripts/validate_submission.py: every failure kind one line naming the entry, valid files pass."""
import copy
import json

import pytest

from scripts import validate_submission
from utils.errors import run_cli


@pytest.fixture(autouse=True)
def outside_the_data_layout(tmp_path, monkeypatch):
    """Run in an empty folder: no data/visdial/ there to be the default -dialogs."""
    monkeypatch.chdir(tmp_path)


def run(argv, capsys):
    """(exit code, stdout lines, stderr lines) of the validator as its command line runs it."""
    code = 0
    try:
        run_cli(lambda: validate_submission.main([str(arg) for arg in argv]))
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def val_entries(image_ids=(7, 8)):
    return [{"image_id": image_id, "round_id": round_id, "ranks": list(range(100, 0, -1))}
            for image_id in image_ids for round_id in range(1, 11)]


def write(tmp_path, content, name="submission.json"):
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


def test_the_golden_test_predictions_are_valid(golden_dir, capsys):
    predictions = golden_dir / "test_predictions.json"
    for dialogs in (golden_dir / "visdial_processed" / "test_processed.json",
                    golden_dir / "visdial_raw" / "visdial_1.0_test.json"):
        code, out, err = run([predictions, "-split", "test", "-dialogs", dialogs], capsys)
        assert (code, err) == (0, []) and len(out) == 1
        assert out[0].startswith(f"{predictions}: a valid EvalAI test submission: 4 entries, 4 dialogs")


def test_a_valid_val_file(tmp_path, capsys):
    code, out, err = run([write(tmp_path, val_entries((0, 8))), "-split", "val"], capsys)
    assert (code, err) == (0, []) and "20 entries, 2 dialogs" in out[0]
    assert "image ids and rounds not checked against the split's dialogs: give -dialogs" in out[0]


def bad(entries, position, **changes):
    """A copy of `entries` with entry `position` changed (a key set to None is removed)."""
    entries = copy.deepcopy(entries)
    for key, value in changes.items():
        if value is None:
            del entries[position][key]
        else:
            entries[position][key] = value
    return entries


@pytest.mark.parametrize("content, expected", [
    ({"image_id": 7}, "must be a non-empty json list"),
    ([], "must be a non-empty json list"),
    (bad(val_entries(), 3, ranks=None), "entry 3: must be an object with exactly image_id, round_id and ranks"),
    (bad(val_entries(), 4, image_id="7"), "entry 4: image_id '7' is not an integer"),
    (bad(val_entries(), 5, image_id=True), "entry 5: image_id True is not an integer"),
    (bad(val_entries(), 1, image_id=-7), "entry 1: image_id -7 is not an image id (an integer in "
                                         "0..9223372036854775807)"),
    (bad(val_entries(), 2, image_id=2**63), "entry 2: image_id 9223372036854775808 is not an image id"),
    (bad(val_entries(), 6, round_id=0), "entry 6: round_id 0 is not an integer in 1..10"),
    (bad(val_entries(), 7, round_id=11), "entry 7: round_id 11 is not an integer in 1..10"),
    (bad(val_entries(), 8, ranks=[1] * 100), "entry 8: ranks are not a permutation of 1..100"),
    (bad(val_entries(), 9, ranks=list(range(1, 100))), "entry 9: ranks are not a permutation of 1..100"),
    (bad(val_entries(), 2, ranks=[float(rank) for rank in range(1, 101)]), "entry 2: ranks are not a permutation"),
    (bad(val_entries(), 12, round_id=2), "entry 12 (image 8, round 2): a duplicate of entry 11 (val: one entry "
                                         "per dialog and round)"),
    (val_entries()[:-1], "dialog of image 8: no entry for round 10"),
], ids=["not-a-list", "empty", "missing-key", "string-id", "boolean-id", "negative-id", "id-past-int64", "round-0", "round-11", "repeated-rank",
        "99-ranks", "float-ranks", "duplicate", "missing-round"])
def test_each_val_failure_is_one_line_naming_the_entry(tmp_path, capsys, content, expected):
    path = write(tmp_path, content)
    code, out, err = run([path, "-split", "val"], capsys)
    assert code == 2 and out == [] and err[0].startswith(f"error: {path}: {expected}"), err
    # a broken or repeated entry is one line; the round it fails to cover is the only other one
    assert len(err) <= 2 and all(": no entry for round" in line for line in err[1:]), err


def test_failures_against_the_dialogs(golden_dir, tmp_path, capsys):
    dialogs = golden_dir / "visdial_processed" / "test_processed.json"
    entries = json.loads((golden_dir / "test_predictions.json").read_text())
    cases = {
        "duplicate": (entries + [entries[0]], "entry 4 (image 226262, round 3): a duplicate of entry 0 (test: one "
                                              "entry per dialog)"),
        "unknown": (bad(entries, 1, image_id=999), "entry 1 (image 999, round 10): no dialog of image 999 in the "
                                                   "test dialogs"),
        "negative": (bad(entries, 1, image_id=-999), "entry 1: image_id -999 is not an image id"),
        "round": (bad(entries, 2, round_id=2), "entry 2 (image 458371, round 2): round 2 is not its last round (6)"),
        "missing": (entries[:3], "dialog of image 411164: no entry for round 1"),
    }
    for name, (content, expected) in cases.items():
        path = write(tmp_path, content, f"{name}.json")
        code, _, err = run([path, "-split", "test", "-dialogs", dialogs], capsys)
        assert code == 2 and err[0].startswith(f"error: {path}: {expected}"), (name, err)
        assert len(err) == (2 if name in ("unknown", "negative") else 1), err  # the unknown entry also leaves its dialog without one


def test_unreadable_files_are_one_line(golden_dir, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    code, _, err = run([broken, "-split", "test"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {broken}: not valid JSON")
    code, _, err = run([golden_dir / "test_predictions.json", "-split", "test", "-dialogs", tmp_path / "absent.json"],
                       capsys)
    assert code == 2 and len(err) == 1 and str(tmp_path / "absent.json") in err[0]


def test_the_data_layouts_dialogs_are_the_default(golden_dir, tmp_path, capsys):
    """Without -dialogs, data/visdial/visdial_1.0_<split>_processed.json (when it is there) is what
    an unknown image id is found against; without that file the summary says nothing was."""
    entries = json.loads((golden_dir / "test_predictions.json").read_text())
    unknown = write(tmp_path, bad(entries, 1, image_id=999), "unknown.json")
    code, out, err = run([unknown, "-split", "test"], capsys)
    assert code == 0 and "not checked against the split's dialogs" in out[0]
    layout = tmp_path / "data" / "visdial" / "visdial_1.0_test_processed.json"
    layout.parent.mkdir(parents=True)
    layout.write_bytes((golden_dir / "visdial_processed" / "test_processed.json").read_bytes())
    code, out, err = run([unknown, "-split", "test"], capsys)
    assert code == 2 and err[0] == (f"error: {unknown}: entry 1 (image 999, round 10): no dialog of image 999 in "
                                    "the test dialogs")
    code, out, err = run([golden_dir / "test_predictions.json", "-split", "test"], capsys)
    assert code == 0 and out[0].endswith("every dialog of data/visdial/visdial_1.0_test_processed.json")


def test_val_has_no_default_dialogs(golden_dir, tmp_path, capsys):
    """The data layout's processed val lacks the dialogs the reference's length rule drops, which
    EvalAI's val phase wants: it is no default, so a full val-phase file is not refused by it."""
    layout = tmp_path / "data" / "visdial" / "visdial_1.0_val_processed.json"
    layout.parent.mkdir(parents=True)
    processed = json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())
    dialogs = processed["data"]["dialogs"]
    entries = [{"image_id": dialog["image_id"], "round_id": number, "ranks": list(range(1, 101))}
               for dialog in dialogs for number in range(1, 11)]
    processed["data"]["dialogs"] = dialogs[1:]   # as if the length rule had dropped the first one
    layout.write_text(json.dumps(processed))
    code, out, err = run([write(tmp_path, entries, "val.json"), "-split", "val"], capsys)
    assert code == 0 and err == [] and "not checked against the split's dialogs" in out[0]
