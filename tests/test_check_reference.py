"""scripts/check_reference.py on the reference fixtures: every check of every group passes.

Each group runs once in the suite, here, through the script's `main` (the table it prints is
what is checked). Other tests check pieces of the same code on their own inputs, not these rows.
"""
import contextlib
import io
import re

import pytest

from scripts import check_reference

GROUPS = {  # group -> (at least this many rows, rows that must be there)
    "model": (80, ("keys.json: names, shapes, dtypes", "eval_mixed: nsp_scores", "train_labels: masked_img_loss",
                   "dense_finetune: all100_ce_loss")),
    "data": (30, ("preprocessing: train_processed.json (fixed)", "LMDB reader: image 562944", "dataset items: val[0]")),
    "eval": (14, ("end to end: test predictions == test_predictions.json",
                  "end to end: val metrics == val_metrics_end2end.json")),
}


def run_main(argv: list[str]) -> tuple[int, str]:
    """(exit code, stdout) of check_reference's main."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        try:
            check_reference.main(argv)
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
    return code, output.getvalue()


def table_rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.match(r"^(PASS|FAIL)  ", line)]


@pytest.fixture(scope="module")
def group_runs(golden_dir, one_torch_thread) -> dict:
    """Every group run once: {group: (exit code, stdout)}."""
    return {group: run_main(["--fixtures", str(golden_dir), "--only", group]) for group in GROUPS}


@pytest.mark.parametrize("group", GROUPS)
def test_every_check_of_the_group_passes_on_the_reference_fixtures(group_runs, group):
    code, stdout = group_runs[group]
    assert code == 0, stdout
    rows = table_rows(stdout)
    assert not [row for row in rows if row.startswith("FAIL")]
    minimum, expected_names = GROUPS[group]
    names = "\n".join(rows)
    for expected in expected_names:
        assert expected in names
    assert len(rows) >= minimum
    assert re.search(r"^\d+ passed, 0 failed$", stdout, re.M)


def test_the_groups_together_are_every_check(group_runs):
    rows = [row for _, stdout in group_runs.values() for row in table_rows(stdout)]
    assert len(rows) >= 120
    preprocessing = [row for row in rows if "preprocessing: " in row]
    assert preprocessing and all(row.startswith("PASS") for row in preprocessing)
    items = [row for row in rows if re.search(r"  dataset items: \w+\[\d+\]", row)]
    assert len(items) == 17 and all(row.startswith("PASS") for row in items)


def test_the_old_group_name_evaluation_still_works(tmp_path):
    code, stdout = run_main(["--fixtures", str(tmp_path), "--only", "evaluation"])
    rows = table_rows(stdout)
    assert code == 1 and rows and all(row.startswith("FAIL") and "absent" in row for row in rows)
    assert "end to end" in stdout and "keys.json" not in stdout
