"""Reproducible, resumable order of training items, and unreadable records reported, not crashed on.

Exact resume needs the data to come back in the same order with the same random draws:

* `ResumableSampler` shuffles each epoch with its own generator seeded by (seed, epoch), shards
  the order across torchrun ranks (rank r takes the epoch's items r, r + W, r + 2W, ...), and
  can start in the middle of an epoch.
* `SeededItems` calls the dataset with Python's, NumPy's and torch's generators seeded by
  (seed, epoch, position in the epoch's whole order), so an item's random draws (masking,
  negative sampling) depend neither on the DataLoader workers, nor on where the run was resumed,
  nor on the number of processes; the caller's generators are left untouched
  (utils/random_state.py).
* A record that cannot be read (a UserError of the readers, an OSError, a decoding error) becomes
  a `BadRecord` with a one-line message, which `collate_skipping_bad` moves out of the batch into
  `batch['bad_records']`. The training loop then stops with that message, or counts and skips it
  under `-skip_bad_records`. Any other exception is a bug and propagates with its traceback.
"""
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
    """Yields (epoch, position, dataset index) for one epoch of this rank's share; position is the
    item's place in the epoch's whole order (the same item has the same position whatever the
    number of processes).

    num_items: dataset size; seed: the run's seed; rank / world_size: torchrun shard (the order
    is cut to a multiple of world_size so every rank gets as many items); start: position in
    this rank's share to start from (resuming). `set_epoch(epoch, start)` before each epoch.
    """

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
    """Wraps a dataset indexed by `ResumableSampler` keys (epoch, position, index).

    Each item is produced with every global CPU generator seeded from (seed, epoch, position);
    the generators' previous states are restored afterwards. Unreadable records become
    BadRecord items (UNREADABLE_RECORD_ERRORS); other errors propagate.
    describe(index) -> str names a record in error messages (e.g. its image id).
    """

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
