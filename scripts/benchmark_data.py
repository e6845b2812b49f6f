"""Benchmark the data pipeline: items/s and sequences/s of train and val items, with and without
DataLoader workers, on the fixture data and on a synthetic set written to a temporary folder.

    python scripts/benchmark_data.py --fixtures ../shared/golden --dialogs 300 --workers 0 1 2

Prints one table row per (data, split, workers); the synthetic set (utils/benchmarking/synthetic.py:
VisDial's lengths, 100 options a round) is read from its LMDB and from an HDF5 conversion of it.
A val item is one dialog (10 rounds x 100 options = 1,000 sequences); a train item one image with
--sequences_per_image sequences. This is what the input side can feed the model: every item is
built in the DataLoader (workers, when there are any) from strings tokenised once when the
dataset is built. Dataset construction (json validation and
tokenising every string once) is timed separately in the `build s` column.

The rates are a steady state (utils/benchmarking/measure.py): the workers are started once
(persistent), a first pass over the items is timed apart (`warm-up s`: worker start-up and the
first reads beyond the steady rate), then the median of --repeats passes.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from dataloader.feature_store import convert_lmdb_to_hdf5
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import SPLITS
from utils.benchmarking.measure import SteadyState, cpu_seconds, steady_state
from utils.benchmarking.synthetic import write_synthetic_visdial
from utils.errors import ArgumentParser, UserError, run_cli

CPU = torch.device("cpu")


def measure(dataset, workers: int, max_items: int, batch_size: int,
            repeats: int) -> tuple[int, int, SteadyState, float]:
    """(items and sequences of a pass, the steady state in items a second, sequences per CPU second
    of this process and its workers over every pass) for iterating a DataLoader over the first
    max_items items."""
    subset = torch.utils.data.Subset(dataset, range(min(max_items, len(dataset))))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate_dialog_batch,
                        persistent_workers=workers > 0)
    counted = {}

    def one_pass() -> int:
        items = sequences = 0
        for batch in loader:
            items += len(batch["image_id"])
            sequences += batch["tokens"].shape[0]
        counted.update(items=items, sequences=sequences)
        return items

    start_cpu = cpu_seconds()
    steady = steady_state(one_pass, CPU, 0.0, repeats)
    del loader  # its workers are joined: their CPU time counts
    per_cpu_second = counted["sequences"] * (repeats + 1) / (cpu_seconds() - start_cpu)
    return counted["items"], counted["sequences"], steady, per_cpu_second


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", "-fixtures", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "golden")
    parser.add_argument("--vocab", "-vocab", default=None, help="vocab.txt (default: the fixture's)")
    parser.add_argument("--dialogs", "-dialogs", type=int, default=300,
                        help="synthetic dialogs (one image each, as in VisDial)")
    parser.add_argument("--workers", "-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--train_items", "-train_items", type=int, default=2000)
    parser.add_argument("--val_items", "-val_items", type=int, default=60)
    parser.add_argument("--sequences_per_image", "-sequences_per_image", type=int, default=2,
                        help="train sequences per image (the paper's preset: 2)")
    parser.add_argument("--repeats", "-repeats", type=int, default=3, help="timed passes (the rate: their median)")
    args = parser.parse_args()
    if not (args.fixtures / "visdial_processed").is_dir():
        raise UserError(f"{args.fixtures}: fixture folder not found (pass --fixtures)")
    processed = args.fixtures / "visdial_processed"
    fixture_paths = {"train": processed / "train_processed.json", "val": processed / "val_processed.json",
                     "val_dense": processed / "val_dense_annotations_processed.json",
                     "features": args.fixtures / "visdial_img_feat.lmdb",
                     "vocab": Path(args.vocab or args.fixtures / "bert-base-uncased-vocab.txt")}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        written = write_synthetic_visdial(Path(folder), args.dialogs, feature_format="lmdb")
        synthetic_paths = {"train": written.train, "val": written.val, "val_dense": written.val_dense,
                           "features": written.features, "vocab": written.vocab}
        print(f"synthetic set: {args.dialogs} dialogs and images, written in "
              f"{time.perf_counter() - start:.1f} s")
        hdf5_paths = {**synthetic_paths, "features": Path(folder) / "features.h5"}
        convert_lmdb_to_hdf5(str(synthetic_paths["features"]), str(hdf5_paths["features"]), show_progress=False)
        data_sets = (("fixture LMDB", fixture_paths, 108), (f"synth{args.dialogs} LMDB", synthetic_paths, 256),
                     (f"synth{args.dialogs} HDF5", hdf5_paths, 256))
        for data_name, paths, max_seq_len in data_sets:
            tokenizer = load_tokenizer(str(paths["vocab"]))
            for split, max_items, batch_size in (("train", args.train_items, 10), ("val", args.val_items, 2)):
                start = time.perf_counter()
                dense = paths["val_dense"] if SPLITS[split].dense_annotations_flag else None
                dataset = VisdialDataset(split, paths[split], paths["features"], tokenizer, dense,
                                         max_seq_len=max_seq_len, sequences_per_image=args.sequences_per_image)
                build_seconds = time.perf_counter() - start
                for workers in args.workers:
                    items, sequences, steady, per_cpu_second = measure(dataset, workers, max_items, batch_size,
                                                                       args.repeats)
                    rows.append((data_name, split, workers, items, build_seconds, steady.warm_up_s, steady.rate,
                                 steady.rate * sequences / items, per_cpu_second))
    print(f"median of {args.repeats} passes after a first one; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (wall-clock rates fall when others run; sequences per CPU second, the workers' "
          "included, much less)")
    header = ("data", "split", "workers", "items", "build s", "warm-up s", "items/s", "sequences/s", "seq/CPU s")
    print(f"{header[0]:<18} {header[1]:<6} {header[2]:>7} {header[3]:>6} {header[4]:>8} {header[5]:>9} "
          f"{header[6]:>9} {header[7]:>12} {header[8]:>10}")
    for data_name, split, workers, items, build, warm_up, item_rate, sequence_rate, per_cpu_second in rows:
        print(f"{data_name:<18} {split:<6} {workers:>7} {items:>6} {build:>8.2f} {warm_up:>9.2f} "
              f"{item_rate:>9.1f} {sequence_rate:>12.0f} {per_cpu_second:>10.0f}")


if __name__ == "__main__":
    run_cli(main)
