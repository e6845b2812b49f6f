"""The engine behind evaluation: every answer option of every round scored in length-sorted batches of a
token budget, each image embedded once, only the NSP head run (docs/performance.md, "The scoring engine")."""
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from options import PRECISIONS
from utils.distributed import is_initialized
from utils.errors import UserError
from utils.evaluation.explain import region_weights as weigh_regions

DIALOG_FIELDS = ("image_id", "round_id", "gt_option_inds", "gt_relevance")  # carried next to the scores
MODEL_INPUTS = ("tokens", "segments", "attention_mask", "image_feat", "image_loc", "image_mask")
DEFAULT_TOKENS_PER_BATCH = {"cpu": 4096, "cuda": 65536}  # -eval_tokens_per_batch 0 (docs/performance.md)


def resolve_tokens_per_batch(tokens_per_batch: Optional[int], device: torch.device) -> int:
    """The one meaning of -eval_tokens_per_batch: the budget given, or for 0 / None the device's default."""
    return tokens_per_batch or DEFAULT_TOKENS_PER_BATCH["cuda" if device.type == "cuda" else "cpu"]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` (a key of options.PRECISIONS; fp32: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class ScoredDialogs:
    """Scores of all options of all rounds, in dataset order."""

    scores: torch.Tensor  # [dialogs, rounds, options] float32: softmax of the NSP logits, class 0
    fields: dict[str, torch.Tensor] = field(default_factory=dict)  # DIALOG_FIELDS of the batches, [dialogs, ...]


def length_batches(lengths: torch.Tensor, tokens_per_batch: int) -> list[torch.Tensor]:
    """lengths [N] -> int64 index tensors, longest sequences first, covering 0..N-1 once, each batch within
    `tokens_per_batch` = batch size x its longest sequence (a longer sequence gets a batch of its own)."""
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order].tolist()
    batches, start = [], 0
    while start < len(order):
        longest = max(sorted_lengths[start], 1)
        size = max(1, tokens_per_batch // longest)
        batches.append(order[start : start + size])
        start += size
    return batches


def ranking_scores(nsp_scores: torch.Tensor) -> torch.Tensor:
    """Ranking score of NSP logits [N, 2]: the probability of class 0 ("the answer belongs"), [N] float32."""
    return torch.softmax(nsp_scores.float(), dim=-1)[:, 0]


@torch.inference_mode()
def score_sequences(model: torch.nn.Module, batch: dict, tokens_per_batch: int, precision: str,
                    region_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Float32 scores [N] on the CPU of the N sequences of a collated batch (tokens, segments,
    attention_mask [N, L], image_index [N], image_feat [K, R, F], image_loc [K, R, 5], image_mask [K, R]),
    with the model as it is (eval mode is the caller's). `region_weights` [N, R] float32 CPU, when
    given, is filled with each sequence's region weights (explain.py)."""
    device = next(model.parameters()).device
    attention_mask = batch["attention_mask"].bool()
    lengths = attention_mask.sum(dim=1)
    inputs = {name: batch[name].to(device, non_blocking=True) for name in MODEL_INPUTS}
    inputs["attention_mask"] = inputs["attention_mask"].bool()
    scores = torch.empty(len(lengths), dtype=torch.float32, device=device)
    for indices in length_batches(lengths, tokens_per_batch):
        longest = int(lengths[indices].max())
        images, image_index = torch.unique(batch["image_index"][indices], return_inverse=True)
        rows, images = indices.to(device, non_blocking=True), images.to(device, non_blocking=True)
        with autocast(device, precision):
            output = model(tokens=inputs["tokens"][rows, :longest], segments=inputs["segments"][rows, :longest],
                           attention_mask=inputs["attention_mask"][rows, :longest],
                           image_feat=inputs["image_feat"][images], image_loc=inputs["image_loc"][images],
                           image_mask=inputs["image_mask"][images], output_lm_scores=False, output_img_scores=False,
                           image_index=image_index.to(device, non_blocking=True),
                           output_coattention=region_weights is not None)
        scores[rows] = ranking_scores(output.nsp_scores)
        if region_weights is not None:
            if output.coattention_t2v is None:
                raise UserError("this model has no text-to-image co-attention to explain its answers with "
                                "(the language-only model reads no image)")
            region_weights[indices] = weigh_regions(output.coattention_t2v, inputs["segments"][rows, :longest],
                                                    inputs["attention_mask"][rows, :longest]).cpu()
    return scores.cpu()


def _concatenate(parts: list[ScoredDialogs]) -> ScoredDialogs:
    parts = [part for part in parts if part.scores.shape[0] > 0]
    if not parts:
        return ScoredDialogs(torch.empty(0, 0, 0))
    fields = {name: torch.cat([part.fields[name] for part in parts]) for name in parts[0].fields}
    return ScoredDialogs(torch.cat([part.scores for part in parts]), fields)


def score_dataset(model: torch.nn.Module, dataset: Dataset, collate_fn: Callable[[list], dict], *,
                  tokens_per_batch: Optional[int] = None, dialogs_per_chunk: int = 16, precision: str = "fp32",
                  num_workers: int = 0, progress: bool = True) -> ScoredDialogs:
    """Every option of every round of an evaluation dataset (items of one dialog each; `collate_fn` adds
    num_rounds and num_options), in eval mode, the model's mode restored after. `dialogs_per_chunk`
    dialogs are length-sorted as one pool. Under torchrun each rank scores a contiguous share and
    every rank gets the whole result."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if is_initialized() else (0, 1)
    per_rank, remainder = divmod(len(dataset), world_size)
    first = rank * per_rank + min(rank, remainder)
    shard = range(first, first + per_rank + (rank < remainder))
    device = next(model.parameters()).device
    tokens_per_batch = resolve_tokens_per_batch(tokens_per_batch, device)
    loader = DataLoader(Subset(dataset, shard), batch_size=dialogs_per_chunk, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_fn, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    parts, num_sequences, start = [], 0, time.perf_counter()
    bar = tqdm(total=len(shard), unit="dialog", desc="scoring", disable=not progress or rank != 0)
    try:
        for batch in loader:
            scores = score_sequences(model, batch, tokens_per_batch, precision)
            scores = scores.view(-1, int(batch["num_rounds"]), int(batch["num_options"]))
            num_dialogs = scores.shape[0]
            fields = {name: batch[name].reshape(num_dialogs, -1).squeeze(1)
                      for name in DIALOG_FIELDS if name in batch}
            parts.append(ScoredDialogs(scores, fields))
            num_sequences += scores.numel()
            bar.update(num_dialogs)
            bar.set_postfix_str(f"{num_sequences / (time.perf_counter() - start):.1f} seq/s")
    finally:
        bar.close()
        model.train(was_training)
    result = _concatenate(parts)
    if is_initialized():
        gathered = [None] * world_size
        dist.all_gather_object(gathered, result)
        result = _concatenate(gathered)
    return result
