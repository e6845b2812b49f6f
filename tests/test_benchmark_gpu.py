"""scripts/benchmark_gpu.py --smoke: every row of the GPU benchmark runs on the CPU with the tiny
model of config/toy_model.json (its default), passes its own checks, and is written to the JSON file; without a GPU and without
--smoke the script stops with one line."""
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
    # the engine ranks as the reference's way does; compiled ranks as eager
    assert rows["eval reference"]["details"]["ranks_moved"] == 0
    assert rows["eval compiled"]["details"]["ranks_moved"] == 0
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


ROW = {"name": "eval bf16", "status": "ok", "figure": 12.5, "unit": "seq/s", "peak_memory_gib": 1.0,
       "projection": "", "note": "", "seconds": 3.0, "cpu_seconds": 2.0, "details": {}}


@pytest.mark.parametrize("field, value, wanted", [
    ("figure", "12.5", "a finite number or null"),
    ("seconds", None, "a number >= 0"),
    ("status", "done", "one of ok, failed, skipped, not run"),
    ("details", [], "an object"),
    ("peak_memory_gib", True, "a number >= 0 or null"),
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
