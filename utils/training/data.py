"""The data side of a training run: the train dataset of the mode, the val dataset, and the resumable
loader of an epoch's batches (dataloader/sampling.py)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset, VisdialDenseDataset
from dataloader.feature_store import open_feature_store
from dataloader.sampling import ResumableSampler, SeededItems, collate_skipping_bad
from dataloader.tokenizer import load_tokenizer
from options import TrainOptions
from utils.distributed import DistributedContext
from utils.errors import UserError

OVERFIT_IMAGES_PER_BATCH = 5  # the reference's, when -batch_size is below -sequences_per_image


@dataclass
class TrainingData:
    """The train items of a run, how they are batched, and the val dataset (None: no validation)."""
    dataset: Dataset
    source: Path
    batch_images: int
    shuffle: bool
    seed: int
    num_workers: int
    context: DistributedContext
    validation: Optional[Dataset]

    @property
    def num_items(self) -> int:
        return len(self.dataset)

    @property
    def batches_per_epoch(self) -> int:
        return (self.num_items // self.context.world_size) // self.batch_images

    def describe(self, index: int) -> str:
        return f"image {self.dataset.dialogs[index]['image_id']} of {self.source}"

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
        """Batches `start`.. of epoch `epoch` of this rank: {'batch': collated batch or None,
        'bad_records': [messages of items that could not be read], 'num_records': items}."""
        sampler = ResumableSampler(self.num_items, self.seed, self.shuffle, self.context.rank,
                                   self.context.world_size)
        sampler.set_epoch(epoch, start * self.batch_images)
        loader = DataLoader(
            SeededItems(self.dataset, self.seed, self.describe),
            batch_size=self.batch_images, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, collate_fn=collate_skipping_bad(collate_dialog_batch),
            pin_memory=self.context.device.type == "cuda",
            # its own generator: creating the loader must not draw from the global one
            generator=torch.Generator().manual_seed(self.seed))
        position = start
        try:
            for batch in loader:
                yield batch
                position += 1
        except RuntimeError as error:
            if "DataLoader worker" not in str(error):
                raise
            share = sampler.share()[position * self.batch_images:(position + 1) * self.batch_images]
            raise UserError(f"a DataLoader worker died loading epoch {epoch}, batch {position} (at or "
                            f"after {', '.join(self.describe(index) for index in share)}): "
                            f"{str(error).splitlines()[0]}; rerun with -num_workers 0 to see the "
                            "failing record") from None


def _require_files(options: TrainOptions) -> None:
    flags = ["visdial_image_feats"] + (["visdial_processed_train_dense", "visdial_processed_train_dense_annotations"]
                                       if options.mode == "dense" else ["visdial_processed_train"])
    if options.val_every != -1:
        flags += ["visdial_processed_val", "visdial_processed_val_dense_annotations"]
    for flag in flags:
        path = getattr(options, flag)
        if not Path(path).exists():
            raise UserError(f"{path}: file not found (-{flag})")


def build_training_data(options: TrainOptions, context: DistributedContext) -> TrainingData:
    _require_files(options)
    features = open_feature_store(options.visdial_image_feats)
    tokenizer = load_tokenizer(options.vocab)
    common = {"max_seq_len": options.max_seq_len, "visdial_tot_rounds": options.visdial_tot_rounds,
              "overfit": options.overfit}
    if options.mode == "dense":
        dataset = VisdialDenseDataset(options.visdial_processed_train_dense,
                                      options.visdial_processed_train_dense_annotations, features,
                                      tokenizer, num_samples=options.num_train_samples, **common)
        source, batch_images, shuffle = Path(options.visdial_processed_train_dense), 1, False
    else:
        dataset = VisdialDataset("train", options.visdial_processed_train, features, tokenizer,
                                 num_options=options.num_options, mask_prob=options.mask_prob,
                                 sequences_per_image=options.sequences_per_image,
                                 num_negative_samples=options.num_negative_samples,
                                 num_samples=options.num_train_samples, **common)
        source = Path(options.visdial_processed_train)
        batch_images = (options.batch_size // options.sequences_per_image
                        or (OVERFIT_IMAGES_PER_BATCH if options.overfit else 1))
        shuffle = True
    validation = None
    if options.val_every != -1:
        validation = VisdialDataset("val", options.visdial_processed_val, features, tokenizer,
                                    options.visdial_processed_val_dense_annotations,
                                    num_options=options.num_options, num_samples=options.num_val_samples,
                                    **common)
    return TrainingData(dataset, source, batch_images, shuffle, options.seed, options.num_workers,
                        context, validation)

