"""utils/benchmarking: steady_state reports a function's steady rate (median of its windows) and
its one-time warm-up apart, on a clock the test controls; rank_agreement counts rank moves, and the
moves beyond near-ties, as near_tie_swaps defines them."""
import pytest
import torch

from utils.benchmarking import measure
from utils.benchmarking.agreement import rank_agreement

CPU = torch.device("cpu")


def test_steady_state_is_the_median_window_rate_and_the_first_call_is_apart(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    # a cold first call of 3 s; then windows of whole calls until 1.2 s have passed:
    # 3 x 0.5 s (30 units in 1.5 s: 20/s), 5 x 0.25 s (50 in 1.25 s: 40/s), 2 x 1.0 s (20 in 2 s: 10/s)
    durations = iter([3.0] + [0.5] * 3 + [0.25] * 5 + [1.0] * 2)

    def work() -> int:
        clock["now"] += next(durations)
        return 10

    steady = measure.steady_state(work, CPU, window_s=1.2, repeats=3)
    assert steady.rates == pytest.approx([20.0, 40.0, 10.0])
    assert steady.rate == pytest.approx(20.0)
    assert steady.warm_up_s == pytest.approx(3.0 - 10 / 20.0)  # the first call beyond its work at 20/s
    assert steady.window_seconds == pytest.approx([1.5, 1.25, 2.0])
    assert steady.first_work == 10 and next(durations, None) is None  # every call was made, no more
    assert steady.describe(1.2).startswith("median of 3 windows of at least 1.2 s (10-40)")


def test_rank_agreement_separates_near_tie_swaps_from_real_moves():
    # options 1 and 2 a near-tie (2^-21 apart, within 1e-6); values exact in float32
    reference = torch.tensor([[0.9, 0.5, 0.5 + 2 ** -21, 0.1]])
    near_tie_swap = torch.tensor([[0.9, 0.5 + 2 ** -20, 0.5, 0.1]])
    agreement = rank_agreement(near_tie_swap, reference)
    assert (agreement.ranks_moved, agreement.beyond_near_ties, agreement.options) == (2, 0, 4)
    assert agreement.max_score_difference == 2 ** -20
    real_move = torch.tensor([[0.1, 0.5, 0.5 + 2 ** -21, 0.9]])  # the best and the worst option swap
    agreement = rank_agreement(real_move, reference)
    assert (agreement.ranks_moved, agreement.beyond_near_ties) == (2, 2)
    assert agreement.share_beyond_near_ties == 0.5
    # below their gap, the tolerance makes the same swap a real move
    assert rank_agreement(near_tie_swap, reference, tolerance=1e-7).beyond_near_ties == 2
