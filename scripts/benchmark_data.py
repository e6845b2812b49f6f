"""Benchmark the data pipeline: items/s and sequences/s of train and val items, with and without
DataLoader workers, on the fixture data and on a synthetic set written to a temporary folder.

    python scripts/benchmark_data.py --fixtures ../shared/golden --dialogs 2000 --workers 0 2

Prints one table row per (data, split, workers); the synthetic set is read from its LMDB and from
an HDF5 conversion of it. Dataset construction (json validation and
tokenising every string once) is timed separately in the `build s` column.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from dataloader.feature_store import convert_lmdb_to_hdf5, write_lmdb_feature_store
from dataloader.tokenizer import load_tokenizer
from utils.errors import UserError, run_cli

WORDS = ("the a man woman dog cat red blue green white black is are there any how many what color "
         "table chair window street car bus tree sky cloudy sunny yes no maybe two three four left right "
         "wearing holding sitting standing near behind giraffe laptop beach kitchen pizza umbrella").split()


def synthetic_sentence(rng: np.random.Generator, low: int, high: int, question: bool) -> str:
    words = rng.choice(WORDS, size=int(rng.integers(low, high + 1)))
    return " ".join(words) + ("?" if question else "")


def write_synthetic_set(folder: Path, num_dialogs: int, num_images: int, seed: int = 0) -> dict:
    """Processed-format train / val json, val dense annotations and an LMDB of `num_images` images
    (dialog i shows image i % num_images); returns their paths."""
    rng = np.random.default_rng(seed)
    questions = [synthetic_sentence(rng, 3, 8, True) for _ in range(2000)]
    answers = [synthetic_sentence(rng, 1, 8, False) for _ in range(3000)]
    image_ids = list(range(1, num_images + 1))

    def dialogs():
        for index in range(num_dialogs):
            rounds = []
            for _ in range(10):
                options = [int(option) for option in rng.choice(len(answers), 100, replace=False)]
                gt_index = int(rng.integers(100))
                rounds.append({"question": int(rng.integers(len(questions))), "answer": options[gt_index],
                               "answer_options": options, "gt_index": gt_index})
            yield {"image_id": image_ids[index % num_images], "caption": synthetic_sentence(rng, 5, 12, False),
                   "dialog": rounds}

    all_dialogs = list(dialogs())
    paths = {"train": folder / "train.json", "val": folder / "val.json", "val_dense": folder / "val_dense.json",
             "features": folder / "features.lmdb"}
    for split in ("train", "val"):
        paths[split].write_text(json.dumps({"version": "1.0", "split": split, "data": {
            "questions": questions, "answers": answers, "dialogs": all_dialogs}}))
    paths["val_dense"].write_text(json.dumps([
        {"image_id": dialog["image_id"], "round_id": int(rng.integers(1, 11)),
         "gt_relevance": [float(value) for value in rng.choice([0, 0.5, 1], 100)]} for dialog in all_dialogs]))

    def records():
        for image_id in image_ids:
            num_boxes = int(rng.integers(10, 37))
            yield dict(image_id=image_id, image_h=480, image_w=640, num_boxes=num_boxes,
                       features=rng.random((num_boxes, 2048), dtype=np.float32),
                       boxes=np.sort(rng.random((num_boxes, 4), dtype=np.float32) * 400, axis=1),
                       cls_prob=rng.dirichlet(np.ones(1601), num_boxes).astype(np.float32))

    write_lmdb_feature_store(paths["features"], records())
    return paths


def measure(dataset, workers: int, max_items: int, batch_size: int) -> tuple[int, int, float]:
    """(items, sequences, seconds) for iterating a DataLoader over the first max_items items."""
    subset = torch.utils.data.Subset(dataset, range(min(max_items, len(dataset))))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate_dialog_batch,
                        persistent_workers=False)
    start = time.perf_counter()
    items = sequences = 0
    for batch in loader:
        items += len(batch["image_id"])
        sequences += batch["tokens"].shape[0]
    return items, sequences, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", "-fixtures", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "golden")
    parser.add_argument("--vocab", "-vocab", default=None, help="vocab.txt (default: the fixture's)")
    parser.add_argument("--dialogs", "-dialogs", type=int, default=2000, help="synthetic dialogs")
    parser.add_argument("--images", "-images", type=int, default=200, help="synthetic images")
    parser.add_argument("--workers", "-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--train_items", "-train_items", type=int, default=2000)
    parser.add_argument("--val_items", "-val_items", type=int, default=60)
    args = parser.parse_args()
    if not (args.fixtures / "visdial_processed").is_dir():
        raise UserError(f"{args.fixtures}: fixture folder not found (pass --fixtures)")
    tokenizer = load_tokenizer(args.vocab or str(args.fixtures / "bert-base-uncased-vocab.txt"))
    processed = args.fixtures / "visdial_processed"
    fixture_paths = {"train": processed / "train_processed.json", "val": processed / "val_processed.json",
                     "val_dense": processed / "val_dense_annotations_processed.json",
                     "features": args.fixtures / "visdial_img_feat.lmdb"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        synthetic_paths = write_synthetic_set(Path(folder), args.dialogs, args.images)
        print(f"synthetic set: {args.dialogs} dialogs, {args.images} images, written in "
              f"{time.perf_counter() - start:.1f} s")
        hdf5_paths = {**synthetic_paths, "features": Path(folder) / "features.h5"}
        convert_lmdb_to_hdf5(str(synthetic_paths["features"]), str(hdf5_paths["features"]), show_progress=False)
        data_sets = (("fixture LMDB", fixture_paths, 108), (f"synth{args.dialogs} LMDB", synthetic_paths, 256),
                     (f"synth{args.dialogs} HDF5", hdf5_paths, 256))
        for data_name, paths, max_seq_len in data_sets:
            for split, max_items, batch_size in (("train", args.train_items, 10), ("val", args.val_items, 2)):
                start = time.perf_counter()
                dataset = VisdialDataset(split, paths[split], paths["features"], tokenizer,
                                         paths["val_dense"] if split == "val" else None, max_seq_len=max_seq_len,
                                         sequences_per_image=8)
                build_seconds = time.perf_counter() - start
                for workers in args.workers:
                    items, sequences, seconds = measure(dataset, workers, max_items, batch_size)
                    rows.append((data_name, split, workers, items, build_seconds, seconds, items / seconds,
                                 sequences / seconds))
    header = ("data", "split", "workers", "items", "build s", "iterate s", "items/s", "sequences/s")
    print(f"{header[0]:<18} {header[1]:<6} {header[2]:>7} {header[3]:>6} {header[4]:>8} {header[5]:>9} "
          f"{header[6]:>9} {header[7]:>12}")
    for data_name, split, workers, items, build, seconds, item_rate, sequence_rate in rows:
        print(f"{data_name:<18} {split:<6} {workers:>7} {items:>6} {build:>8.2f} {seconds:>9.2f} "
              f"{item_rate:>9.1f} {sequence_rate:>12.0f}")


if __name__ == "__main__":
    run_cli(main)
