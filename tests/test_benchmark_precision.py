"""scripts/benchmark_precision.py on the golden val: fp32 gives evaluate.py's metrics (the
reference's val_metrics_end2end.json), bf16 is compared with it (metric deltas, ranks beyond
near-ties of every option); bad flags get one line."""
import json

import pytest

from scripts import benchmark_precision
from tests.test_evaluate import golden_args, run_failing

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fp32_is_evaluate_py_and_bf16_is_measured_against_it(golden_dir, tmp_path, capsys):
    out = tmp_path / "precision.json"
    benchmark_precision.main(golden_args(golden_dir, tmp_path, "--out", str(out)))
    results = json.loads(out.read_text())["results"]
    expected = json.loads((golden_dir / "val_metrics_end2end.json").read_text())["metrics"]
    assert set(results) == {"fp32", "bf16"}  # the CPU's default comparison
    assert {key: results["fp32"]["metrics"][key] for key in expected} == pytest.approx(expected, abs=1e-6)
    bf16 = results["bf16"]
    assert bf16["deltas"]["mrr"] == pytest.approx(bf16["metrics"]["mrr"] - expected["mrr"], abs=1e-6)
    assert bf16["deltas"]["ndcg"] == pytest.approx(bf16["metrics"]["ndcg"] - expected["ndcg"], abs=1e-6)
    assert bf16["options"] == 3 * 10 * 100  # the golden val: 3 dialogs x 10 rounds x 100 options
    assert 0 <= bf16["beyond_near_ties"] <= bf16["ranks_moved"] <= bf16["options"]
    assert 0 < bf16["max_score_difference"] < 0.1  # bf16 moves the scores, by little
    printed = capsys.readouterr().out
    assert "bf16 moves MRR by" in printed and f"bf16_mrr_delta={bf16['deltas']['mrr']:+.5f}" in printed


@pytest.mark.parametrize("flags, message", [
    (["-split", "test"], "error: -split test: the comparison needs the val split"),
    (["--compare", "tf32"], "error: --compare tf32: TF32 is a GPU's arithmetic"),
    (["--compare", "bf16", "fp16"], "error: --compare fp16: -precision fp16 needs a CUDA device"),
])
def test_bad_flags_get_one_line(golden_dir, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    error = run_failing(golden_args(golden_dir, tmp_path, *flags), capsys, benchmark_precision.main)
    assert error.startswith(message)


@pytest.mark.parametrize("named", ["-start_path", "-model_config"])
def test_an_output_over_an_input_is_refused_before_any_work(golden_dir, tmp_path, capsys, monkeypatch, named):
    monkeypatch.setattr(benchmark_precision, "load_split", lambda *args: pytest.fail("the work began"))
    inputs = {"-start_path": tmp_path / "model.pt", "-model_config": tmp_path / "model_config.json"}
    inputs["-start_path"].write_bytes((golden_dir / "model_raw.pt").read_bytes())
    inputs["-model_config"].write_bytes((golden_dir / "model_config.json").read_bytes())
    before = inputs[named].read_bytes()
    flags = [*golden_args(golden_dir, tmp_path), "-start_path", str(inputs["-start_path"]),
             "-model_config", str(inputs["-model_config"]), "--out", str(inputs[named])]
    error = run_failing(flags, capsys, benchmark_precision.main)
    assert error == (f"error: {inputs[named]}: the output --out is the input {named}; writing it would destroy the "
                     "input (give the output another path)")
    assert inputs[named].read_bytes() == before


def test_help_prints_its_own_usage_and_does_nothing_else(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_precision.main(["-h"])
    printed = capsys.readouterr().out
    assert exit_info.value.code == 0 and printed.startswith("usage: ")
    assert "Precision on evidence" in printed and "--compare" in printed
    assert "Evaluate visdial-bert" not in printed  # evaluate.py's help is not this script's
    assert list(tmp_path.iterdir()) == []
