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
