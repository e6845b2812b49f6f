"""The one random-state mechanism: capture / restore, the checkpoint form, and seeded blocks."""
import random

import numpy as np
import torch

from utils.random_state import RandomState, seeded


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_restore_replays_every_generator(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    state = RandomState.capture()
    first = draws()
    state.restore()
    assert draws() == first
    torch.save({"rng": state.to_checkpoint()}, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]
    RandomState.from_checkpoint(loaded).restore()
    assert draws() == first


def test_seeded_blocks_are_reproducible_and_leave_the_caller_alone():
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    outside = RandomState.capture()
    with seeded(11):
        inside = draws()
    after = draws()
    with seeded(11):
        assert draws() == inside
    with seeded(12):
        assert draws() != inside
    outside.restore()
    assert draws() == after
