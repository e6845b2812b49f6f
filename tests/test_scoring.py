"""The length-bucketed scoring engine equals the reference's padded path and the golden outputs."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Subset

from tests.eval_golden import GoldenDialogs, collate_golden, load_golden_model
from utils.benchmarking.reference import score_padded_reference_style
from utils.evaluation.metrics import near_tie_swaps, scores_to_ranks, visdial_metrics
from utils.evaluation.scoring import autocast, length_batches, score_dataset, score_sequences


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def model(golden_dir):
    return load_golden_model(golden_dir)


def test_length_batches_cover_every_sequence_within_budget():
    lengths = torch.tensor([5, 40, 12, 40, 7, 100, 3, 33])
    batches = length_batches(lengths, tokens_per_batch=80)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 80
    firsts = [int(lengths[batch[0]]) for batch in batches]
    assert firsts == sorted(firsts, reverse=True)
    assert [len(b) for b in batches][0] == 1  # 100 tokens exceed the budget: a batch of its own


def test_forward_cases_scores_equal_reference(golden_dir, model):
    cases = torch.load(golden_dir / "forward_cases.pt", weights_only=True)
    images = cases["images"]
    image_feat = torch.zeros(len(images["image_feat"]), 37, 2048)
    for row, feat in enumerate(images["image_feat"]):
        image_feat[row, : feat.shape[0]] = feat
    for name in ("eval_caption", "eval_pruned", "eval_mixed"):
        inputs = cases["cases"][name]["inputs"]
        batch = {"tokens": inputs["tokens"], "segments": inputs["segments"],
                 "attention_mask": inputs["attention_mask"], "image_index": inputs["image_index"],
                 "image_feat": image_feat, "image_loc": images["image_loc"], "image_mask": images["image_mask"]}
        expected = cases["cases"][name]["outputs"]["nsp_scores"].softmax(-1)[:, 0]
        scores = score_sequences(model, batch, tokens_per_batch=150, precision="fp32")
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_fp32_equals_padded_reference_path_with_identical_ranks(golden_dir, model):
    dataset = Subset(GoldenDialogs(golden_dir, "val"), [1])  # the dialog with a near-tie
    batch = collate_golden([dataset[0]])
    padded = score_padded_reference_style(model, batch, max_seq_len=108, sequences_per_call=100,
                                          all_heads=False).view(1, 10, 100)
    ours = score_dataset(model, dataset, collate_golden, tokens_per_batch=2000, progress=False).scores
    torch.testing.assert_close(ours, padded, atol=1e-5, rtol=1e-5)
    # Ranks are identical except between options whose padded scores are equal to float32
    # resolution (0.33454937 twice here, and more pairs within 1e-6 on some CPUs): batch shape
    # and the CPU's kernels decide their order.
    gaps = (padded.unsqueeze(-1) - padded.unsqueeze(-2)).abs()
    gaps.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    near_tie = gaps.min(dim=-1).values < 1e-6
    moved = scores_to_ranks(ours) != scores_to_ranks(padded)
    assert not (moved & ~near_tie).any()


def test_near_tie_swaps_accepts_swaps_within_a_tie_and_counts_the_rest():
    reference = torch.tensor([[0.9, 0.5, 0.5 + 5e-7, 0.1, 0.3]])
    expected = scores_to_ranks(reference)                          # [[1, 3, 2, 5, 4]]
    assert near_tie_swaps(expected, expected, reference) == (0, 0)
    swapped_tie = torch.tensor([[1, 2, 3, 5, 4]])
    assert near_tie_swaps(swapped_tie, expected, reference) == (2, 0)
    swapped_apart = torch.tensor([[1, 3, 2, 4, 5]])                # 0.1 and 0.3 are no tie
    assert near_tie_swaps(swapped_apart, expected, reference) == (0, 2)
    chain = torch.tensor([[0.5, 0.5 + 6e-7, 0.5 + 1.2e-6]])       # gaps below 1e-6: one group
    assert near_tie_swaps(torch.tensor([[1, 2, 3]]), scores_to_ranks(chain), chain) == (2, 0)


def test_golden_test_predictions_and_val_metrics(golden_dir, model):
    test = score_dataset(model, GoldenDialogs(golden_dir, "test"), collate_golden, progress=False)
    predictions = json.loads((golden_dir / "test_predictions.json").read_text())
    assert test.fields["image_id"].tolist() == [entry["image_id"] for entry in predictions]
    reference_scores = torch.load(golden_dir / "eval_scores.pt", weights_only=True)["test_nsp_probs"]
    swaps, beyond_near_ties = near_tie_swaps(scores_to_ranks(test.scores[:, -1]),
                                             torch.tensor([entry["ranks"] for entry in predictions]),
                                             reference_scores)
    assert beyond_near_ties == 0 and swaps <= 2  # one pair of options 3e-8 apart may swap

    val = score_dataset(model, GoldenDialogs(golden_dir, "val"), collate_golden, dialogs_per_chunk=2,
                        progress=False)
    metrics = visdial_metrics(val.scores, val.fields["gt_option_inds"], val.fields["round_id"],
                              val.fields["gt_relevance"])
    expected = json.loads((golden_dir / "val_metrics_end2end.json").read_text())["metrics"]
    assert metrics == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored(golden_dir, model, training):
    model.train(training)
    score_dataset(model, Subset(GoldenDialogs(golden_dir, "test"), [3]), collate_golden, progress=False)
    assert model.training is training
    model.eval()


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="precision"):
        autocast(torch.device("cpu"), "fp8")


def _score_in_process_group(rank: int, world_size: int, init_file: str, golden_dir, out_dir) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        result = score_dataset(load_golden_model(golden_dir), GoldenDialogs(golden_dir, "test"),
                               collate_golden, dialogs_per_chunk=1, progress=False)
        torch.save({"scores": result.scores, **result.fields}, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(golden_dir, model, tmp_path):
    mp.spawn(_score_in_process_group, args=(2, str(tmp_path / "init"), golden_dir, tmp_path), nprocs=2)
    single = score_dataset(model, GoldenDialogs(golden_dir, "test"), collate_golden, dialogs_per_chunk=1,
                           progress=False)
    for rank in range(2):
        gathered = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(gathered["scores"], single.scores, atol=1e-6, rtol=1e-6)
        assert torch.equal(gathered["image_id"], single.fields["image_id"])
        assert torch.equal(scores_to_ranks(gathered["scores"]), scores_to_ranks(single.scores))
