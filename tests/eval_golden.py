"""Test helpers for evaluation: the golden model and the golden dataset items as a scoring dataset.

`GoldenDialogs` serves the val or test items of ../shared/golden/dataset_items.pt (what the
reference's dataset produced) and `collate_golden` turns them into the flat batch of the collate
contract, so the scoring engine can be checked against the reference's outputs on its own inputs.
"""
from pathlib import Path

import torch
from torch.utils.data import Dataset

from models.config import BertConfig
from models.vilbert import VisualDialogEncoder

NUM_REGIONS = 37


def load_golden_model(golden_dir: Path) -> VisualDialogEncoder:
    """The reference's weights of model_raw.pt in our model, in eval mode."""
    model = VisualDialogEncoder(BertConfig.from_json_file(golden_dir / "model_config.json"))
    model.load_state_dict(torch.load(golden_dir / "model_raw.pt", weights_only=True))
    return model.eval()


class GoldenDialogs(Dataset):
    """The golden items of one split ('val' or 'test'), each with its image tensors added."""

    def __init__(self, golden_dir: Path, split: str):
        stored = torch.load(golden_dir / "dataset_items.pt", weights_only=True)
        self.items = stored[split]
        self.images = stored["images"]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.items[index])
        image = self.images[int(item["image_id"])]
        item["image_feat"] = torch.zeros(NUM_REGIONS, 2048)
        item["image_feat"][: image["num_rows"]] = image["image_feat"]
        item["image_loc"], item["image_mask"] = image["image_loc"], image["image_mask"]
        return item


def collate_golden(items: list[dict]) -> dict:
    """Flatten golden items [rounds, options, L] into the contract's [N, L] batch."""
    num_rounds, num_options, _ = items[0]["tokens"].shape
    tokens = torch.cat([item["tokens"].long().reshape(-1, item["tokens"].shape[-1]) for item in items])
    segments = torch.cat([item["segments"].long().reshape(-1, item["segments"].shape[-1]) for item in items])
    sep_indices = torch.cat([item["sep_indices"].long().reshape(-1, item["sep_indices"].shape[-1])
                             for item in items])
    hist_len = torch.cat([item["hist_len"].reshape(-1) for item in items])
    lengths = sep_indices.gather(1, hist_len.view(-1, 1)).squeeze(1) + 1
    batch = {
        "tokens": tokens,
        "segments": segments,
        "attention_mask": torch.arange(tokens.shape[1]) < lengths.view(-1, 1),
        "image_index": torch.arange(len(items)).repeat_interleave(num_rounds * num_options),
        "image_feat": torch.stack([item["image_feat"] for item in items]),
        "image_loc": torch.stack([item["image_loc"] for item in items]),
        "image_mask": torch.stack([item["image_mask"] for item in items]),
        "image_id": torch.cat([item["image_id"] for item in items]),
        "round_id": torch.cat([item["round_id"] for item in items]),
        "num_rounds": num_rounds,
        "num_options": num_options,
    }
    if "gt_option_inds" in items[0]:
        batch["gt_option_inds"] = torch.stack([item["gt_option_inds"] for item in items])
        batch["gt_relevance"] = torch.stack([item["gt_relevance"] for item in items])
    return batch
