"""The exact chunked dense loss: same loss and parameter gradients as one graph over all options,
for every ranking loss (-dense_loss)."""
import pytest
import torch

from models import build_model
from models.losses import RankingLoss, dense_loss, dense_relevance_loss, tie_break_keys
from utils.training.steps import StepSettings, score_chunk, dense_step, model_inputs

NUM_OPTIONS = 8
LENGTH = 14


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dense_batch(generator: torch.Generator, num_rounds: int = 1) -> dict:
    """K annotated rounds of NUM_OPTIONS sequences each, one image per round."""
    n = num_rounds * NUM_OPTIONS
    lengths = torch.randint(6, LENGTH + 1, (n,), generator=generator)
    attention_mask = torch.arange(LENGTH)[None, :] < lengths[:, None]
    tokens = torch.randint(1000, 2000, (n, LENGTH), generator=generator) * attention_mask
    labels = torch.ones(n, dtype=torch.long)
    labels[::NUM_OPTIONS] = 0
    return {
        "tokens": tokens,
        "segments": (torch.arange(LENGTH)[None, :] // 3 % 2).expand(n, -1) * attention_mask,
        "attention_mask": attention_mask,
        "image_feat": torch.randn(num_rounds, 5, 2048, generator=generator),
        "image_loc": torch.rand(num_rounds, 5, 5, generator=generator),
        "image_mask": torch.ones(num_rounds, 5),
        "image_index": torch.arange(num_rounds).repeat_interleave(NUM_OPTIONS),
        "gt_relevance": torch.randint(0, 5, (num_rounds, NUM_OPTIONS), generator=generator) / 4.0,
        "next_sentence_labels": labels,
    }


def gradients(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def one_graph_gradients(model, batch, chunk, nsp_coefficient, seed, ranking=RankingLoss()):
    """Reference computation: every chunk's scores kept in one autograd graph, one backward (the
    step's random draws in the step's order: ListMLE's tie keys, then dropout)."""
    model.zero_grad()
    torch.manual_seed(seed)
    rounds = batch["gt_relevance"].shape[0]
    tie_keys = tie_break_keys(ranking, rounds, NUM_OPTIONS)
    scores = torch.cat([score_chunk(model, batch, indices, StepSettings(torch.device("cpu")))
                        for indices in torch.arange(batch["tokens"].shape[0]).split(chunk)])
    loss, _ = dense_loss(scores.view(rounds, NUM_OPTIONS, 2), batch["gt_relevance"],
                         batch["next_sentence_labels"], nsp_coefficient, ranking, tie_keys)
    loss.backward()
    return loss.item(), gradients(model)


@pytest.mark.parametrize("model_type, chunk, ranking", [
    ("vilbert", 3, RankingLoss("ce")), ("vilbert", 2 * NUM_OPTIONS, RankingLoss("ce")),
    ("language_only", 5, RankingLoss("ce")), ("vilbert", 3, RankingLoss("listmle")),
    ("vilbert", 5, RankingLoss("approxndcg", temperature=0.5))],
    ids=["ce-chunk3", "ce-one-chunk", "ce-language-only", "listmle", "approxndcg"])
def test_chunked_gradients_equal_one_graph_with_dropout(golden_dir, model_type, chunk, ranking):
    torch.manual_seed(0)
    model = build_model(golden_dir / "model_config.json", model_type).double().train()
    batch = dense_batch(torch.Generator().manual_seed(1), num_rounds=3)
    batch["image_feat"], batch["image_loc"] = batch["image_feat"].double(), batch["image_loc"].double()
    batch["gt_relevance"][1] = 0.0  # a round that listmle and approxndcg skip and count
    expected_loss, expected = one_graph_gradients(model, batch, chunk, 1.0, seed=7, ranking=ranking)

    model.zero_grad()
    torch.manual_seed(7)
    result = dense_step(model, batch, StepSettings(torch.device("cpu"), dense_chunk=chunk, ranking=ranking))
    actual = gradients(model)

    assert result.finite and result.loss == pytest.approx(expected_loss, abs=1e-12)
    assert f"{ranking.name}_loss" in result.parts and result.skipped_rounds == (ranking.name != "ce")
    assert set(actual) == set(expected) and len(actual) > 20
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=0, msg=name)
    # dropout really was on: another random state gives other gradients
    _, other = one_graph_gradients(model, batch, chunk, 1.0, seed=8, ranking=ranking)
    assert any((other[name] - expected[name]).abs().max() > 1e-6 for name in expected)


def test_chunk_size_does_not_change_gradients_without_dropout(golden_dir):
    torch.manual_seed(0)
    model = build_model(golden_dir / "model_config.json").double().eval()
    batch = dense_batch(torch.Generator().manual_seed(2))
    batch["image_feat"], batch["image_loc"] = batch["image_feat"].double(), batch["image_loc"].double()
    results = []
    for chunk in (NUM_OPTIONS, 3, 1):
        model.zero_grad()
        loss = dense_step(model, batch, StepSettings(torch.device("cpu"), dense_chunk=chunk)).loss
        results.append((loss, gradients(model)))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], abs=1e-12)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, results[0][1][name], atol=1e-10, rtol=0)


def test_dense_step_restores_random_state_as_one_pass(golden_dir):
    """After the step the generator is where one pass of no-grad scoring leaves it."""
    torch.manual_seed(0)
    model = build_model(golden_dir / "model_config.json").train()
    batch = dense_batch(torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    with torch.no_grad():
        for indices in torch.arange(NUM_OPTIONS).split(3):
            score_chunk(model, batch, indices, StepSettings(torch.device("cpu")))
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    dense_step(model, batch, StepSettings(torch.device("cpu"), dense_chunk=3))
    assert torch.equal(torch.rand(3), expected_next)


def test_dense_loss_matches_reference_formulas(golden_dir):
    """All-100-options losses of the golden dense_finetune case from its stored scores."""
    case = torch.load(golden_dir / "forward_cases.pt", weights_only=True)["dense_finetune"]
    scores = case["nsp_scores_all"].view(1, 100, 2)
    labels = torch.ones(100, dtype=torch.long)
    labels[int(case["gt_option"])] = 0
    loss0, parts = dense_loss(scores, case["gt_relevance"].view(1, 100), labels, 0.0)
    loss1, _ = dense_loss(scores, case["gt_relevance"].view(1, 100), labels, 1.0)
    torch.testing.assert_close(loss0, case["all100_loss_nsp_coeff_0"].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss1, case["all100_loss_nsp_coeff_1"].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["ce_loss"], dense_relevance_loss(scores, case["gt_relevance"].view(1, 100)))


def test_model_inputs_select_sequences_but_keep_images():
    batch = dense_batch(torch.Generator().manual_seed(4), num_rounds=2)
    inputs = model_inputs(batch, torch.device("cpu"), torch.tensor([0, NUM_OPTIONS + 1]))
    assert inputs["tokens"].shape[0] == 2 and inputs["image_feat"].shape[0] == 2
    assert inputs["image_index"].tolist() == [0, 1]
