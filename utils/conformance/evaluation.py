"""Evaluation checks against a reference fixture folder (laid out like ../shared/golden): the metrics on
metrics_cases.pt and the reference's own scores, and end to end model_raw.pt through our datasets and
evaluation; metrics to 1e-6, ranks exactly up to near-ties of the reference scores (docs/reference.md)."""
from pathlib import Path

import torch

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import load_tokenizer
from utils.conformance.common import CheckResult, absent, fixture_model, load_fixture
from utils.evaluation.evalai import evalai_test_entries
from utils.evaluation.metrics import (NDCG, NEAR_TIE, SparseGTMetrics, near_tie_swaps, scores_to_ranks,
                                      visdial_metrics)
from utils.evaluation.scoring import score_dataset
from utils.evaluation.validation import evaluate_val
from utils.inputs import read_json

METRICS_ATOL = 1e-6
METRICS_CASES = ("random", "ties", "constant_round", "perfect_ndcg")
PROCESSED = "visdial_processed"
VOCAB_FILE = "bert-base-uncased-vocab.txt"
FEATURES = "visdial_img_feat.lmdb"


def eval_checks(fixtures: Path) -> list[CheckResult]:
    return metrics_checks(fixtures) + reference_score_checks(fixtures) + end_to_end_checks(fixtures)


def compare_metrics(name: str, actual: dict, expected: dict) -> CheckResult:
    """Every key of the reference within METRICS_ATOL (ours may add keys: the exact ties)."""
    if missing := sorted(expected.keys() - actual.keys()):
        return CheckResult(name, False, None, f"keys missing: {', '.join(missing[:5])}")
    diff = max((abs(actual[key] - expected[key]) for key in expected), default=0.0)
    return CheckResult(name, diff <= METRICS_ATOL, diff)


def compare_ranks(name: str, actual: torch.Tensor, expected: torch.Tensor, reference_scores=None) -> CheckResult:
    """Ranks equal exactly or, given `reference_scores`, up to swaps of options within NEAR_TIE of each other."""
    if actual.shape != expected.shape:
        return CheckResult(name, False, None, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    if reference_scores is None:
        mismatches = int((actual != expected).sum())
        return CheckResult(name, mismatches == 0, 0.0 if mismatches == 0 else None,
                           "" if mismatches == 0 else f"{mismatches} ranks differ")
    swaps, wrong = near_tie_swaps(actual, expected, reference_scores)
    detail = f"{swaps} option(s) swapped within near-ties (reference scores within {NEAR_TIE:g})"
    if wrong:
        detail = f"{wrong} ranks differ beyond near-ties; " + detail
    return CheckResult(name, wrong == 0, None, detail)


def metrics_checks(fixtures: Path) -> list[CheckResult]:
    path = fixtures / "metrics_cases.pt"
    if not path.is_file():
        return [absent("metrics_cases.pt", path)]
    cases, results = load_fixture(path), []
    for name in METRICS_CASES:
        case = cases[name]
        results.append(compare_ranks(f"metrics {name}: ranks", scores_to_ranks(case["scores"]), case["ranks"]))
        metrics = visdial_metrics(case["scores"], case["gt_option_inds"], case["round_id"], case["gt_relevance"])
        results.append(compare_metrics(f"metrics {name}: values", metrics, case["metrics"]))
    ties = cases["tie_ranks"]
    results.append(compare_ranks("metrics tie_ranks: ranks", scores_to_ranks(ties["scores"]), ties["ranks"]))
    sparse, ndcg = SparseGTMetrics(), NDCG()
    for batch in cases["two_batches"]["batches"]:
        sparse.observe(batch["scores"], batch["gt_option_inds"])
        rows = torch.arange(batch["scores"].shape[0])
        ndcg.observe(batch["scores"][rows, batch["round_id"] - 1], batch["gt_relevance"])
    results.append(compare_metrics("metrics two_batches: values", {**sparse.retrieve(), **ndcg.retrieve()},
                                   cases["two_batches"]["metrics"]))
    return results


def reference_score_checks(fixtures: Path) -> list[CheckResult]:
    """Our metrics and EvalAI ranks of the reference's own scores."""
    needed = [fixtures / name for name in ("eval_scores.pt", "dataset_items.pt", "val_metrics_end2end.json",
                                           "test_predictions.json")]
    missing = [path for path in needed if not path.is_file()]
    if missing:
        return [absent("reference scores: metrics and ranks", missing[0])]
    scores, items = load_fixture(needed[0]), load_fixture(needed[1])["val"]
    round_id = torch.stack([item["round_id"].reshape(()) for item in items])
    relevance = torch.stack([item["gt_relevance"] for item in items])
    metrics = visdial_metrics(scores["val_nsp_probs"], scores["val_gt_option_inds"], round_id, relevance)
    expected = read_json(needed[2], "fixture")["metrics"]
    predictions = read_json(needed[3], "fixture")
    expected_ranks = torch.tensor([entry["ranks"] for entry in predictions])
    return [compare_metrics("reference scores: val metrics", metrics, expected),
            compare_ranks("reference scores: test ranks", scores_to_ranks(scores["test_nsp_probs"]), expected_ranks)]


def end_to_end_checks(fixtures: Path) -> list[CheckResult]:
    processed = fixtures / PROCESSED
    needed = [fixtures / name for name in ("model_config.json", "model_raw.pt", VOCAB_FILE, FEATURES,
                                           "dataset_items.pt", "test_predictions.json", "eval_scores.pt",
                                           "val_metrics_end2end.json")]
    needed += [processed / name for name in ("test_processed.json", "val_processed.json",
                                             "val_dense_annotations_processed.json")]
    missing = [path for path in needed if not path.exists()]
    if missing:
        return [absent("end to end: test predictions and val metrics", missing[0])]
    meta = load_fixture(fixtures / "dataset_items.pt")["meta"]
    tokenizer, features = load_tokenizer(str(fixtures / VOCAB_FILE)), open_feature_store(fixtures / FEATURES)
    shape = dict(max_seq_len=meta["max_seq_len"], visdial_tot_rounds=meta["visdial_tot_rounds"])
    model = fixture_model(fixtures)

    test = VisdialDataset("test", processed / "test_processed.json", features, tokenizer, **shape)
    scored = score_dataset(model, test, collate_dialog_batch, progress=False)
    entries = evalai_test_entries(scored)
    expected_entries = read_json(fixtures / "test_predictions.json", "fixture")
    name = "end to end: test predictions == test_predictions.json"
    keys = [(entry["image_id"], entry["round_id"]) for entry in entries]
    if keys != [(entry["image_id"], entry["round_id"]) for entry in expected_entries]:
        results = [CheckResult(name, False, None, _first_entry_difference(entries, expected_entries))]
    else:
        reference_scores = load_fixture(fixtures / "eval_scores.pt")["test_nsp_probs"]
        results = [compare_ranks(
            name, torch.tensor([entry["ranks"] for entry in entries]),
            torch.tensor([entry["ranks"] for entry in expected_entries]), reference_scores)]

    val = VisdialDataset("val", processed / "val_processed.json", features, tokenizer,
                         processed / "val_dense_annotations_processed.json", num_options=meta["num_options"],
                         **shape)
    metrics = evaluate_val(model, val)
    expected = read_json(fixtures / "val_metrics_end2end.json", "fixture")["metrics"]
    results.append(compare_metrics("end to end: val metrics == val_metrics_end2end.json", metrics, expected))
    return results


def _first_entry_difference(actual: list[dict], expected: list[dict]) -> str:
    if len(actual) != len(expected):
        return f"{len(actual)} entries vs {len(expected)}"
    for index, (mine, theirs) in enumerate(zip(actual, expected)):
        if mine != theirs:
            return f"entry {index} (image {theirs.get('image_id')}) differs"
    return ""
