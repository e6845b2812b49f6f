"""scripts/check_reference.py on the reference fixtures: every check of every group passes."""
import re
import subprocess
import sys


def test_every_check_passes_on_the_reference_fixtures(golden_dir, repo_root):
    run = subprocess.run([sys.executable, "scripts/check_reference.py", "--fixtures", str(golden_dir)],
                         cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line for line in run.stdout.splitlines() if re.match(r"^(PASS|FAIL)  ", line)]
    assert not [row for row in rows if row.startswith("FAIL")]
    names = "\n".join(rows)
    for expected in ("keys.json: names, shapes, dtypes", "eval_mixed: nsp_scores",
                     "train_labels: masked_img_loss", "dense_finetune: all100_ce_loss",
                     "preprocessing: train_processed.json (fixed)", "LMDB reader: image 562944",
                     "dataset items: val[0]", "end to end: test predictions == test_predictions.json",
                     "end to end: val metrics == val_metrics_end2end.json"):
        assert expected in names
    assert len(rows) >= 120
    assert re.search(r"^\d+ passed, 0 failed$", run.stdout, re.M)
