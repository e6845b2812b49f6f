"""Fast scoring of every answer option of every round: the engine behind evaluation.

The reference padded every (dialog, round, option) sequence to ``max_seq_len``, copied the image
features to each of them, ran every head of the model and split the work in fixed chunks. Here the
sequences of a chunk of dialogs are sorted by length and batched by a token budget, each batch is
padded only to its own longest sequence, each image is passed once with an index per sequence, and
only the NSP head runs. The scores are scattered back to ``[dialogs, rounds, options]``.

On a GPU the input side keeps ahead of the model: DataLoader workers build the items (tokens come
from tables tokenised once, when the dataset was built) and read their images, collated chunks
are pinned, each chunk goes to the device in one asynchronous copy, the batches are planned on
the CPU and their scores stay on the device until the chunk is done, so the loop never waits on
the device between forward passes.

Under ``torchrun`` (``torch.distributed`` initialised) every rank scores a contiguous share of the
dialogs and the results are gathered, in dataset order, on every rank.
"""
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from options import PRECISIONS
from utils.errors import UserError
from utils.evaluation.explain import region_weights as weigh_regions

DIALOG_FIELDS = ("image_id", "round_id", "gt_option_inds", "gt_relevance")
"""Per-dialog fields of a collated batch that are carried next to the scores (when present)."""

MODEL_INPUTS = ("tokens", "segments", "attention_mask", "image_feat", "image_loc", "image_mask")
"""The fields of a collated batch the model reads (besides the per-batch image index)."""

DEFAULT_TOKENS_PER_BATCH = {"cpu": 4096, "cuda": 65536}
"""Token budget of one forward pass by device type, when none is given (-eval_tokens_per_batch 0).
CPU: the fastest budget measured on 2 cores (scripts/benchmark.py's `eval budget` rows; the paper
model; larger budgets gain nothing there). GPU: chosen from the paper model's FLOP count per token
and the host time per forward pass, so that an H200's arithmetic for one pass outlasts the Python
that launches it many times over (docs/performance.md); scripts/benchmark.py measures the
budgets around it."""


def resolve_tokens_per_batch(tokens_per_batch: Optional[int], device: torch.device) -> int:
    """The one meaning of -eval_tokens_per_batch (evaluate.py, training's validation, DialogRanker,
    chat): the budget given, or for 0 or None the default of `device` (DEFAULT_TOKENS_PER_BATCH)."""
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
def score_sequences(model: torch.nn.Module, batch: dict, tokens_per_batch: int, precision: str,
                    region_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Score the N sequences of one collated batch, length-bucketed.

    ``batch`` holds ``tokens``, ``segments``, ``attention_mask`` [N, L], ``image_index`` [N] and
    ``image_feat`` [K, R, 2048], ``image_loc`` [K, R, 5], ``image_mask`` [K, R] (the collate
    contract). Returns float32 scores [N] on the CPU. The model is used as it is (call it in eval mode).
    ``region_weights``, a float32 CPU tensor [N, R] when given, is filled with each sequence's
    weights of the regions (utils/evaluation/explain.py; the model returns its co-attention only then).

    The batch goes to the model's device in one copy (asynchronous from pinned memory); the
    batches of similar length are planned on the CPU and the scores collected on the device, so
    nothing waits for the device before the last forward pass.
    """
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
            output = model(
                tokens=inputs["tokens"][rows, :longest],
                segments=inputs["segments"][rows, :longest],
                attention_mask=inputs["attention_mask"][rows, :longest],
                image_feat=inputs["image_feat"][images],
                image_loc=inputs["image_loc"][images],
                image_mask=inputs["image_mask"][images],
                image_index=image_index.to(device, non_blocking=True),
                output_lm_scores=False,
                output_img_scores=False,
                output_coattention=region_weights is not None,
            )
        scores[rows] = ranking_scores(output.nsp_scores)
        if region_weights is not None:
            if output.coattention_t2v is None:
                raise UserError("this model has no text-to-image co-attention to explain its answers with "
                                "(the language-only model reads no image)")
            region_weights[indices] = weigh_regions(output.coattention_t2v, inputs["segments"][rows, :longest],
                                                    inputs["attention_mask"][rows, :longest]).cpu()
    return scores.cpu()


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
    tokens_per_batch: Optional[int] = None,
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
    tokens_per_batch: token budget of one forward pass (batch size * longest sequence); None: the
        default of the model's device (``resolve_tokens_per_batch``).
    dialogs_per_chunk: dialogs collated together; their sequences are length-sorted as one pool.
    precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
    num_workers: DataLoader workers that build and collate the chunks (pinned on a GPU).

    Returns
    -------
    ``ScoredDialogs`` with scores [dialogs, rounds, options], on every rank when distributed.
    """
    shard = _shard(len(dataset))
    device = next(model.parameters()).device
    tokens_per_batch = resolve_tokens_per_batch(tokens_per_batch, device)
    loader = DataLoader(Subset(dataset, shard), batch_size=dialogs_per_chunk, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_fn, pin_memory=device.type == "cuda")
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
