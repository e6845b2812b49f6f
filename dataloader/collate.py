"""Batching of dataset items: pad every sequence to the batch's longest, keep images once each."""
from __future__ import annotations

import numpy as np
import torch

SEQUENCE_FIELDS = {"tokens": 0, "segments": 0, "lm_labels": -1, "sep_indices": 0}
PER_SEQUENCE_FIELDS = ("hist_len", "next_sentence_labels")
PER_IMAGE_FIELDS = ("image_feat", "image_loc", "image_mask", "image_target", "image_label", "image_id",
                    "gt_option_inds", "gt_relevance", "round_id", "gt_relevance_round_id", "gt_option")


def collate_dialog_batch(items: list[dict]) -> dict:
    """Merge K dataset items (numpy arrays) holding n_1..n_K sequences into one batch of tensors
    (N = sum n_k); the one place where an item's arrays become tensors.

    Returns tokens / segments [N, L] (0-padded; L = longest sequence of the batch), lm_labels
    [N, L] (-1 padded), sep_indices [N, S] (0-padded), hist_len [N], attention_mask [N, L] bool
    (True on `[CLS] ... last [SEP]`), next_sentence_labels [N] when the items have them,
    image_index [N] (row of each sequence's image), the per-image fields stacked to [K, ...]
    (image_feat [K, 37, 2048], image_loc, image_mask, image_target, image_label, image_id [K] and
    split fields such as gt_option_inds [K, rounds], gt_relevance [K, options], round_id [K]),
    and num_rounds / num_options (ints, equal for every item) to view eval scores as [K, rounds, options].
    """
    counts = [item["tokens"].shape[0] for item in items]
    arrays = {name: np.full((sum(counts), max(item[name].shape[1] for item in items)), fill, dtype=np.int64)
              for name, fill in SEQUENCE_FIELDS.items()}
    start = 0
    for item, count in zip(items, counts):
        for name, array in arrays.items():
            array[start:start + count, :item[name].shape[1]] = item[name]
        start += count
    arrays.update({name: np.concatenate([item[name] for item in items])
                   for name in PER_SEQUENCE_FIELDS if name in items[0]})
    lengths = arrays["sep_indices"][np.arange(start), arrays["hist_len"]] + 1
    arrays["attention_mask"] = np.arange(arrays["tokens"].shape[1])[None, :] < lengths[:, None]
    arrays["image_index"] = np.repeat(np.arange(len(items)), counts)
    arrays.update({name: np.stack([item[name] for item in items]) for name in PER_IMAGE_FIELDS if name in items[0]})
    batch = {name: torch.from_numpy(array) for name, array in arrays.items()}
    for name in ("num_rounds", "num_options"):
        if name in items[0]:
            values = {item[name] for item in items}
            if len(values) > 1:
                raise ValueError(f"items with different {name} {sorted(values)} cannot share a batch")
            batch[name] = values.pop()
    return batch
