"""evaluate.py end to end on the golden fixture data, and its bad inputs (one clear line each)."""
import json
from pathlib import Path

import pytest
import torch

import evaluate
from utils.conformance.evaluation import eval_checks
from utils.errors import UserError, run_cli
from utils.evaluation import run as evaluation_run
from utils.evaluation.evalai import check_submission
from utils.evaluation.metrics import near_tie_swaps, visdial_metrics
from utils.evaluation.validation import format_metrics_table


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def golden_args(golden_dir: Path, out_dir: Path, *extra: str) -> list[str]:
    processed = golden_dir / "visdial_processed"
    return ["-model_config", str(golden_dir / "model_config.json"), "-start_path", str(golden_dir / "model_raw.pt"),
            "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"),
            "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"),
            "-visdial_processed_test", str(processed / "test_processed.json"),
            "-visdial_processed_val", str(processed / "val_processed.json"),
            "-visdial_processed_val_dense_annotations", str(processed / "val_dense_annotations_processed.json"),
            "-max_seq_len", "108", "-num_workers", "0", "-save_path", str(out_dir), "-save_name", "golden",
            *extra]


def run_failing(argv: list[str], capsys, main=evaluate.main) -> str:
    """Run evaluate.py's main (or another CLI's) as the CLI does; return its one error line."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), error
    return error[0]


def test_test_split_writes_the_reference_predictions(golden_dir, tmp_path):
    evaluate.main(golden_args(golden_dir, tmp_path, "-eval_tokens_per_batch", "3000"))
    expected = json.loads((golden_dir / "test_predictions.json").read_text())
    written = json.loads((tmp_path / "golden_predictions.json").read_text())
    assert json.loads((tmp_path / "golden_predictions.txt").read_text()) == written
    assert [(e["image_id"], e["round_id"]) for e in written] == [(e["image_id"], e["round_id"]) for e in expected]
    reference_scores = torch.load(golden_dir / "eval_scores.pt", weights_only=True)["test_nsp_probs"]
    _, beyond_near_ties = near_tie_swaps(torch.tensor([e["ranks"] for e in written]),
                                         torch.tensor([e["ranks"] for e in expected]), reference_scores)
    assert beyond_near_ties == 0


def test_val_split_metrics_evalai_file_and_report(golden_dir, tmp_path, capsys):
    report = tmp_path / "report"
    evaluate.main(golden_args(golden_dir, tmp_path, "-split", "val", "-val_evalai", "-report", str(report)))
    metrics = json.loads((tmp_path / "golden_metrics.json").read_text())
    expected = json.loads((golden_dir / "val_metrics_end2end.json").read_text())["metrics"]
    assert {key: metrics[key] for key in expected} == pytest.approx(expected, abs=1e-6)
    assert metrics["tied_rounds"] == 0 and metrics["mrr_pessimistic"] == metrics["mrr"]  # no exact ties here
    assert "MRR" in capsys.readouterr().out

    entries = json.loads((tmp_path / "golden_val_predictions.json").read_text())
    dialogs = json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())["data"]["dialogs"]
    assert len(entries) == sum(len(dialog["dialog"]) for dialog in dialogs)
    # ranks are in json option order: the ground truth's rank averages to the metric per round
    for round_number in range(1, 11):
        gt_ranks = [entry["ranks"][dialogs[i // 10]["dialog"][round_number - 1]["gt_index"]]
                    for i, entry in enumerate(entries) if entry["round_id"] == round_number]
        assert sum(gt_ranks) / len(gt_ranks) == pytest.approx(metrics[f"mean_round_{round_number}"])
    assert (report / "index.html").is_file()


def test_checkpoint_that_does_not_fit_the_config(golden_dir, tmp_path, capsys):
    config = json.loads((golden_dir / "model_config.json").read_text())
    config["intermediate_size"] = 32
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    error = run_failing(golden_args(golden_dir, tmp_path, "-model_config", str(config_path)), capsys)
    assert "model_raw.pt" in error and "shape" in error
    assert not (tmp_path / "golden_predictions.json").exists()


def test_test_dialog_whose_last_round_has_no_options(golden_dir, tmp_path, capsys):
    content = json.loads((golden_dir / "visdial_processed" / "test_processed.json").read_text())
    del content["data"]["dialogs"][0]["dialog"][-1]["answer_options"]
    broken = tmp_path / "test_processed.json"
    broken.write_text(json.dumps(content))
    error = run_failing(golden_args(golden_dir, tmp_path, "-visdial_processed_test", str(broken)), capsys)
    assert str(broken) in error and "answer options" in error


def test_outputs_then_inputs_are_checked_before_scoring(golden_dir, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(evaluation_run, "score_dataset", lambda *args, **kwargs: pytest.fail("scored"))
    # the checkpoint does not exist either: the (cheap) output check comes first and creates nothing
    missing = tmp_path / "missing.pt"
    error = run_failing(golden_args(golden_dir, blocker / "out", "-start_path", str(missing)), capsys)
    assert str(blocker / "out") in error and "cannot write" in error
    error = run_failing(golden_args(golden_dir, tmp_path / "out", "-start_path", str(missing)), capsys)
    assert str(missing) in error and "checkpoint not found" in error
    assert not (tmp_path / "out").exists()


def test_bad_flags_are_one_line(golden_dir, tmp_path, capsys):
    error = run_failing(golden_args(golden_dir, tmp_path, "-eval_tokens_per_batch", "-1"), capsys)
    assert "-eval_tokens_per_batch" in error


def test_several_bad_flags_are_one_error_line_each(golden_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: evaluate.main(golden_args(golden_dir, tmp_path, "-eval_tokens_per_batch", "-1",
                                                  "-num_options", "1", "-val_evalai")))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: -") for line in lines)
    assert lines[0].startswith("error: -num_options must be in 2..100")
    assert lines[1].startswith("error: -eval_tokens_per_batch must be >= 0")
    assert "need -split val" in lines[2] and "needs all 100 options" in lines[3]


def test_predictions_check_rejects_a_bad_file(tmp_path):
    good = [{"image_id": 1, "round_id": 3, "ranks": list(range(1, 101))}]
    check_submission(good, "test", {1: [3]}, tmp_path / "p.json")
    bad_ranks = [{"image_id": 1, "round_id": 3, "ranks": [1] * 100}]
    with pytest.raises(UserError, match="permutation"):
        check_submission(bad_ranks, "test", {1: [3]}, tmp_path / "p.json")
    with pytest.raises(UserError, match="round_id"):
        check_submission([{**good[0], "round_id": 11}], "test", {1: [3]}, tmp_path / "p.json")
    with pytest.raises(UserError, match="duplicate"):
        check_submission(good * 2, "test", {1: [3]}, tmp_path / "p.json")


def test_evaluation_checks_report_absent_fixtures(tmp_path):
    results = eval_checks(tmp_path)
    assert results and all(not result.passed and "absent" in result.detail for result in results)


def test_metrics_table_lists_every_round():
    scores = torch.rand(2, 10, 100, generator=torch.Generator().manual_seed(1))
    metrics = visdial_metrics(scores, torch.zeros(2, 10, dtype=torch.long))
    table = format_metrics_table(metrics)
    assert "MRR" in table and "NDCG" not in table
    assert len(table.splitlines()) == 5 + 1 + 10


def test_question_types_take_the_empty_answers_that_evaluation_takes(golden_dir, tmp_path, capsys):
    """An empty answer (and question) in val is scored, so the pointing score of -question_types,
    which ranks each round's ground truth again, takes it too."""
    from dataloader.question_types import write_question_types

    content = json.loads((golden_dir / "visdial_processed" / "val_processed.json").read_text())
    dialog = content["data"]["dialogs"][0]
    content["data"]["answers"][dialog["dialog"][0]["answer"]] = ""
    content["data"]["questions"][dialog["dialog"][0]["question"]] = ""
    (tmp_path / "val.json").write_text(json.dumps(content))
    rounds = [{"image_id": dialog["image_id"], "round_id": number, "question_type": "all", "relevant_regions": [1]}
              for dialog in content["data"]["dialogs"] for number in range(1, len(dialog["dialog"]) + 1)]
    write_question_types(tmp_path / "types.json", {"all": "every round"}, rounds)
    evaluate.main(golden_args(golden_dir, tmp_path, "-split", "val", "-visdial_processed_val", str(tmp_path / "val.json"),
                              "-question_types", str(tmp_path / "types.json")))
    metrics = json.loads((tmp_path / "golden_metrics.json").read_text())
    assert metrics["pointing_rounds_all"] == len(rounds) == 30 and 0 <= metrics["pointing_all"] <= 1
