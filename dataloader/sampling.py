"""Reproducible, resumable order of training items, and unreadable records reported, not crashed
on: an item's random draws depend only on (seed, epoch, its position in the epoch's whole order),
neither on the DataLoader workers, nor where the run was resumed, nor the number of processes."""
import pickle
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from utils.errors import UserError
from utils.random_state import seeded

UNREADABLE_RECORD_ERRORS = (UserError, OSError, UnicodeError, pickle.UnpicklingError)
"""What reading a record may raise when the record (not the code) is broken."""


class ResumableSampler(Sampler):
    """Yields (epoch, position in the epoch's whole order, dataset index) for this rank's share
    (items r, r + W, ... of an order cut to a multiple of world_size W), shuffled per (seed, epoch),
    from `start` in the share (resuming). `set_epoch(epoch, start)` before each epoch."""

    def __init__(self, num_items: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def share(self) -> list[int]:
        """This rank's dataset indices for the current epoch, in order."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        usable = len(order) - len(order) % self.world_size
        return order[self.rank:usable:self.world_size]

    def __len__(self) -> int:
        return self.num_items // self.world_size - self.start

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        share = self.share()
        for position in range(self.start, len(share)):
            yield self.epoch, position * self.world_size + self.rank, share[position]


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one item draw, a hash of where it is in the run."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(2, np.uint64)[0] >> 1)


@dataclass
class BadRecord:
    """Stands in for an item that could not be read; `message` names the file and the record."""
    message: str


class SeededItems(Dataset):
    """A dataset indexed by `ResumableSampler` keys, each item made with the CPU generators seeded
    from (seed, epoch, position), then restored. An unreadable record becomes a BadRecord named by
    `describe(index)` (its image id); any other error propagates."""

    def __init__(self, dataset: Dataset, seed: int, describe: Optional[Callable[[int], str]] = None):
        self.dataset = dataset
        self.seed = seed
        self.describe = describe or (lambda index: f"item {index}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, position, index = key
        try:
            with seeded(item_seed(self.seed, epoch, position)):
                return self.dataset[index]
        except UserError as error:
            return BadRecord(f"{error} ({self.describe(index)})")
        except UNREADABLE_RECORD_ERRORS as error:
            return BadRecord(f"{self.describe(index)}: cannot be read "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")


def collate_skipping_bad(collate: Callable[[list], dict]) -> Callable[[list], dict]:
    """A collate function that sets bad records aside: {'batch': the batch of the good items (None
    when none is left), 'bad_records': the messages of the bad ones, 'num_records': all items}."""

    def collate_batch(items: list) -> dict:
        good = [item for item in items if not isinstance(item, BadRecord)]
        bad = [item.message for item in items if isinstance(item, BadRecord)]
        return {"batch": collate(good) if good else None, "bad_records": bad, "num_records": len(items)}

    return collate_batch
