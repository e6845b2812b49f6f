"""The ranking losses of dense fine-tuning against brute-force versions of the papers' formulas.

ListMLE (Xia et al. 2008) is written here as the explicit Plackett-Luce product over positions,
approxNDCG (Qin, Liu, Li 2010) with an explicit double loop over options, ce's tempered target as
a sum over options; all in Python floats.
"""
import math

import pytest
import torch

from models.losses import (DENSE_LOSSES, RankingLoss, all_zero_relevance, approx_ndcg_loss, dense_relevance_loss,
                           listmle_loss, option_log_odds, ranking_loss, tie_break_keys)
from options import TrainOptions, parse_options
from utils.errors import UserError

LEVELS = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])


def brute_force_listmle(scores: list, relevance: list, tie_keys: list) -> float:
    """-log P(pi | scores): pi sorts by relevance (best first), ties by the lower key first;
    P = prod over positions i of exp(s_pi(i)) / sum over j >= i of exp(s_pi(j))."""
    order = sorted(range(len(scores)), key=lambda option: (-relevance[option], tie_keys[option]))
    likelihood = 1.0
    for position, option in enumerate(order):
        remaining = sum(math.exp(scores[later]) for later in order[position:])
        likelihood *= math.exp(scores[option]) / remaining
    return -math.log(likelihood)


def brute_force_approx_ndcg(scores: list, relevance: list, temperature: float) -> float:
    """1 - DCG(smooth ranks) / ideal DCG, gain = relevance, discount 1 / log2(1 + rank)."""
    dcg = 0.0
    for i in range(len(scores)):
        rank = 1.0
        for j in range(len(scores)):
            if j != i:
                rank += 1.0 / (1.0 + math.exp(-(scores[j] - scores[i]) / temperature))
        dcg += relevance[i] / math.log2(1.0 + rank)
    ideal = sum(value / math.log2(2.0 + position)
                for position, value in enumerate(sorted(relevance, reverse=True)))
    return 1.0 - dcg / ideal


def brute_force_tempered_listnet(scores: list, relevance: list, temperature: float) -> float:
    """KL(t || p): t = softmax(relevance / temperature), p = softmax(scores), summed over options."""
    weights = [math.exp(value / temperature) for value in relevance]
    log_total = math.log(sum(math.exp(score) for score in scores))
    return sum(weight / sum(weights) * (math.log(weight / sum(weights)) - (score - log_total))
               for weight, score in zip(weights, scores))


def random_round(generator: torch.Generator, num_rounds: int = 3, num_options: int = 12):
    """Scores, graded relevance (with ties) and tie keys [num_rounds, num_options], float64."""
    scores = torch.randn(num_rounds, num_options, generator=generator, dtype=torch.float64) * 2
    relevance = LEVELS[torch.randint(0, 5, (num_rounds, num_options), generator=generator)].double()
    tie_keys = torch.rand(num_rounds, num_options, generator=generator, dtype=torch.float64)
    return scores, relevance, tie_keys


def test_listmle_is_the_plackett_luce_likelihood_of_the_relevance_order():
    scores, relevance, tie_keys = random_round(torch.Generator().manual_seed(0))
    actual = listmle_loss(scores, relevance, tie_keys)
    for row in range(scores.shape[0]):
        expected = brute_force_listmle(scores[row].tolist(), relevance[row].tolist(), tie_keys[row].tolist())
        assert actual[row].item() == pytest.approx(expected, abs=1e-10)


def test_listmle_ties_follow_the_keys_and_only_ties_do():
    scores = torch.tensor([[0.3, 2.0, -1.0, 0.5, 1.5]], dtype=torch.float64)
    relevance = torch.tensor([[1.0, 0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    first = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)    # option 1 before 2, 3 before 4
    swapped = torch.tensor([[0.9, 0.2, 0.1, 0.4, 0.3]], dtype=torch.float64)  # 2 before 1, 4 before 3
    untied_changed = torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    for keys in (first, swapped):
        expected = brute_force_listmle(scores[0].tolist(), relevance[0].tolist(), keys[0].tolist())
        assert listmle_loss(scores, relevance, keys).item() == pytest.approx(expected, abs=1e-12)
    assert listmle_loss(scores, relevance, first).item() != pytest.approx(
        listmle_loss(scores, relevance, swapped).item(), abs=1e-3)
    assert listmle_loss(scores, relevance, untied_changed).item() == listmle_loss(scores, relevance, first).item()


def test_approx_ndcg_is_the_smooth_rank_formula():
    scores, relevance, _ = random_round(torch.Generator().manual_seed(1))
    relevance[:, 0] = 1.0  # no all-zero round
    for temperature in (1.0, 0.3):
        actual = approx_ndcg_loss(scores, relevance, temperature)
        for row in range(scores.shape[0]):
            expected = brute_force_approx_ndcg(scores[row].tolist(), relevance[row].tolist(), temperature)
            assert actual[row].item() == pytest.approx(expected, abs=1e-10)


def test_a_single_relevant_option():
    num_options, relevant = 10, 3
    relevance = torch.zeros(1, num_options, dtype=torch.float64)
    relevance[0, relevant] = 1.0
    first = torch.zeros(1, num_options, dtype=torch.float64)
    first[0, relevant] = 40.0
    last = -first
    # approxNDCG: ranked far first -> NDCG 1, loss 0; far last -> rank 10, NDCG 1 / log2(11)
    assert approx_ndcg_loss(first, relevance, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert approx_ndcg_loss(last, relevance, 1.0).item() == pytest.approx(1 - 1 / math.log2(num_options + 1))
    # ListMLE: only the relevant option's place is certain; raising its score lowers the loss
    keys = torch.rand(1, num_options, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    scores = torch.zeros(1, num_options, dtype=torch.float64, requires_grad=True)
    loss = listmle_loss(scores, relevance, keys)
    assert loss.item() == pytest.approx(brute_force_listmle([0.0] * num_options, relevance[0].tolist(),
                                                            keys[0].tolist()))
    assert loss.item() == pytest.approx(sum(math.log(k) for k in range(1, num_options + 1)))  # log(10!)
    loss.backward()
    assert scores.grad[0, relevant] < 0 and scores.grad[0].sum().item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["listmle", "approxndcg"])
def test_all_zero_rounds_are_skipped(name):
    generator = torch.Generator().manual_seed(3)
    nsp_scores = torch.randn(3, 8, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    relevance = LEVELS[torch.randint(1, 5, (3, 8), generator=generator)].double()
    relevance[1] = 0.0
    keys = torch.rand(3, 8, generator=generator)
    ranking = RankingLoss(name, temperature=0.5)
    assert all_zero_relevance(relevance).tolist() == [False, True, False]
    loss = ranking_loss(nsp_scores, relevance, ranking, keys)
    kept = torch.tensor([0, 2])
    assert loss.item() == pytest.approx(ranking_loss(nsp_scores[kept], relevance[kept], ranking, keys[kept]).item(),
                                        abs=1e-12)
    loss.backward()
    assert torch.all(nsp_scores.grad[1] == 0) and torch.any(nsp_scores.grad[0] != 0)
    # nothing left: a zero loss with a zero gradient, never nan
    nsp_scores.grad = None
    nothing = ranking_loss(nsp_scores, torch.zeros_like(relevance), ranking, keys)
    nothing.backward()
    assert nothing.item() == 0.0 and torch.all(nsp_scores.grad == 0)


def test_ce_keeps_the_reference_on_all_zero_rounds():
    """ce is the reference's loss: an all-zero round pulls towards a uniform distribution."""
    nsp_scores = torch.randn(1, 8, 2, generator=torch.Generator().manual_seed(4))
    relevance = torch.zeros(1, 8)
    loss = ranking_loss(nsp_scores, relevance, RankingLoss("ce"))
    assert loss.item() > 0 and loss.item() == dense_relevance_loss(nsp_scores, relevance).item()
    assert not RankingLoss("ce").skips_unannotated_rounds


def test_ce_at_target_temperature_one_is_the_reference_loss_bit_for_bit():
    """The reference: KLDivLoss(reduction='batchmean')(log_softmax(nsp[:, :, 0], dim=1),
    softmax(gt_relevance, dim=1)), loss and gradients."""
    generator = torch.Generator().manual_seed(8)
    nsp_scores = torch.randn(3, 100, 2, generator=generator)
    relevance = LEVELS[torch.randint(0, 5, (3, 100), generator=generator)]
    reference_scores = nsp_scores.clone().requires_grad_()
    expected = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(reference_scores[:, :, 0], dim=1),
                                                         torch.softmax(relevance, dim=1))
    expected.backward()
    for ranking in (RankingLoss(), RankingLoss("ce", target_temperature=1.0)):
        scores = nsp_scores.clone().requires_grad_()
        actual = ranking_loss(scores, relevance, ranking)
        actual.backward()
        assert torch.equal(actual, expected) and torch.equal(scores.grad, reference_scores.grad)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1])
def test_ce_target_is_softmax_of_the_relevance_over_the_temperature(temperature):
    generator = torch.Generator().manual_seed(9)
    nsp_scores = torch.randn(3, 12, 2, generator=generator, dtype=torch.float64) * 2
    relevance = LEVELS[torch.randint(0, 5, (3, 12), generator=generator)].double()
    actual = ranking_loss(nsp_scores, relevance, RankingLoss("ce", target_temperature=temperature))
    expected = sum(brute_force_tempered_listnet(nsp_scores[row, :, 0].tolist(), relevance[row].tolist(), temperature)
                   for row in range(3)) / 3
    assert actual.item() == pytest.approx(expected, rel=1e-5)


def test_flat_scores_almost_satisfy_the_reference_target_and_not_a_sharp_one():
    """Three options of relevance 1 among 100, every score equal: the loss is KL(target || uniform),
    with the target exp(1 / T) / (3 exp(1 / T) + 97) on each relevant option and 1 / (3 exp(1 / T) + 97)
    on each other one."""
    relevance = torch.zeros(1, 100)
    relevance[0, :3] = 1.0
    flat_scores = torch.zeros(1, 100, 2)

    def from_uniform(temperature):
        relevant, other = (weight / (3 * math.exp(1 / temperature) + 97) for weight in (math.exp(1 / temperature), 1))
        return 3 * relevant * math.log(100 * relevant) + 97 * other * math.log(100 * other)

    at_one = ranking_loss(flat_scores, relevance, RankingLoss())
    sharp = ranking_loss(flat_scores, relevance, RankingLoss("ce", target_temperature=0.1))
    assert at_one.item() == pytest.approx(from_uniform(1.0), rel=1e-5) and at_one.item() < 0.03
    assert sharp.item() == pytest.approx(from_uniform(0.1), rel=1e-5) and sharp.item() > 3


@pytest.mark.parametrize("argv", [["-dense_target_temperature", "0.1"], ["--dense_target_temperature", "1e-1"]])
def test_the_target_temperature_is_read_as_every_flag(argv, tmp_path):
    assert parse_options(["-mode", "dense", *argv], TrainOptions).dense_target_temperature == 0.1
    preset = tmp_path / "p.yml"
    preset.write_text("mode: dense\ndense_target_temperature: 1e-1\n")
    parsed = parse_options(["-config", str(preset)], TrainOptions)
    assert parsed.dense_target_temperature == 0.1 and parsed.problems() == []
    assert parse_options([], TrainOptions).dense_target_temperature == 1.0


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf"])
def test_a_target_temperature_not_positive_and_finite_is_refused_naming_the_flag(value):
    problems = parse_options(["-mode", "dense", "-dense_target_temperature", value], TrainOptions).problems()
    assert problems == [f"-dense_target_temperature must be a finite number >= 0.001, got {float(value)}"]


@pytest.mark.parametrize("argv", [["-dense_target_temperature", "0.1"],
                                  ["-mode", "dense", "-dense_loss", "listmle", "-dense_target_temperature", "0.1"]])
def test_a_target_temperature_outside_dense_ce_is_refused(argv):
    assert parse_options(argv, TrainOptions).problems() == [
        "-dense_target_temperature 0.1 needs -mode dense and -dense_loss ce (the target of the ce loss)"]


@pytest.mark.parametrize("name", ["listmle", "approxndcg"])
def test_new_losses_rank_by_the_log_odds_evaluation_uses(name):
    nsp_scores, relevance, keys = random_round(torch.Generator().manual_seed(5), num_rounds=2, num_options=6)
    nsp_scores = torch.stack([nsp_scores, torch.randn(2, 6, generator=torch.Generator().manual_seed(6),
                                                      dtype=torch.float64)], dim=-1)
    relevance[:, 0] = 0.5
    log_odds = nsp_scores[..., 0] - nsp_scores[..., 1]
    assert torch.allclose(torch.sigmoid(option_log_odds(nsp_scores)), torch.softmax(nsp_scores, dim=-1)[..., 0])
    expected = (listmle_loss(log_odds, relevance, keys) if name == "listmle"
                else approx_ndcg_loss(log_odds, relevance, 0.7)).mean()
    actual = ranking_loss(nsp_scores, relevance, RankingLoss(name, temperature=0.7), keys)
    assert actual.item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("name", ["listmle", "approxndcg"])
def test_gradients_by_gradcheck(name):
    nsp_scores, relevance, keys = random_round(torch.Generator().manual_seed(7), num_rounds=2, num_options=6)
    nsp_scores = torch.stack([nsp_scores, nsp_scores.flip(1) * 0.5], dim=-1).requires_grad_()
    relevance[:, 2] = 1.0
    ranking = RankingLoss(name, temperature=0.8)
    assert torch.autograd.gradcheck(lambda scores: ranking_loss(scores, relevance, ranking, keys), (nsp_scores,))


def test_tie_keys_come_from_the_seeded_cpu_generator():
    torch.manual_seed(11)
    first = tie_break_keys(RankingLoss("listmle"), 2, 5)
    torch.manual_seed(11)
    assert torch.equal(tie_break_keys(RankingLoss("listmle"), 2, 5), first) and first.shape == (2, 5)
    state = torch.get_rng_state()
    assert tie_break_keys(RankingLoss("approxndcg"), 2, 5) is None and torch.equal(torch.get_rng_state(), state)


def test_every_dense_loss_name_has_its_own_entry_and_an_unknown_name_is_refused_at_the_door():
    assert list(DENSE_LOSSES) == ["ce", "listmle", "approxndcg"]
    assert [RankingLoss(name).skips_unannotated_rounds for name in DENSE_LOSSES] == [False, True, True]
    with pytest.raises(ValueError, match="unknown ranking loss 'listnet'"):
        RankingLoss("listnet")
    with pytest.raises(UserError, match="-dense_loss: invalid choice: 'listnet'"):
        parse_options(["-mode", "dense", "-dense_loss", "listnet"], TrainOptions)
    assert parse_options(["-mode", "dense", "-dense_loss", "approxndcg"], TrainOptions).dense_loss == "approxndcg"
