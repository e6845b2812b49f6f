"""Fast scoring of every answer option of every round: the engine behind evaluation.

The reference padded every (dialog, round, option) sequence to ``max_seq_len``, copied the image
features to each of them, ran every head of the model and split the work in fixed chunks. Here the
sequences of a chunk of dialogs are sorted by length and batched by a token budget, each batch is
padded only to its own longest sequence, each image is passed once with an index per sequence, and
only the NSP head runs. The scores are scattered back to ``[dialogs, rounds, options]``.

Under ``torchrun`` (``torch.distributed`` initialised) every rank scores a contiguous share of the
dialogs and the results are gathered, in dataset order, on every rank.
"""
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from utils.precision import autocast

DIALOG_FIELDS = ("image_id", "round_id", "gt_option_inds", "gt_relevance")
"""Per-dialog fields of a collated batch that are carried next to the scores (when present)."""


@dataclass
class ScoredDialogs:
    """Scores of all options of all rounds, in dataset order.

    ``scores`` [dialogs, rounds, options] float32 (softmax of the NSP logits, class 0);
    ``fields`` the per-dialog tensors of ``DIALOG_FIELDS`` found in the batches, first dim dialogs.
    """

    scores: torch.Tensor
    fields: dict[str, torch.Tensor] = field(default_factory=dict)


def length_batches(lengths: torch.Tensor, tokens_per_batch: int) -> list[torch.Tensor]:
    """Group sequence indices into batches of similar length.

    Parameters
    ----------
    lengths: int tensor [N], the real length of each sequence.
    tokens_per_batch: budget of one batch, counted as ``batch size * its longest sequence``;
        a sequence longer than the budget still gets a batch of its own.

    Returns
    -------
    list of int64 index tensors, longest sequences first, covering 0..N-1 exactly once.
    """
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
def score_sequences(model: torch.nn.Module, batch: dict, tokens_per_batch: int, precision: str) -> torch.Tensor:
    """Score the N sequences of one collated batch, length-bucketed.

    ``batch`` holds ``tokens``, ``segments``, ``attention_mask`` [N, L], ``image_index`` [N] and
    ``image_feat`` [K, R, 2048], ``image_loc`` [K, R, 5], ``image_mask`` [K, R] (the collate
    contract). Returns float32 scores [N] on the CPU. The model is used as it is (call it in eval mode).
    """
    device = next(model.parameters()).device
    attention_mask = batch["attention_mask"].bool()
    lengths = attention_mask.sum(dim=1)
    scores = torch.empty(len(lengths), dtype=torch.float32)
    for indices in length_batches(lengths, tokens_per_batch):
        longest = int(lengths[indices].max())
        images, image_index = torch.unique(batch["image_index"][indices], return_inverse=True)
        with autocast(device, precision):
            output = model(
                tokens=batch["tokens"][indices, :longest].to(device),
                segments=batch["segments"][indices, :longest].to(device),
                attention_mask=attention_mask[indices, :longest].to(device),
                image_feat=batch["image_feat"][images].to(device),
                image_loc=batch["image_loc"][images].to(device),
                image_mask=batch["image_mask"][images].to(device),
                image_index=image_index.to(device),
                output_lm_scores=False,
                output_img_scores=False,
            )
        scores[indices] = ranking_scores(output.nsp_scores).cpu()
    return scores


def _shard(num_dialogs: int) -> range:
    """The contiguous range of dialog indices this process scores (all of them without torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return range(num_dialogs)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    per_rank, remainder = divmod(num_dialogs, world_size)
    start = rank * per_rank + min(rank, remainder)
    return range(start, start + per_rank + (rank < remainder))


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _concatenate(parts: list[ScoredDialogs]) -> ScoredDialogs:
    parts = [part for part in parts if part.scores.shape[0] > 0]
    if not parts:
        return ScoredDialogs(torch.empty(0, 0, 0))
    fields = {name: torch.cat([part.fields[name] for part in parts]) for name in parts[0].fields}
    return ScoredDialogs(torch.cat([part.scores for part in parts]), fields)


def score_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list], dict],
    *,
    tokens_per_batch: int = 16384,
    dialogs_per_chunk: int = 16,
    precision: str = "fp32",
    num_workers: int = 0,
    progress: bool = True,
) -> ScoredDialogs:
    """Score every option of every round of every dialog of an evaluation dataset.

    Parameters
    ----------
    model: a ``VisualDialogEncoder`` (or the language-only baseline); put in eval mode while scoring
        and restored to its previous mode afterwards.
    dataset: items of one dialog each (val or test split); ``collate_fn`` turns a list of items into
        the flat batch of the collate contract, with ``num_rounds`` and ``num_options``.
    tokens_per_batch: token budget of one forward pass (batch size * longest sequence).
    dialogs_per_chunk: dialogs collated together; their sequences are length-sorted as one pool.
    precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).

    Returns
    -------
    ``ScoredDialogs`` with scores [dialogs, rounds, options], on every rank when distributed.
    """
    shard = _shard(len(dataset))
    loader = DataLoader(Subset(dataset, shard), batch_size=dialogs_per_chunk, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_fn)
    was_training = model.training
    model.eval()
    parts, num_sequences, start = [], 0, time.perf_counter()
    bar = tqdm(total=len(shard), unit="dialog", desc="scoring", disable=not (progress and _is_main_process()))
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
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, result)
        result = _concatenate(gathered)
    return result
