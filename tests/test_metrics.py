"""Metrics equal the reference's (golden metrics_cases.pt, eval_scores.pt) and the two fixes hold."""
import json
import warnings

import pytest
import torch

from utils.evaluation.metrics import NDCG, SparseGTMetrics, scores_to_ranks, visdial_metrics
from utils.evaluation.scoring import ScoredDialogs
from utils.evaluation.validation import format_metrics_table, val_metrics

CASES = ["random", "ties", "constant_round", "perfect_ndcg"]


@pytest.fixture(scope="module")
def metrics_cases(golden_dir):
    return torch.load(golden_dir / "metrics_cases.pt", weights_only=True)


def assert_metrics_close(actual: dict, expected: dict, tol: float = 1e-6) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol), key


@pytest.mark.parametrize("case", CASES)
def test_ranks_and_metrics_equal_reference(metrics_cases, case):
    data = metrics_cases[case]
    assert torch.equal(scores_to_ranks(data["scores"]), data["ranks"])
    metrics = visdial_metrics(data["scores"], data["gt_option_inds"], data["round_id"], data["gt_relevance"])
    assert_metrics_close(metrics, data["metrics"])


def test_tie_order_equals_reference(metrics_cases):
    data = metrics_cases["tie_ranks"]
    ranks = scores_to_ranks(data["scores"])
    assert torch.equal(ranks, data["ranks"])
    # position p of the reference's sort holds the option whose rank is p + 1
    assert torch.equal(ranks.view(2, 100).argsort(dim=1), data["sort_indices"])


def test_two_observe_calls_accumulate(metrics_cases):
    sparse, ndcg = SparseGTMetrics(), NDCG()
    for batch in metrics_cases["two_batches"]["batches"]:
        sparse.observe(batch["scores"], batch["gt_option_inds"])
        rows = torch.arange(batch["scores"].shape[0])
        ndcg.observe(batch["scores"][rows, batch["round_id"] - 1], batch["gt_relevance"])
    assert_metrics_close({**sparse.retrieve(), **ndcg.retrieve()}, metrics_cases["two_batches"]["metrics"])
    assert sparse.retrieve() == {} and ndcg.retrieve() == {}  # retrieve resets


def test_end_to_end_val_metrics_and_test_ranks(golden_dir):
    scores = torch.load(golden_dir / "eval_scores.pt", weights_only=True)
    items = torch.load(golden_dir / "dataset_items.pt", weights_only=True)["val"]
    round_id = torch.cat([item["round_id"] for item in items])
    relevance = torch.stack([item["gt_relevance"] for item in items])
    metrics = visdial_metrics(scores["val_nsp_probs"], scores["val_gt_option_inds"], round_id, relevance)
    expected = json.loads((golden_dir / "val_metrics_end2end.json").read_text())["metrics"]
    assert_metrics_close(metrics, expected)

    predictions = json.loads((golden_dir / "test_predictions.json").read_text())
    assert scores_to_ranks(scores["test_nsp_probs"]).tolist() == [entry["ranks"] for entry in predictions]


def test_ranks_match_counting_definition():
    scores = torch.randn(3, 4, 100, generator=torch.Generator().manual_seed(0))  # no ties
    ranks = scores_to_ranks(scores)
    expected = 1 + (scores.unsqueeze(-1) < scores.unsqueeze(-2)).sum(-1)  # 1 + number of better options
    assert torch.equal(ranks, expected)


def test_sparse_metrics_known_ranks():
    scores = torch.tensor([[[0.9, 0.5, 0.1]], [[0.2, 0.7, 0.8]]])  # gt option 0 -> ranks 1 and 3
    metrics = SparseGTMetrics()
    metrics.observe(scores, torch.tensor([[0], [0]]))
    result = metrics.retrieve()
    assert result["r@1"] == pytest.approx(0.5) and result["r@5"] == 1.0
    assert result["mean"] == pytest.approx(2.0)
    assert result["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert result["mean_round_1"] == pytest.approx(2.0)


def test_ndcg_batch_of_one_equals_its_row_in_a_batch(metrics_cases):
    data = metrics_cases["random"]
    rows = torch.arange(data["scores"].shape[0])
    annotated = data["scores"][rows, data["round_id"] - 1]
    singles = []
    for row in rows:
        ndcg = NDCG()
        ndcg.observe(annotated[row : row + 1], data["gt_relevance"][row : row + 1])
        singles.append(ndcg.retrieve()["ndcg"])
    assert sum(singles) / len(singles) == pytest.approx(data["metrics"]["ndcg"], abs=1e-6)


def test_ndcg_skips_all_zero_relevance_with_warning():
    relevance = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    ndcg = NDCG()
    ndcg.observe(scores, relevance)
    with pytest.warns(UserWarning, match="skipped 1 annotation"):
        value = ndcg.retrieve()["ndcg"]
    # first row: k = 2, ranking 3, 2 -> relevances 0, 0; ideal 1, 0.5
    assert value == pytest.approx(0.0)

    ndcg.observe(scores[:1], relevance[:1])  # NDCG 0 as above
    ndcg.observe(torch.tensor([[0.9, 0.8, 0.1, 0.0]]), relevance[:1])  # perfect order
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ndcg.retrieve()["ndcg"] == pytest.approx(0.5)


def test_ndcg_only_all_zero_gives_no_value():
    ndcg = NDCG()
    ndcg.observe(torch.rand(2, 5), torch.zeros(2, 5))
    with pytest.warns(UserWarning):
        assert ndcg.retrieve() == {}


def test_metrics_without_dense_annotations_have_no_ndcg(metrics_cases):
    data = metrics_cases["random"]
    metrics = visdial_metrics(data["scores"], data["gt_option_inds"])
    assert "ndcg" not in metrics and metrics["mrr"] == pytest.approx(data["metrics"]["mrr"], abs=1e-6)


@pytest.mark.parametrize("options", [10, 100])
def test_exact_ties_keep_the_reference_numbers_and_are_reported_beside_them(options):
    """Constant scores, the ground truth at option 0 as val puts it: the reference's numbers stay (its
    sort decides the ties: the ground truth first among 10 options, scrambled among 100); beside
    them, with every tied option ranked first, the ground truth is last (R@k = 0, MRR = 1/options),
    with a warning and a line in the table."""
    scores, gt = torch.full((3, 10, options), 0.5), torch.zeros(3, 10, dtype=torch.long)
    with pytest.warns(UserWarning, match="^exact ties: in 30 rounds the ground truth's score equals another"):
        metrics = val_metrics(ScoredDialogs(scores, {"gt_option_inds": gt}))
    assert metrics == {**visdial_metrics(scores, gt), "tied_rounds": 30, "r@1_pessimistic": 0.0,
                       "r@5_pessimistic": 0.0, "r@10_pessimistic": 0.0 if options > 10 else 1.0,
                       "mrr_pessimistic": pytest.approx(1 / options)}
    assert metrics["mrr"] == 1.0 if options == 10 else metrics["mrr"] > 1 / options
    assert f"exact ties: in 30 rounds" in format_metrics_table(metrics)
    assert f"MRR {1 / options:.4f}" in format_metrics_table(metrics)


def test_without_exact_ties_the_pessimistic_metrics_are_the_reference_ones():
    """Distinct scores: no warning, no tie line, the same numbers; one tie moves only its round."""
    scores = torch.rand(3, 10, 100, generator=torch.Generator().manual_seed(0))
    gt = torch.randint(100, (3, 10), generator=torch.Generator().manual_seed(1))
    gt[0, 0] = scores[0, 0].argmax()                                   # ranked first in its round
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = val_metrics(ScoredDialogs(scores, {"gt_option_inds": gt}))
    assert metrics["tied_rounds"] == 0 and "exact ties" not in format_metrics_table(metrics)
    assert all(metrics[f"{key}_pessimistic"] == metrics[key] for key in ("r@1", "r@5", "r@10", "mrr"))
    one_round = val_metrics(ScoredDialogs(scores[:, :1], {"gt_option_inds": gt[:, 0]}))  # as -visdial_tot_rounds 2
    assert one_round["tied_rounds"] == 0 and one_round["mrr_pessimistic"] == one_round["mrr"]
    scores[0, 0, scores[0, 0].argmin()] = scores[0, 0].max()            # the last option now ties it
    with pytest.warns(UserWarning, match="in 1 rounds"):
        tied = val_metrics(ScoredDialogs(scores, {"gt_option_inds": gt}))
    assert tied["tied_rounds"] == 1
    assert tied["mrr_pessimistic"] == pytest.approx(metrics["mrr"] - (1 - 1 / 2) / 30, abs=1e-6)
    assert tied["r@1_pessimistic"] == pytest.approx(metrics["r@1"] - 1 / 30, abs=1e-6)
