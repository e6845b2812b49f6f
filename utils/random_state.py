"""The random generators of a process (Python's, NumPy's, torch's CPU and CUDA), captured and
restored as one: exact resume, the dense step's replay of dropout and reproducible data items."""
import contextlib
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


@dataclass
class RandomState:
    """The states of Python's, NumPy's, torch's CPU and (when captured) every CUDA generator."""
    python: tuple
    numpy: tuple
    torch: torch.Tensor
    cuda: list

    @classmethod
    def capture(cls, cuda: bool = True) -> "RandomState":
        """The present states; cuda=False leaves CUDA alone (as a forked DataLoader worker must)."""
        cuda_states = torch.cuda.get_rng_state_all() if cuda and torch.cuda.is_available() else []
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda_states)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)

    def to_checkpoint(self) -> dict:
        """{'python', 'numpy', 'torch', 'cuda'} of tensors and plain values (loads with weights_only)."""
        name, keys, *rest = self.numpy
        return {"python": self.python, "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest),
                "torch": self.torch, "cuda": self.cuda}

    @classmethod
    def from_checkpoint(cls, states: dict) -> "RandomState":
        """Undo `to_checkpoint` (a checkpoint gives tuples back as lists)."""
        version, internal, gauss = states["python"]
        name, keys, *rest = states["numpy"]
        return cls((version, tuple(internal), gauss), (name, keys.numpy().astype(np.uint32), *rest),
                   states["torch"], states["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU generators seeded by `seed`, then put them back (CUDA's untouched)."""
    state = RandomState.capture(cuda=False)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        state.restore()
