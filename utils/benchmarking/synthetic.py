"""Synthetic VisDial of realistic lengths (a round-r sequence about 15 + 12 r tokens, as VisDial v1.0's),
written as the files the project reads, with images of 10-36 boxes of random features."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataloader.feature_store import write_hdf5_feature_store, write_lmdb_feature_store

WORDS = ("the a man woman dog cat red blue green white black is are there any how many what color "
         "table chair window street car bus tree sky cloudy sunny yes no maybe two three four left right "
         "wearing holding sitting standing near behind giraffe laptop beach kitchen pizza umbrella").split()
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCABULARY_SIZE = 1000  # the project's tokenizer accepts no smaller BERT vocabulary
MAX_BOXES = 36
NUM_ROUNDS, NUM_OPTIONS = 10, 100


@dataclass(frozen=True)
class SyntheticVisdial:
    """Paths of a written synthetic VisDial (train and val hold the same dialogs)."""
    train: Path
    val: Path
    val_dense: Path
    train_dense: Path
    features: Path
    vocab: Path


def _sentence(rng: np.random.Generator, low: int, high: int, question: bool) -> str:
    words = rng.choice(WORDS, size=int(rng.integers(low, high + 1)))
    return " ".join(words) + (" ?" if question else "")


def write_vocabulary(path: Path) -> Path:
    """A WordPiece vocabulary with every word of WORDS, "?" and BERT's special tokens."""
    entries = [*SPECIAL_TOKENS, "?", *WORDS]
    entries += [f"[unused{number}]" for number in range(VOCABULARY_SIZE - len(entries))]
    path.write_text("\n".join(entries) + "\n")
    return path


def _image_records(image_ids: list[int], rng: np.random.Generator):
    for image_id in image_ids:
        num_boxes = int(rng.integers(10, MAX_BOXES + 1))
        yield dict(image_id=image_id, image_h=480, image_w=640, num_boxes=num_boxes,
                   features=rng.random((num_boxes, 2048), dtype=np.float32),
                   boxes=np.sort(rng.random((num_boxes, 4), dtype=np.float32) * 400, axis=1),
                   cls_prob=rng.dirichlet(np.ones(1601), num_boxes).astype(np.float32))


def write_synthetic_visdial(folder: Path, num_dialogs: int, seed: int = 0,
                            feature_format: str = "hdf5") -> SyntheticVisdial:
    """Write `num_dialogs` dialogs, each of an image of its own, into `folder`; features as "hdf5"
    (features.h5) or "lmdb" (features.lmdb/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # VisDial's json holds every question and answer once; the pools grow with the dialogs up to 2,000
    # questions and 3,000 answers (the datasets tokenise each string once, when they are built)
    questions = [_sentence(rng, 3, 8, True) for _ in range(min(2000, 20 * num_dialogs))]
    answers = [_sentence(rng, 1, 8, False) for _ in range(min(3000, max(NUM_OPTIONS, 30 * num_dialogs)))]
    image_ids = list(range(1, num_dialogs + 1))
    dialogs = []
    for index in range(num_dialogs):
        rounds = []
        for _ in range(NUM_ROUNDS):
            options = [int(option) for option in rng.choice(len(answers), NUM_OPTIONS, replace=False)]
            gt_index = int(rng.integers(NUM_OPTIONS))
            rounds.append({"question": int(rng.integers(len(questions))), "answer": options[gt_index],
                           "answer_options": options, "gt_index": gt_index})
        dialogs.append({"image_id": image_ids[index], "caption": _sentence(rng, 5, 12, False), "dialog": rounds})
    paths = SyntheticVisdial(train=folder / "train.json", val=folder / "val.json",
                             val_dense=folder / "val_dense.json", train_dense=folder / "train_dense.json",
                             features=folder / ("features.h5" if feature_format == "hdf5" else "features.lmdb"),
                             vocab=write_vocabulary(folder / "vocab.txt"))
    for split, path in (("train", paths.train), ("val", paths.val)):
        path.write_text(json.dumps({"version": "1.0", "split": split, "data": {
            "questions": questions, "answers": answers, "dialogs": dialogs}}))
    annotations = [{"image_id": dialog["image_id"], "round_id": int(rng.integers(1, NUM_ROUNDS + 1)),
                    "relevance": [float(value) for value in rng.choice([0, 0.5, 1], NUM_OPTIONS)]}
                   for dialog in dialogs]
    paths.train_dense.write_text(json.dumps(annotations))
    paths.val_dense.write_text(json.dumps([{"image_id": annotation["image_id"], "round_id": annotation["round_id"],
                                            "gt_relevance": annotation["relevance"]} for annotation in annotations]))
    records = _image_records(image_ids, rng)
    if feature_format == "hdf5":
        write_hdf5_feature_store(paths.features, records)
    else:
        write_lmdb_feature_store(paths.features, records)
    return paths
