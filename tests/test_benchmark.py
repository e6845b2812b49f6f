"""scripts/benchmark.py: --smoke runs every row on the CPU with the tiny model, each passing its own
checks, each throughput figure a steady state whose windows hold no first-call cost; --rows runs
only the named rows; every flag, the output path and -h are checked before any work."""
import json
import time
from types import SimpleNamespace

import pytest

from models import VisualDialogEncoder
from scripts import benchmark
from utils.benchmarking import measure
from utils.errors import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DELAY_S = 1000.0
"""A first-call cost the smoke test adds to each model row, on the benchmark's clock: the warm-up must
hold it, no window."""
DELAYED_ROWS = ("eval bf16", "eval fp32", "eval reference", "eval budget 1024", "train fp32", "train bf16",
                "train fp16", "dense chunk 100", "dense chunk 10", "dense one graph")


def run_failing(argv: list, capsys) -> str:
    """The one error line of a run that must stop with exit code 2, having printed nothing."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: benchmark.main(argv))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and captured.out == "", captured.err
    return lines[0]


@pytest.fixture
def slow_first_forward(monkeypatch):
    """The first model call of each row in DELAYED_ROWS takes DELAY_S more on the clock of
    utils/benchmarking/measure.py, as a first shape's plan does on a GPU (the clock jumps; no sleep)."""
    pending, clock = {}, {"offset": 0.0}
    measure_row, forward = benchmark.measure_row, VisualDialogEncoder.forward

    def delayed_measure_row(name, *args):
        pending["delay"] = name in DELAYED_ROWS
        return measure_row(name, *args)

    def delayed_forward(self, *args, **kwargs):
        if pending.pop("delay", False):
            clock["offset"] += DELAY_S
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(benchmark, "measure_row", delayed_measure_row)
    monkeypatch.setattr(VisualDialogEncoder, "forward", delayed_forward)
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock["offset"],
                                                         process_time=time.process_time))


def test_smoke_run_measures_every_row_in_its_steady_state(tmp_path, capsys, slow_first_forward):
    out = tmp_path / "smoke.json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--smoke", "-out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert [name for name, row in rows.items() if row["status"] != "ok"] == []
    assert exit_info.value.code == 0 and result["smoke"] and result["sizes"]["options"] == 4
    assert list(rows) == ["matmul fp32", "matmul bf16", "eval bf16", "eval fp32", "eval reference", "eval budget 1024",
                          "input eval", "train fp32", "train bf16", "train fp16", "input train", "dense chunk 100",
                          "dense chunk 10", "dense one graph", "eval compiled", "train bf16 compiled"]
    assert all(row["figure"] > 0 and row["name"] in printed for row in rows.values())
    assert all(len(row["details"]["rates"]) == 3 and row["warm_up_s"] >= 0 for row in rows.values())
    assert rows["eval fp32"]["figure"] == pytest.approx(sorted(rows["eval fp32"]["details"]["rates"])[1])
    # the first call's cost is the warm-up, and no window holds it
    for name in DELAYED_ROWS:
        assert rows[name]["warm_up_s"] > DELAY_S / 2, name
        assert max(rows[name]["details"]["window_seconds"]) < DELAY_S / 2, name
    # the val projection: the warm-up a shape cost, for every batch shape of the synthetic val
    evaluation = rows["eval bf16"]["details"]
    assert 1 <= evaluation["batch_shapes"] <= evaluation["val_batch_shapes"]
    assert evaluation["val_warm_up_s"] == pytest.approx(
        rows["eval bf16"]["warm_up_s"] / evaluation["batch_shapes"] * evaluation["val_batch_shapes"], abs=0.1)
    assert evaluation["flops_per_sequence"] > 0 and rows["train fp32"]["details"]["flops_per_step"] > 0
    # the engine ranks as the reference's way does; compiled as eager, up to near-ties
    assert rows["eval reference"]["details"]["beyond_near_ties"] == 0
    assert "ours fp32" in rows["eval reference"]["note"] and "in CPU seconds" in rows["eval reference"]["note"]
    assert rows["eval compiled"]["details"]["max_score_difference"] <= 1e-5


def test_rows_runs_only_the_named_rows_and_the_cpu_sizes_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    out = tmp_path / "rows.json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--rows", "input eval", "matmul fp32", "--model_config", "config/toy_model.json",
                        "--repeats", "1", "--workers", "0", "-out", str(out)])
    result = json.loads(out.read_text())
    assert exit_info.value.code == 0 and not result["smoke"]
    assert [row["name"] for row in result["rows"]] == ["matmul fp32", "input eval"]  # in the benchmark's order
    assert all(row["status"] == "ok" and len(row["details"]["rates"]) == 1 for row in result["rows"])
    cpu_sizes = json.loads(json.dumps(benchmark.dataclasses.asdict(benchmark.CPU)))
    assert result["sizes"] == {**cpu_sizes, "repeats": 1, "workers": 0}


def test_an_unknown_row_is_refused_with_one_line_before_the_set_up(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark.Benchmark, "__init__", lambda *args: pytest.fail("the set-up ran"))
    error = run_failing(["--smoke", "--rows", "eval fp32", "eval bf17", "-out", str(tmp_path / "x.json")], capsys)
    assert error.startswith("error: --rows: no row named 'eval bf17'") and "eval fp32" in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value, problem", [
    ("--repeats", "0", "must be a number >= 1, got 0"),
    ("--dialogs", "-1", "must be a number >= 1, got -1"),
    ("--reference_chunk", "0", "must be a number >= 1, got 0"),
    ("--options", "1", "must be a number in 2..100, got 1"),
    ("--options", "101", "must be a number in 2..100, got 101"),
    ("--batch_size", "-80", "must be a number >= 1, got -80"),
    ("--workers", "-1", "must be a number >= 0, got -1"),
    ("--budgets", "0", "must be a number >= 1, got 0"),
    ("--dense_chunks", "-10", "must be a number >= 1, got -10"),
    ("--time_limit", "0", "must be a number > 0, got 0"),
    ("--time_limit", "nan", "must be a number > 0, got nan"),
    ("--repeats", "1.5", "invalid int value: '1.5'"),
])
def test_a_number_out_of_range_is_refused_at_the_door(tmp_path, capsys, monkeypatch, flag, value, problem):
    monkeypatch.setattr(benchmark.Benchmark, "__init__", lambda *args: pytest.fail("the set-up ran"))
    error = run_failing(["--smoke", flag, value, "-out", str(tmp_path / "x.json")], capsys)
    assert error == f"error: {flag}: {problem}"
    assert list(tmp_path.iterdir()) == []


def test_the_numbers_at_the_ends_of_their_ranges_are_accepted():
    args = benchmark.parse_args(["--repeats", "1", "--dialogs", "1", "--reference_chunk", "1", "--workers", "0",
                                 "--budgets", "1", "--dense_chunks", "1", "--time_limit", "0.5", "--options", "2"])
    assert (args.repeats, args.dialogs, args.reference_chunk, args.workers, args.options) == (1, 1, 1, 0, 2)
    assert (args.budgets, args.dense_chunks, args.time_limit) == ([1], [1], 0.5)
    assert benchmark.parse_args(["--options", "100", "--batch_size", "2"]).options == 100


def test_a_batch_size_the_preset_cannot_split_into_images_is_refused_at_the_door(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark.Benchmark, "__init__", lambda *args: pytest.fail("the set-up ran"))
    error = run_failing(["--smoke", "--batch_size", "3", "-out", str(tmp_path / "x.json")], capsys)
    assert error == "error: --batch_size: must be a multiple of 2 (sequences an image in config/presets/base.yml), got 3"


def test_an_output_over_the_model_config_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark.Benchmark, "__init__", lambda *args: pytest.fail("the set-up ran"))
    config = tmp_path / "model.json"
    config.write_text((benchmark.SMOKE_CONFIG).read_text())
    before = config.read_bytes()
    error = run_failing(["--smoke", "--model_config", str(config), "-out", str(config)], capsys)
    assert error.startswith(f"error: {config}: the output -out is the input --model_config")
    assert config.read_bytes() == before
    error = run_failing(["--smoke", "-out", str(tmp_path)], capsys)
    assert error == f"error: {tmp_path}: the output -out is a folder, expected a file"


def test_help_prints_its_own_usage_and_does_nothing_else(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: benchmark.main(["-h"]))
    printed = capsys.readouterr().out
    assert exit_info.value.code == 0 and printed.startswith("usage: ")
    assert "--reference_chunk" in printed and "eval reference" in printed and "-start_path" not in printed
    assert list(tmp_path.iterdir()) == []


def test_a_row_the_time_limit_cuts_is_not_run_and_the_run_does_not_fail(tmp_path, capsys):
    out = tmp_path / "cut.json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--smoke", "--rows", "eval compiled", "train bf16 compiled", "--time_limit", "3",
                        "-out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert exit_info.value.code == 0 and [row["status"] for row in rows] == ["not run", "not run"]
    assert "--time_limit" in rows[0]["note"] and rows[1]["note"] == "--time_limit reached"
