"""Shared pieces of the training tests: the fixture-data flags and reading a run's results."""
import json
from pathlib import Path

import torch


def fixture_flags(golden_dir: Path, save_path: Path, save_name: str, *extra: str) -> list[str]:
    """train.py flags for a tiny run on the golden fixture data (3 train dialogs, 1 image a batch)."""
    processed = golden_dir / "visdial_processed"
    return [
        "-visdial_processed_train", str(processed / "train_processed.json"),
        "-visdial_processed_train_dense", str(processed / "train_dense_processed.json"),
        "-visdial_processed_train_dense_annotations", str(processed / "train_dense_annotations_processed.json"),
        "-visdial_processed_val", str(processed / "val_processed.json"),
        "-visdial_processed_val_dense_annotations", str(processed / "val_dense_annotations_processed.json"),
        "-visdial_image_feats", str(golden_dir / "visdial_img_feat.lmdb"),
        "-vocab", str(golden_dir / "bert-base-uncased-vocab.txt"),
        "-model_config", str(golden_dir / "model_config.json"),
        "-max_seq_len", "108", "-batch_size", "2", "-sequences_per_image", "2", "-num_workers", "0",
        "-lr", "1e-3", "-image_lr", "1e-3", "-min_lr", "0", "-warmup_steps", "2",
        "-save_path", str(save_path), "-save_name", save_name, "-log_every", "1",
        *extra,
    ]


def final_weights(run_dir: Path, iteration: int) -> dict:
    path = run_dir / f"visdial_dialog_encoder_{iteration}.ckpt"
    return torch.load(path, weights_only=True)["model_state_dict"]


def assert_bit_identical(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert different == []


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
