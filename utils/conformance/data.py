"""Conformance checks of the data pipeline against a fixture folder (laid out like ../shared/golden):
preprocessing, the LMDB and HDF5 readers, and the dataset items; parameters from the fixture's `meta`."""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from dataloader.datasets import VisdialDataset, VisdialDenseDataset
from dataloader.feature_store import convert_lmdb_to_hdf5, open_feature_store
from dataloader.preprocess import preprocess
from dataloader.tokenizer import encode_texts, load_tokenizer
from utils.conformance.common import CheckResult, absent, load_fixture
from utils.inputs import read_json

RAW_FILES = {
    "visdial_train": "visdial_1.0_train.json", "visdial_val": "visdial_1.0_val.json",
    "visdial_test": "visdial_1.0_test.json", "visdial_val_ndcg": "visdial_1.0_val_dense_annotations.json",
    "visdial_train_ndcg": "visdial_1.0_train_dense_annotations.json",
}
PROCESSED_FILES = {
    "save_path_train": "train_processed.json", "save_path_val": "val_processed.json",
    "save_path_test": "test_processed.json", "save_path_train_dense_samples": "train_dense_processed.json",
    "save_path_val_ndcg": "val_dense_annotations_processed.json",
    "save_path_train_ndcg": "train_dense_annotations_processed.json",
}
UNCHANGED_OUTPUTS = ("val_processed.json", "val_dense_annotations_processed.json", "test_processed.json")
VOCAB_FILE = "bert-base-uncased-vocab.txt"
PRUNED_TEST_ROUNDS = 3


def data_checks(fixtures: Path) -> list[CheckResult]:
    return preprocessing_checks(fixtures) + reader_checks(fixtures) + dataset_item_checks(fixtures)


def _tokenizer(fixtures: Path):
    return load_tokenizer(str(fixtures / VOCAB_FILE))


# ---------------------------------------------------------------- preprocessing

def preprocessing_checks(fixtures: Path) -> list[CheckResult]:
    """Run preprocessing on visdial_raw/ and compare each output with visdial_processed/."""
    raw, processed = fixtures / "visdial_raw", fixtures / "visdial_processed"
    needed = [raw / name for name in RAW_FILES.values()] + [processed / name for name in PROCESSED_FILES.values()]
    needed += [fixtures / VOCAB_FILE, fixtures / "dataset_items.pt"]
    missing = [path for path in needed if not path.is_file()]
    if missing:
        return [absent("preprocessing", missing[0])]
    max_seq_len = load_fixture(fixtures / "dataset_items.pt")["meta"]["max_seq_len"]
    with tempfile.TemporaryDirectory() as output:
        files = {flag: str(raw / name) for flag, name in RAW_FILES.items()}
        files.update({flag: str(Path(output) / name) for flag, name in PROCESSED_FILES.items()})
        preprocess(files, max_seq_len, str(fixtures / VOCAB_FILE))
        ours = {name: read_json(Path(output) / name, "fixture") for name in PROCESSED_FILES.values()}
    results = []
    for name in UNCHANGED_OUTPUTS:
        expected = read_json(processed / name, "fixture")
        results.append(CheckResult(f"preprocessing: {name}", ours[name] == expected, None,
                                   "" if ours[name] == expected else "differs from the reference output"))
    expected = expected_fixed_train_outputs(raw, _tokenizer(fixtures), max_seq_len)
    for name, value in expected.items():
        results.append(CheckResult(f"preprocessing: {name} (fixed)", ours[name] == value, None,
                                   "" if ours[name] == value else "differs from the derived fixed output"))
    reference_kept = read_json(processed / "train_dense_annotations_processed.json", "fixture")
    superset = all(annotation in ours["train_dense_annotations_processed.json"] for annotation in reference_kept)
    results.append(CheckResult("preprocessing: train dense keeps every annotation the reference kept", superset))
    return results


def _sequence_length(tokenizer, utterances: list[str]) -> int:
    """Length of `[CLS] u1 [SEP] ... un [SEP]`, built as a real token list."""
    sequence = ["[CLS]"]
    for ids in encode_texts(tokenizer, utterances):
        sequence += ids + ["[SEP]"]
    return len(sequence)


def expected_fixed_train_outputs(raw: Path, tokenizer, max_seq_len: int) -> dict:
    """The train outputs with the two fixes, derived from the raw files: train_processed holds every
    dialog passing the reference's length rule; a dense annotation is kept when its dialog survived
    and `[CLS] caption [SEP] ... q_r [SEP] option [SEP]` fits for every option of round r."""
    train = read_json(raw / RAW_FILES["visdial_train"], "fixture")
    annotations = read_json(raw / RAW_FILES["visdial_train_ndcg"], "fixture")
    questions, answers = train["data"]["questions"], train["data"]["answers"]
    kept = []
    for dialog in train["data"]["dialogs"]:
        texts = [dialog["caption"]] + [text for turn in dialog["dialog"]
                                       for text in (questions[turn["question"]], answers[turn["answer"]])]
        # the reference's rule: caption + every q and a + 22 ([CLS] and 21 [SEP])
        if sum(len(ids) for ids in encode_texts(tokenizer, texts)) + 22 <= max_seq_len:
            kept.append(dialog)
    by_image = {dialog["image_id"]: dialog for dialog in kept}
    kept_annotations, dense_dialogs = [], []
    for annotation in annotations:
        dialog = by_image.get(annotation["image_id"])
        if dialog is None:
            continue
        rounds = dialog["dialog"][:annotation["round_id"]]
        history = [dialog["caption"]] + [text for turn in rounds[:-1]
                                         for text in (questions[turn["question"]], answers[turn["answer"]])]
        history.append(questions[rounds[-1]["question"]])
        if all(_sequence_length(tokenizer, history + [answers[option]]) <= max_seq_len
               for option in rounds[-1]["answer_options"]):
            kept_annotations.append(annotation)
            dense_dialogs.append(dialog)
    with_dialogs = lambda dialogs: {**train, "data": {**train["data"], "dialogs": dialogs}}  # noqa: E731
    return {"train_processed.json": with_dialogs(kept), "train_dense_processed.json": with_dialogs(dense_dialogs),
            "train_dense_annotations_processed.json": kept_annotations}


# ---------------------------------------------------------------- feature readers

def reader_checks(fixtures: Path) -> list[CheckResult]:
    """The LMDB reader, and the HDF5 reader on a converted copy, against image_reader_outputs.pt."""
    reference_path, store_path = fixtures / "image_reader_outputs.pt", fixtures / "visdial_img_feat.lmdb"
    for path in (reference_path, store_path):
        if not path.exists():
            return [absent("feature readers", path)]
    reference = load_fixture(reference_path)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        hdf5_path = Path(folder) / "features.h5"
        convert_lmdb_to_hdf5(str(store_path), str(hdf5_path), show_progress=False)
        for kind, store in (("LMDB", open_feature_store(store_path)), ("HDF5", open_feature_store(hdf5_path))):
            keys_match = [str(image_id) for image_id in store.image_ids()] == reference["_keys"]
            results.append(CheckResult(f"{kind} reader: image ids in stored order", keys_match))
            for image_id, expected in reference.items():
                if image_id != "_keys":
                    results.append(_compare_record(f"{kind} reader: image {image_id}", store[image_id], expected))
    return results


def _compare_record(name: str, record: dict, expected: dict) -> CheckResult:
    if record["num_boxes"] != expected["num_boxes"]:
        return CheckResult(name, False, None, f"num_boxes {record['num_boxes']} != {expected['num_boxes']}")
    worst = 0.0
    for key, value in expected.items():
        if key == "num_boxes":
            continue
        mine = torch.from_numpy(np.asarray(record[key]))
        if mine.dtype != value.dtype or mine.shape != value.shape:
            return CheckResult(name, False, None, f"{key}: {mine.dtype} {tuple(mine.shape)} != "
                                                  f"{value.dtype} {tuple(value.shape)}")
        worst = max(worst, float((mine.double() - value.double()).abs().max()))
    return CheckResult(name, worst == 0.0, worst)


# ---------------------------------------------------------------- dataset items

def _datasets(fixtures: Path, meta: dict) -> dict:
    processed, tokenizer = fixtures / "visdial_processed", _tokenizer(fixtures)
    features = open_feature_store(fixtures / "visdial_img_feat.lmdb")
    common = dict(max_seq_len=meta["max_seq_len"], num_options=meta["num_options"])
    rounds = meta["visdial_tot_rounds"]
    train_rounds = 10
    return {
        "val": VisdialDataset("val", processed / "val_processed.json", features, tokenizer,
                              processed / "val_dense_annotations_processed.json", visdial_tot_rounds=rounds,
                              **common),
        "test": VisdialDataset("test", processed / "test_processed.json", features, tokenizer,
                               visdial_tot_rounds=rounds, **common),
        "test_pruned3": VisdialDataset("test", processed / "test_processed.json", features, tokenizer,
                                       visdial_tot_rounds=meta.get("pruned_rounds", PRUNED_TEST_ROUNDS), **common),
        "dense_train": VisdialDenseDataset(processed / "train_dense_processed.json",
                                           processed / "train_dense_annotations_processed.json", features,
                                           tokenizer, max_seq_len=meta["max_seq_len"], visdial_tot_rounds=rounds),
        # every sequence of an image, so each can be matched with the reference's
        "train": VisdialDataset("train", processed / "train_processed.json", features, tokenizer,
                                visdial_tot_rounds=rounds, mask_prob=meta["mask_prob"],
                                num_negative_samples=meta["num_negative_samples"],
                                sequences_per_image=train_rounds * (1 + meta["num_negative_samples"]), **common),
    }


def dataset_item_checks(fixtures: Path) -> list[CheckResult]:
    """Our items against dataset_items.pt: deterministic fields exactly, train by invariants."""
    path = fixtures / "dataset_items.pt"
    for needed in (path, fixtures / "visdial_processed", fixtures / "visdial_img_feat.lmdb", fixtures / VOCAB_FILE):
        if not needed.exists():
            return [absent("dataset items", needed)]
    stored = load_fixture(path)
    meta, images = stored["meta"], stored["images"]
    datasets = _datasets(fixtures, meta)
    results = []
    for name in ("val", "test", "test_pruned3", "dense_train"):
        for index, expected in enumerate(stored[name]):
            random.seed(meta["item_seed"] + index)
            problems = compare_eval_item(datasets[name][index], expected, images[int(expected["image_id"])])
            results.append(CheckResult(f"dataset items: {name}[{index}]", not problems, None, "; ".join(problems)))
    for index, expected in enumerate(stored["train"]):
        random.seed(meta["item_seed"] + index)
        problems = check_train_item(datasets["train"][index], expected, images[int(expected["image_id"])], meta)
        results.append(CheckResult(f"dataset items: train[{index}] invariants", not problems, None,
                                   "; ".join(problems)))
    return results


def _unflatten(values: torch.Tensor, shape, fill: int = 0) -> torch.Tensor:
    """Our [n, L_item] field -> the reference's padded shape (e.g. [rounds, options, max_seq_len])."""
    out = torch.full((values.shape[0], shape[-1]), fill, dtype=torch.long)
    out[:, :values.shape[1]] = values
    return out.view(*shape)


def _compare_image(item: dict, image: dict) -> list[str]:
    rows, problems = image["num_rows"], []
    if not (torch.equal(item["image_feat"][:rows], image["image_feat"]) and not item["image_feat"][rows:].any()):
        problems.append("image_feat")
    if not (torch.equal(item["image_target"][:rows], image["image_target"]) and not item["image_target"][rows:].any()):
        problems.append("image_target")
    problems += [name for name in ("image_loc", "image_mask") if not torch.equal(item[name], image[name])]
    return problems


def _tensors(item: dict) -> dict:
    return {name: torch.as_tensor(value) for name, value in item.items()}


def compare_eval_item(item: dict, expected: dict, image: dict) -> list[str]:
    """Names of the fields of an eval/dense item (numpy arrays) that differ from the reference's
    (image_label: its invariants, since its draws depend on the reference's exact random calls)."""
    item = _tensors(item)
    shape = expected["tokens"].shape
    problems = []
    if item["tokens"].shape[0] != shape[0] * shape[1]:
        return [f"{item['tokens'].shape[0]} sequences, expected {shape[0] * shape[1]}"]
    for ours, theirs, fill in (("tokens", "tokens", 0), ("segments", "segments", 0), ("lm_labels", "mask", -1),
                               ("sep_indices", "sep_indices", 0)):
        if item[ours].shape[1] > expected[theirs].shape[-1] or not torch.equal(
                _unflatten(item[ours], expected[theirs].shape, fill), expected[theirs].long()):
            problems.append(ours)
    if not torch.equal(item["hist_len"].view(shape[:2]), expected["hist_len"]):
        problems.append("hist_len")
    for name in ("gt_option_inds", "gt_relevance", "round_id", "gt_relevance_round_id", "gt_option", "image_id",
                 "next_sentence_labels"):
        if name in expected and (name not in item or not torch.equal(item[name].reshape(expected[name].shape),
                                                                     expected[name])):
            problems.append(name)
    labels = item["image_label"]
    if labels[0] != 0 or int((labels == 1).sum()) != 1 or int((labels == -1).sum()) != len(labels) - 2:
        problems.append("image_label invariants")
    return problems + _compare_image(item, image)


def _unmasked(tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.where(labels >= 0, labels, tokens)


def check_train_item(item: dict, expected: dict, image: dict, meta: dict) -> list[str]:
    """Invariants of a masked train item against the reference item of the same dialog: each
    positive (masking undone) equals a reference positive, each negative shares a reference
    negative's history and question; [MASK] where labelled; image rows the reference's or zeroed."""
    item, problems = _tensors(item), []
    tokens, labels, nsp = item["tokens"], item["lm_labels"], item["next_sentence_labels"]
    rounds, per_round, width = expected["tokens"].shape
    if tokens.shape[0] != rounds * per_round or tokens.shape[1] > width:
        return [f"tokens {tuple(tokens.shape)} vs reference {tuple(expected['tokens'].shape)}"]
    masked = labels >= 0
    if not torch.all(tokens[masked] == meta["MASK"]):
        problems.append("masked positions do not hold [MASK]")
    sep_rows = item["sep_indices"].gather(1, item["hist_len"].view(-1, 1)).squeeze(1)
    if torch.any(masked[:, 0]) or torch.any(masked.gather(1, item["sep_indices"]) & (item["sep_indices"] > 0)):
        problems.append("[CLS] or [SEP] masked")
    if not torch.all(_unmasked(tokens, labels).gather(1, sep_rows.view(-1, 1)) == meta["SEP"]):
        problems.append("last [SEP] misplaced")
    if sorted(nsp.tolist()) != sorted(expected["next_sentence_labels"].view(-1).tolist()):
        problems.append("next_sentence_labels counts")
    reference_tokens = _unmasked(expected["tokens"].long(), expected["mask"].long()).view(-1, width)
    reference_segments = expected["segments"].long().view(-1, width)
    reference_seps = expected["sep_indices"].long().view(-1, expected["sep_indices"].shape[-1])
    reference_nsp = expected["next_sentence_labels"].view(-1)
    reference_hist = expected["hist_len"].view(-1)
    ours_tokens = _unflatten(_unmasked(tokens, labels), (tokens.shape[0], width))
    for row in range(tokens.shape[0]):
        history = int(item["hist_len"][row])
        question_end = int(item["sep_indices"][row, history - 1]) + 1
        candidates = torch.nonzero((reference_nsp == nsp[row]) & (reference_hist == history)).flatten().tolist()
        matched = any(
            torch.equal(item["sep_indices"][row, :history], reference_seps[candidate, :history])
            and torch.equal(item["segments"][row, :question_end], reference_segments[candidate, :question_end])
            and (torch.equal(ours_tokens[row], reference_tokens[candidate]) if nsp[row] == 0
                 else torch.equal(ours_tokens[row, :question_end], reference_tokens[candidate, :question_end]))
            for candidate in candidates)
        if not matched:
            problems.append(f"sequence {row} (label {int(nsp[row])}) matches no reference sequence")
    image_label = item["image_label"]
    if image_label[0] != 0 or not torch.all((image_label >= -1) & (image_label <= 1)) or not (image_label == 1).any():
        problems.append("image_label invariants")
    rows = image["num_rows"]
    zeroed = torch.zeros(len(image_label), dtype=torch.bool)
    zeroed[:rows] = ~torch.all(item["image_feat"][:rows] == image["image_feat"], 1)
    zeroed_unlabelled = zeroed & (image_label != 1)
    zeroed_unlabelled[0] = False  # the reference may zero row 0 too, then forces its label to 0
    if zeroed_unlabelled.any() or item["image_feat"][zeroed].any():
        problems.append("image rows changed that are not masked-and-zeroed")
    return problems + [name for name in _compare_image(item, image) if name != "image_feat"]
