"""Training learns, and what it learns comes through the image stream.

The data: the toy VisDial (preprocessing/make_toy_data.py) with one-hop questions only, one round
per dialog ("what color is the background ?", "what pattern is the background ?"), so every dialog
shows the model the same text and only its image tells the answer. Three checks, in process on one
torch thread, through train.py and evaluate.py as a user runs them:

* the tiny model trained on the real features ranks the right answer far better on held-out
  dialogs than the same run on the same dialogs whose features are pure noise;
* trained on a handful of dialogs and scored on the same dialogs, it reaches val MRR above 0.9;
* dense fine-tuning of a base model raises its val NDCG (the paper's finding).

The first two fail when the image stream is cut off (the text cannot tell the dialogs apart) and when the
optimiser step is skipped (nothing is learned): docs/learning.md.
"""
import json
from pathlib import Path

import pytest

import evaluate
import train
from preprocessing import pre_process_visdial
from preprocessing.make_toy_data import make_toy_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The toy preset with a higher learning rate, a short warm-up, the masked-region loss at 0.1 and
# mostly hard negatives (the 5 other values of the asked property and one more): one-hop grounding
# in a few hundred small steps.
TRAINING = ["-config", "config/presets/toy.yml", "-lr", "6e-3", "-image_lr", "6e-3", "-warmup_steps", "20",
            "-img_loss_coeff", "0.1",
            "-num_options", "7", "-sequences_per_image", "2", "-visdial_tot_rounds", "2", "-log_every", "100"]


def one_hop_toy(folder: Path, train_dialogs: int, val_dialogs: int, **features) -> dict:
    """The one-hop toy, preprocessed: paths by name."""
    raw = make_toy_data(folder / "raw", seed=0, train_dialogs=train_dialogs, val_dialogs=val_dialogs,
                        test_dialogs=1, question_types=["one_hop"], rounds=1, **features)
    paths = {name: raw[name] for name in ("features", "vocab", "model_config", "val_question_types",
                                          "train_question_types")}
    flags = ["-vocab", str(raw["vocab"]), "-quiet"]
    for split in ("train", "val", "test"):
        paths[split] = folder / f"{split}_processed.json"
        flags += [f"-visdial_{split}", str(raw[split]), f"-save_path_{split}", str(paths[split])]
    paths["val_dense"] = folder / "val_dense_processed.json"
    paths["train_dense"] = folder / "train_dense_processed.json"
    paths["train_dense_annotations"] = folder / "train_dense_annotations_processed.json"
    flags += ["-visdial_val_ndcg", str(raw["val_dense"]), "-save_path_val_ndcg", str(paths["val_dense"]),
              "-visdial_train_ndcg", str(raw["train_dense"]),
              "-save_path_train_ndcg", str(paths["train_dense_annotations"]),
              "-save_path_train_dense_samples", str(paths["train_dense"])]
    pre_process_visdial.main(flags)
    return paths


def train_and_score(data: dict, folder: Path, iterations: int, recipe: list, val: str = "val") -> dict:
    """Train the tiny ViLBERT on `data` with `recipe` (train.py flags), score the `val` split (the
    train split for an overfit check); returns evaluate.py's metrics (with the per-type ones)."""
    data_flags = ["-vocab", str(data["vocab"]), "-visdial_image_feats", str(data["features"]),
                  "-visdial_processed_val", str(data[val]), "-model_config", str(data["model_config"])]
    train.main([*data_flags, *recipe, "-visdial_processed_train", str(data["train"]),
                "-visdial_processed_train_dense", str(data["train_dense"]),
                "-visdial_processed_train_dense_annotations", str(data["train_dense_annotations"]),
                "-max_iterations", str(iterations), "-total_steps", str(iterations),
                "-save_path", str(folder), "-save_name", "run"])
    annotations = ["-visdial_processed_val_dense_annotations", str(data["val_dense"])] if val == "val" else []
    evaluate.main([*data_flags, *annotations, "-split", "val", "-visdial_tot_rounds", "2", "-num_workers", "0",
                   "-start_path", str(folder / "run" / f"visdial_dialog_encoder_{iterations}.ckpt"),
                   "-question_types", str(data[f"{val}_question_types"]),
                   "-save_path", str(folder), "-save_name", "scored"])
    return json.loads((folder / "scored_metrics.json").read_text())


def test_the_image_features_carry_what_the_model_learns(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    seen = one_hop_toy(tmp_path / "seen", train_dialogs=400, val_dialogs=40)
    blind = one_hop_toy(tmp_path / "blind", train_dialogs=400, val_dialogs=40, image_signal=0.0, noise=1.0)
    assert blind["val"].read_bytes() == seen["val"].read_bytes()         # the same dialogs, other images
    with_image = train_and_score(seen, tmp_path / "seen", 300, [*TRAINING, "-batch_size", "16"])
    with_noise = train_and_score(blind, tmp_path / "blind", 300, [*TRAINING, "-batch_size", "16"])
    chance = with_image["random_mrr_type_one_hop"]
    print(f"one-hop MRR: real features {with_image['mrr_type_one_hop']:.3f}, noise "
          f"{with_noise['mrr_type_one_hop']:.3f}, random ranking {chance:.3f}")
    # measured: 0.54 against 0.25 (the noise run learns which values answer which question, no more)
    assert with_image["mrr_type_one_hop"] > 0.4
    assert with_image["mrr_type_one_hop"] > with_noise["mrr_type_one_hop"] + 0.15


def test_a_handful_of_dialogs_is_learned_by_heart(tmp_path, repo_root, monkeypatch, recwarn):
    monkeypatch.chdir(repo_root)
    data = one_hop_toy(tmp_path, train_dialogs=8, val_dialogs=1)
    metrics = train_and_score(data, tmp_path, 200, [*TRAINING, "-batch_size", "16"], val="train")
    print(f"overfit val MRR {metrics['mrr']:.3f} (random ranking {metrics['random_mrr']:.3f})")
    assert metrics["mrr"] > 0.9


def test_dense_fine_tuning_raises_ndcg(tmp_path, repo_root, monkeypatch):
    """The paper's finding on a tiny toy: config/presets/toy_dense.yml, shortened, fine-tunes the base
    model on every train dialog's dense annotations, and val NDCG rises over the base's on the same val."""
    monkeypatch.chdir(repo_root)
    data = one_hop_toy(tmp_path, train_dialogs=400, val_dialogs=100, dense_train_fraction=1.0)
    base = train_and_score(data, tmp_path / "base", 400, [*TRAINING, "-batch_size", "16"])
    dense = train_and_score(data, tmp_path / "dense", 400, [
        "-config", "config/presets/toy_dense.yml", "-visdial_tot_rounds", "2", "-warmup_steps", "5",
        "-start_path", str(tmp_path / "base" / "run" / "visdial_dialog_encoder_400.ckpt")])
    print(f"val NDCG: base {base['ndcg']:.3f}, +dense {dense['ndcg']:.3f}; MRR {base['mrr']:.3f} -> "
          f"{dense['mrr']:.3f}")
    # measured: 0.196 -> 0.509 (-seed 1: 0.169 -> 0.316; -seed 2: 0.363 -> 0.577)
    assert dense["ndcg"] > base["ndcg"] + 0.1
