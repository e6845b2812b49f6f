"""scripts/benchmark_gpu.py --smoke: every row of the GPU benchmark runs on the CPU with the tiny
model of config/toy_model.json (its default), passes its own checks, and is written to the JSON file;
every throughput row is a steady state (its warm-up apart, the median of three windows); --rows runs
only the named rows and refuses a name it does not have; without a GPU and without --smoke the script
stops with one line."""
import json

import pytest
import torch

from scripts import benchmark_gpu
from utils.errors import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_smoke_run_measures_every_row(tmp_path, capsys):
    out = tmp_path / "smoke.json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark_gpu.main(["--smoke", "-out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert [name for name, row in rows.items() if row["status"] != "ok"] == []
    assert exit_info.value.code == 0 and result["complete"] and result["smoke"]
    assert set(rows) == {"eval bf16", "eval fp32", "eval reference", "eval budget 1024", "input eval",
                         "train fp32", "train bf16", "train fp16", "input train", "dense chunk 100",
                         "dense chunk 50", "dense chunk 25", "dense chunk 10", "fp16 toy run", "eval compiled",
                         "train bf16 compiled"}
    assert all(row["figure"] > 0 for row in rows.values())
    # throughput rows: the one-time warm-up apart, the figure the median of three windows
    throughput = [row for name, row in rows.items() if name != "fp16 toy run"]
    assert all(row["warm_up_s"] >= 0 for row in throughput) and rows["fp16 toy run"]["warm_up_s"] is None
    assert all(len(row["details"]["rates"]) == 3 for row in throughput if "rates" in row["details"])
    eval_rates = rows["eval fp32"]["details"]["rates"]
    assert rows["eval fp32"]["figure"] == pytest.approx(sorted(eval_rates)[1])
    assert "warm-up s" in printed and "median of 3 passes" in rows["eval bf16"]["note"]
    # the val projection: the warm-up a shape cost, for every batch shape of the whole synthetic val
    evaluation = rows["eval bf16"]["details"]
    assert 1 <= evaluation["batch_shapes"] <= evaluation["val_batch_shapes"]
    assert evaluation["val_warm_up_s"] == pytest.approx(
        rows["eval bf16"]["warm_up_s"] / evaluation["batch_shapes"] * evaluation["val_batch_shapes"], abs=0.1)
    assert f"{evaluation['val_batch_shapes']} batch shapes in 8 synthetic dialogs" in rows["eval bf16"]["projection"]
    # the engine ranks as the reference's way does; compiled as eager, up to near-ties
    assert rows["eval reference"]["details"]["beyond_near_ties"] == 0
    compiled = rows["eval compiled"]["details"]
    assert compiled["beyond_near_ties"] == 0 and compiled["max_score_difference"] <= 1e-5
    # fp16: overflowing steps were skipped and reported, every loss finite, the loss fell
    toy = rows["fp16 toy run"]["details"]
    assert all(toy["checks"].values()) and toy["overflow_iterations"][0] == 1
    assert toy["losses"][-1] < toy["losses"][0] and toy["final_loss_scale"] < 2.0 ** 20
    assert rows["train fp32"]["details"]["flops_per_step"] > 0
    assert all(name in printed for name in rows)


def test_without_a_gpu_it_stops_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: benchmark_gpu.main([]))
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1
    assert error[0].startswith("error: no CUDA GPU here") and "--smoke" in error[0]


ROW = {"name": "eval bf16", "status": "ok", "figure": 12.5, "unit": "seq/s", "warm_up_s": 4.0, "peak_memory_gib": 1.0,
       "projection": "", "note": "", "seconds": 3.0, "cpu_seconds": 2.0, "details": {}}


@pytest.mark.parametrize("field, value, wanted", [
    ("figure", "12.5", "a finite number or null"),
    ("seconds", None, "a number >= 0"),
    ("status", "done", "one of ok, failed, skipped, not run"),
    ("details", [], "an object"),
    ("peak_memory_gib", True, "a number >= 0 or null"),
    ("warm_up_s", -1.0, "a number >= 0 or null"),
])
def test_resume_checks_the_value_types_of_its_file_before_any_row(tmp_path, capsys, field, value, wanted):
    out = tmp_path / "earlier.json"
    out.write_text(json.dumps({"rows": [ROW, {**ROW, "name": "eval fp32", field: value}]}))
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: benchmark_gpu.main(["--smoke", "-out", str(out), "-resume"]))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""   # no row ran, not even the header was printed
    assert captured.err.splitlines() == [f"error: {out}: row 1 ('eval fp32'): {field} must be {wanted}, got "
                                         f"{value!r}; cannot -resume from it"]
    assert out.read_bytes() == before


def test_resume_reads_rows_of_the_right_types(tmp_path):
    out = tmp_path / "earlier.json"
    out.write_text(json.dumps({"rows": [ROW, {**ROW, "name": "eval fp32", "figure": None, "status": "failed"}]}))
    assert [row.name for row in benchmark_gpu.read_rows(str(out))] == ["eval bf16", "eval fp32"]


def test_rows_runs_only_the_named_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark_gpu.main(["--smoke", "--rows", "input eval", "eval budget 1024", "-out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert exit_info.value.code == 0
    assert [row["name"] for row in rows] == ["eval budget 1024", "input eval"]  # in the benchmark's order
    assert all(row["status"] == "ok" and row["warm_up_s"] is not None for row in rows)


def test_an_unknown_row_name_is_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: benchmark_gpu.main(["--smoke", "--rows", "eval fp32", "eval bf17",
                                            "-out", str(tmp_path / "x.json")]))
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1
    assert error[0].startswith("error: --rows: no row named 'eval bf17'") and "eval fp32" in error[0]


def test_an_unknown_row_is_refused_before_the_set_up(tmp_path, capsys, monkeypatch):
    """A misspelt --rows name costs no synthetic data and no model on the device."""
    monkeypatch.setattr(benchmark_gpu, "Rows", lambda *args: pytest.fail("the set-up ran"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: benchmark_gpu.main(["--smoke", "--rows", "eval bf17", "-out", str(tmp_path / "x.json")]))
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: --rows: no row named 'eval bf17'")
