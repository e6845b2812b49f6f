"""VisDial datasets and collate: reference items, train sampling, dynamic padding, workers."""
import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset, VisdialDenseDataset
from tests.eval_golden import load_golden_model
from utils.conformance.data import check_train_item, compare_eval_item, data_checks
from utils.errors import UserError
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def golden_items(golden_dir):
    return torch.load(golden_dir / "dataset_items.pt", weights_only=True)


@pytest.fixture(scope="module")
def parts(golden_dir):
    processed = golden_dir / "visdial_processed"
    return dict(processed=processed, features=open_feature_store(golden_dir / "visdial_img_feat.lmdb"),
                tokenizer=load_tokenizer(str(golden_dir / "bert-base-uncased-vocab.txt")))


def make(parts, split, max_seq_len=108, **options):
    processed = parts["processed"]
    annotations = processed / "val_dense_annotations_processed.json" if split == "val" else None
    return VisdialDataset(split, processed / f"{split}_processed.json", parts["features"], parts["tokenizer"],
                          annotations, max_seq_len=max_seq_len, **options)


def test_absent_fixtures_fail_as_absent(tmp_path):
    results = data_checks(tmp_path)
    assert len(results) == 3 and all(not r.passed and r.detail.startswith("absent") for r in results)


def test_item_comparisons_can_fail(parts, golden_items):
    meta, images = golden_items["meta"], golden_items["images"]
    val = make(parts, "val", meta["max_seq_len"])
    item, expected = val[1], golden_items["val"][1]
    item["tokens"][5, 3] += 1
    assert compare_eval_item(item, expected, images[int(expected["image_id"])]) == ["tokens"]

    train = make(parts, "train", meta["max_seq_len"], sequences_per_image=20, mask_prob=0.0)
    item, expected = train[0], golden_items["train"][0]
    positive = int(np.flatnonzero(item["next_sentence_labels"] == 0)[0])
    last_sep = int(item["sep_indices"][positive, item["hist_len"][positive]])
    item["tokens"][positive, last_sep - 1] += 1
    problems = check_train_item(item, expected, images[int(expected["image_id"])], meta)
    assert problems == [f"sequence {positive} (label 0) matches no reference sequence"]


def test_train_item_samples_distinct_sequences_uniformly(parts):
    train = make(parts, "train", sequences_per_image=8, num_negative_samples=1)
    random.seed(0)
    positives_per_round, negatives = Counter(), 0
    for _ in range(300):
        item = train[1]
        assert item["tokens"].shape[0] == 8
        is_positive = item["next_sentence_labels"] == 0
        positive_rounds = item["hist_len"][is_positive].tolist()  # hist_len 2r + 2 identifies round r
        assert len(set(positive_rounds)) == len(positive_rounds)
        positives_per_round.update(positive_rounds)
        negatives += int((~is_positive).sum())
    # each of the 20 (round, positive/negative) sequences is drawn with probability 8/20 per item
    assert set(positives_per_round) == set(range(2, 22, 2))
    assert all(abs(count / 300 - 0.4) < 0.12 for count in positives_per_round.values())
    assert abs(negatives / 300 - 4) < 0.5


def test_masking_rates(parts):
    unmasked = make(parts, "train", mask_prob=0.0)[0]
    assert np.all(unmasked["lm_labels"] == -1)
    fully = make(parts, "train", mask_prob=1.0)[0]
    last_sep = fully["sep_indices"][np.arange(len(fully["hist_len"])), fully["hist_len"]]
    is_text = (np.arange(fully["tokens"].shape[1]) <= last_sep[:, None]) & (fully["tokens"] != 102)
    is_text[:, 0] = False
    assert np.all(fully["tokens"][is_text] == 103) and np.all(fully["lm_labels"][is_text] > 0)
    assert np.all(fully["lm_labels"][~is_text] == -1)


def test_negatives_respect_the_length_limit(parts):
    tight = make(parts, "train", max_seq_len=108, sequences_per_image=20, num_negative_samples=1)
    random.seed(1)
    for index in range(len(tight)):
        item = tight[index]
        lengths = item["sep_indices"][np.arange(len(item["hist_len"])), item["hist_len"]] + 1
        assert int(lengths.max()) <= 108


def test_collate_pads_to_the_batch_and_keeps_images_once(parts):
    val = make(parts, "val")
    items = [val[0], val[2]]
    batch = collate_dialog_batch(items)
    counts = [item["tokens"].shape[0] for item in items]
    width = max(item["tokens"].shape[1] for item in items)
    assert batch["tokens"].shape == (sum(counts), width) and batch["image_feat"].shape == (2, 37, 2048)
    assert torch.equal(batch["image_index"], torch.tensor([0] * counts[0] + [1] * counts[1]))
    assert batch["gt_option_inds"].shape == (2, 10) and batch["gt_relevance"].shape == (2, 100)
    assert batch["num_rounds"] == 10 and batch["num_options"] == 100 and batch["round_id"].shape == (2,)
    lengths = batch["attention_mask"].sum(1)
    assert torch.all(batch["tokens"].gather(1, (lengths - 1).view(-1, 1)) == 102)
    assert torch.all(batch["tokens"][~batch["attention_mask"]] == 0)
    assert torch.all(batch["lm_labels"] == -1)


def test_scores_equal_reference_and_do_not_depend_on_padding(golden_dir, parts):
    """Dialog 0 of val (1000 sequences) scores like the reference; its first two rounds score the
    same when padded to max_seq_len instead of the batch's longest sequence."""
    batch = collate_dialog_batch([make(parts, "val")[0]])
    model = load_golden_model(golden_dir)
    two_rounds = slice(0, 200)
    padded = {name: torch.nn.functional.pad(batch[name][two_rounds], (0, 108 - batch[name].shape[1]))
              for name in ("tokens", "segments", "attention_mask")}
    padded["image_index"] = batch["image_index"][two_rounds]
    scores = {}
    with torch.no_grad():
        for name, text in (("dynamic", batch), ("max_seq_len", padded)):
            out = model(text["tokens"], text["segments"], text["attention_mask"], batch["image_feat"],
                        batch["image_loc"], batch["image_mask"], image_index=text["image_index"],
                        output_lm_scores=False, output_img_scores=False)
            scores[name] = torch.softmax(out.nsp_scores, -1)[:, 0]
    reference = torch.load(golden_dir / "eval_scores.pt", weights_only=True)["val_nsp_probs"][0]
    torch.testing.assert_close(scores["dynamic"][two_rounds], scores["max_seq_len"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(scores["dynamic"].view(10, 100), reference, atol=1e-5, rtol=1e-5)


def test_dataloader_workers_give_the_same_eval_items(parts):
    test = make(parts, "test")
    in_process = collate_dialog_batch([test[index] for index in range(len(test))])
    workers = next(iter(DataLoader(test, batch_size=len(test), num_workers=2, collate_fn=collate_dialog_batch)))
    for name in ("tokens", "segments", "sep_indices", "image_feat", "round_id", "image_id"):
        assert torch.equal(workers[name], in_process[name]), name


def test_train_batches_through_workers(parts):
    train = make(parts, "train", sequences_per_image=4)
    batch = next(iter(DataLoader(train, batch_size=3, shuffle=True, num_workers=2,
                                 collate_fn=collate_dialog_batch)))
    assert batch["tokens"].shape[0] == 12 and batch["next_sentence_labels"].shape == (12,)
    assert batch["image_label"].shape == (3, 37) and batch["image_target"].shape == (3, 37, 1601)


def test_val_without_dense_annotations(parts):
    processed = parts["processed"]
    val = VisdialDataset("val", processed / "val_processed.json", parts["features"], parts["tokenizer"],
                         max_seq_len=108, num_options=10)
    batch = collate_dialog_batch([val[0], val[1]])
    assert "gt_relevance" not in batch and "round_id" not in batch
    assert batch["tokens"].shape[0] == 2 * 10 * 10 and batch["num_options"] == 10
    assert torch.equal(batch["gt_option_inds"], torch.zeros(2, 10, dtype=torch.long))


def test_dense_items(parts, golden_items):
    processed = parts["processed"]
    dense = VisdialDenseDataset(processed / "train_dense_processed.json",
                                processed / "train_dense_annotations_processed.json", parts["features"],
                                parts["tokenizer"], max_seq_len=108)
    batch = collate_dialog_batch([dense[0], dense[1]])
    assert batch["next_sentence_labels"].shape == (200,) and batch["gt_relevance"].shape == (2, 100)
    assert torch.equal(batch["next_sentence_labels"].view(2, 100).argmin(1), batch["gt_option"])


@pytest.mark.parametrize("options, expected", [
    (dict(), 3), (dict(overfit=True), 3), (dict(num_samples=2), 2), (dict(overfit=True, num_samples=1), 1)])
def test_dataset_length_flags(parts, options, expected):
    assert len(make(parts, "train", **options)) == expected


def test_test_split_is_always_whole(parts):
    assert len(make(parts, "test", overfit=True, num_samples=1)) == 4


def test_too_many_samples_is_a_flag_error(parts):
    with pytest.raises(UserError, match="-num_train_samples 9 is more than the 3 dialogs"):
        make(parts, "train", num_samples=9)


def test_max_seq_len_shorter_than_the_data_is_an_error(parts):
    with pytest.raises(UserError, match="more than -max_seq_len 40"):
        make(parts, "val", max_seq_len=40)[0]
