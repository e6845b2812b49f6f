"""A training run's checkpoint: what it holds, saving it, reading and checking it for -continue, restoring it.

A checkpoint (`save_run_state`) holds the weights (`model_state_dict`, what evaluation loads), the
optimizer and grad-scaler states, the schedule's settings, the `Progress` (iteration, epoch,
position in the epoch, best MRR, counters), the options, the model config (its values and their
sha256) and git commit of the run, and per torchrun rank the random generators
(utils/random_state.py), a hash of the parameters and the gradients accumulated since the last
optimizer step. Rank 0 writes the checkpoint; another rank's pending gradients go to a file of its
own next to it (never gathered onto one process).

`read_run_state` reads the checkpoint -continue resumes from, before any heavy work, and compares
it with the present options: a changed flag that would make the continuation differ is refused,
one that only changes what happens around the training (logging, workers) is a warning (options.py
says which flag is which). The model config is compared by content, not by path: a config edited
in place is refused, naming the keys that changed (a checkpoint written before configs were
stored has its -model_config path compared instead). Then every field of the saved state is
checked (`check_resume_content`: types, ranges, counts, finite weights, restorable random states;
a missing or unknown field is named), and `restore_run_state` checks what depends on the model
(weight and optimizer-state shapes, pending gradients) before it restores all of it, so a
continued run is bit-identical to an uninterrupted one on the CPU.
"""
import dataclasses
import functools
import hashlib
import json
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Union

import torch
from torch import nn

from models import BertConfig
from options import TrainOptions
from models.weights import check_tensors, load_state_into, read_checkpoint
from utils.distributed import DistributedContext, gather_to_main, get_world_size
from utils.errors import UserError
from utils.outputs import atomic_write
from utils.random_state import RandomState

REPO_ROOT = Path(__file__).resolve().parents[2]

REQUIRED_KEYS = ("model_state_dict", "optimizer_state_dict", "progress", "per_rank")
CHECKPOINT_KEYS = (*REQUIRED_KEYS, "scheduler_state_dict", "grad_scaler_state_dict", "iter_id", "epoch",
                   "world_size", "options", "git_commit", "model_config")
"""Every field `save_run_state` writes (`model_config` is absent from checkpoints written before it was)."""
ADAM_STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")


@dataclass
class Progress:
    """Where the run is: what a checkpoint needs besides weights and optimizer state.

    iteration: iterations done (the reference's iter_id of the next one); epoch, position: the
    epoch and the number of its batches consumed; window_finite: no non-finite loss since the
    last optimizer step; best_mrr: the best validation MRR so far (-1: none yet); records_read,
    skipped_records: train records read and those skipped as unreadable; skipped_steps:
    optimizer steps skipped for a non-finite loss; overflow_steps: optimizer steps the fp16 grad
    scaler skipped because the scaled gradients overflowed (it then halves its scale).
    """
    iteration: int = 0
    epoch: int = 0
    position: int = 0
    window_finite: bool = True
    best_mrr: float = -1.0
    records_read: int = 0
    skipped_records: int = 0
    skipped_steps: int = 0
    overflow_steps: int = 0


def estimated_checkpoint_bytes(model: nn.Module) -> int:
    """Weights + two AdamW moments + a little slack."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()) * 3 * 1.1) + 2**20


@dataclass
class Checkpoint:
    """A checkpoint read to continue from: its path and content."""
    path: Path
    content: dict


def read_run_state(path: Path, options: TrainOptions, say: Callable[[str], None]) -> Checkpoint:
    """The checkpoint at `path`, read and checked for -continue with `options` (module docstring);
    UserError when it cannot be continued from, or when flags or the model config changed since
    it in a way that breaks exact resume. Warnings go to `say`."""
    content = read_checkpoint(path)
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise UserError(f"{path}: cannot continue from this checkpoint (no {', '.join(missing)}); "
                        "use it with -start_path without -continue to start from its weights")
    saved_options = content.get("options", {})
    if not isinstance(saved_options, dict) or not all(isinstance(key, str) for key in saved_options):
        raise UserError(f"{path}: field 'options' is not a mapping of flag names to values")
    world_size, saved_world_size = get_world_size(), content.get("world_size", get_world_size())
    saved_options = _saved_options_per_process(content, options, world_size)
    if "model_config" in content:  # compared by content below, not by path
        saved_options.pop("model_config", None)
    refused, noted = options.changes_since(saved_options)
    if refused:
        raise UserError(f"{path}: cannot continue exactly, changed since this checkpoint: {', '.join(refused)} "
                        "(give the checkpoint's values, or start a new run from its weights with -start_path "
                        "and without -continue)")
    check_resume_content(content, path)
    if "model_config" in content:
        _check_model_config(content["model_config"], options.model_config, path)
    if noted:
        say(f"warning: changed since {path.name}, without changing the training: {', '.join(noted)}")
    saved_commit, commit = content.get("git_commit", "unknown"), git_commit()
    if saved_commit != commit:
        say(f"warning: {path.name} was written by the code at commit {saved_commit}, this is {commit}")
    if saved_world_size != world_size:
        say(_world_size_change(path, content.get("options", {}), saved_world_size, options, world_size))
    return Checkpoint(path, content)


def model_config_record(config: BertConfig) -> dict:
    """What a checkpoint stores of the model config: its values (the JSON schema's, defaults
    filled in) and the sha256 of their canonical JSON."""
    values = config.to_dict()
    return {"sha256": _config_sha256(values), "values": values}


def _config_sha256(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _check_model_config(saved: dict, config_path: str, path: Path) -> None:
    """The model config at `config_path` has the content the checkpoint was trained with;
    UserError naming every key that changed otherwise."""
    present = BertConfig.from_json_file(config_path).to_dict()
    if _config_sha256(present) == saved["sha256"]:
        return
    values = saved["values"]
    changed = [f"{key} {values.get(key, '(none)')!r} -> {present.get(key, '(none)')!r}"
               for key in sorted(set(values) | set(present)) if values.get(key) != present.get(key)]
    raise UserError(f"{path}: cannot continue exactly, the model config {config_path} changed since this "
                    f"checkpoint: {', '.join(changed) or 'its values no longer match the saved hash'}")


def _saved_options_per_process(content: dict, options: TrainOptions, world_size: int) -> dict:
    """The checkpoint's options as `world_size` processes would give them for the same run.

    -batch_size is per process: in base mode, M processes x b sequences and N processes x (b M / N)
    sequences are the same global batch, so the saved -batch_size counts as unchanged when the
    present one gives the same global batch.
    """
    saved = dict(content.get("options", {}))
    saved_world_size = content.get("world_size", world_size)
    if (options.mode == "base" and type(saved.get("batch_size")) is int and type(saved_world_size) is int
            and saved["batch_size"] * saved_world_size == options.batch_size * world_size):
        saved["batch_size"] = options.batch_size
    return saved


def _world_size_change(path: Path, saved: dict, saved_world_size: int, options: TrainOptions,
                       world_size: int) -> str:
    """What continuing on another number of processes changes (docs/training.md, "Distributed training")."""
    written = f"{path.name} was written by {saved_world_size} process(es), this run has {world_size}"
    if options.mode == "base":
        before, now = saved.get("batch_size", options.batch_size) * saved_world_size, options.batch_size * world_size
        if before == now:
            return (f"{written}, with the same global batch of {now} sequences: the data order, the items' "
                    "random draws and the gradients continue as on the old processes; dropout masks come "
                    "from other random streams")
        return (f"warning: {written}: the global batch changes from {before} to {now} sequences per "
                f"iteration, so the run does not continue as it would have (-batch_size {before // world_size} "
                f"keeps it)" if before % world_size == 0 else
                f"warning: {written}: the global batch changes from {before} to {now} sequences per iteration, "
                "so the run does not continue as it would have")
    return (f"warning: {written}: in dense mode each process takes one annotated round per iteration, so "
            f"an iteration now takes {world_size} rounds instead of {saved_world_size} and the run does not "
            "continue as it would have")

def _fail(path: Path, field: str, problem: str) -> None:
    raise UserError(f"{path}: cannot continue from this checkpoint: {field} {problem}")


def _check_number(value, path: Path, field: str, kind: type = float, low: float = -math.inf) -> None:
    """An int (for kind int) or a finite int / float (for kind float), at least `low`."""
    if type(value) not in ((int,) if kind is int else (int, float)) or not math.isfinite(value) or value < low:
        wanted = "an integer" if kind is int else "a finite number"
        _fail(path, field, f"must be {wanted}{f' >= {low:g}' if low > -math.inf else ''}, got {value!r}")


def _check_fields(values, expected: tuple, path: Path, field: str) -> None:
    """`values` is a dict holding exactly the keys `expected` (each missing or unknown one named)."""
    if not isinstance(values, dict):
        _fail(path, field, f"must be a mapping, got a {type(values).__name__}")
    missing = [key for key in expected if key not in values]
    unknown = [str(key) for key in values if key not in expected]
    if missing or unknown:
        _fail(path, field, "lacks " + ", ".join(missing) if missing else "has unknown field(s) " + ", ".join(unknown))


def check_resume_content(content: dict, path: Path) -> None:
    """Check every field a checkpoint holds for -continue (what `save_run_state` writes) before any
    of it is used; UserError naming the checkpoint and the field otherwise."""
    expected = CHECKPOINT_KEYS if "model_config" in content else tuple(key for key in CHECKPOINT_KEYS
                                                                           if key != "model_config")
    _check_fields(content, expected, path, "the checkpoint")
    if "model_config" in content:
        _check_fields(content["model_config"], ("sha256", "values"), path, "model_config")
        if not isinstance(content["model_config"]["sha256"], str):
            _fail(path, "model_config.sha256", "must be a string")
        if not isinstance(content["model_config"]["values"], dict):
            _fail(path, "model_config.values", "must be a mapping")
    check_tensors(content["model_state_dict"], f"{path} (model_state_dict)", "not a model state dict")
    for field in ("scheduler_state_dict", "grad_scaler_state_dict"):
        if not isinstance(content[field], dict):
            _fail(path, field, f"must be a mapping, got a {type(content[field]).__name__}")
        for key, value in content[field].items():
            _check_number(value, path, f"{field}.{key}")
    if not isinstance(content["git_commit"], str):
        _fail(path, "git_commit", "must be a string")
    progress_fields = tuple(spec.name for spec in dataclasses.fields(Progress))
    _check_fields(content["progress"], progress_fields, path, "progress")
    for spec in dataclasses.fields(Progress):
        value, field = content["progress"][spec.name], f"progress.{spec.name}"
        if spec.type is bool:
            if type(value) is not bool:
                _fail(path, field, f"must be true or false, got {value!r}")
        else:
            _check_number(value, path, field, spec.type, low=-1 if spec.name == "best_mrr" else 0)
    for field, in_progress in (("iter_id", "iteration"), ("epoch", "epoch")):
        if content[field] != content["progress"][in_progress]:
            _fail(path, field, f"is {content[field]!r} but progress.{in_progress} {content['progress'][in_progress]}")
    _check_number(content["world_size"], path, "world_size", int, low=1)
    per_rank = content["per_rank"]
    if not isinstance(per_rank, list) or len(per_rank) != content["world_size"]:
        count = len(per_rank) if isinstance(per_rank, list) else f"a {type(per_rank).__name__}, not"
        _fail(path, "per_rank", f"holds {count} entries for world_size {content['world_size']}")
    for rank, entry in enumerate(per_rank):
        _check_rank_entry(entry, rank, path)
    _check_optimizer_layout(content["optimizer_state_dict"], path)


def _check_rank_entry(entry, rank: int, path: Path) -> None:
    pending = ("pending_gradients",) if rank == 0 else ("pending_gradients_file",)
    field = f"per_rank[{rank}]"
    if isinstance(entry, dict) and not any(key in entry for key in pending):
        pending = ()  # no gradients were pending
    _check_fields(entry, ("rng", "parameters_sha256", *pending), path, field)
    if not isinstance(entry["parameters_sha256"], str):
        _fail(path, f"{field}.parameters_sha256", "must be a string")
    if "pending_gradients" in entry and not isinstance(entry["pending_gradients"], dict):
        _fail(path, f"{field}.pending_gradients", "must be a mapping of parameter names to tensors")
    name = entry.get("pending_gradients_file")
    if name is not None and (not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")):
        _fail(path, f"{field}.pending_gradients_file", f"must be a file name next to the checkpoint, got {name!r}")
    present = RandomState.capture(cuda=False)
    try:
        RandomState.from_checkpoint(entry["rng"]).restore()
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError, OverflowError) as error:
        _fail(path, f"{field}.rng", f"is not a saved random state ({type(error).__name__}: {error})")
    finally:
        present.restore()


def _check_optimizer_layout(saved, path: Path) -> None:
    """The optimizer state's own structure (its fit to the model is checked by `restore_run_state`)."""
    _check_fields(saved, ("state", "param_groups"), path, "optimizer_state_dict")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        _fail(path, "optimizer_state_dict.param_groups", "must be a list of mappings")
    for number, group in enumerate(groups):
        field = f"optimizer_state_dict.param_groups[{number}]"
        for key in ("params", "lr", "betas", "eps", "weight_decay"):
            if key not in group:
                _fail(path, field, f"lacks {key}")
        if not isinstance(group["params"], list) or not all(type(index) is int for index in group["params"]):
            _fail(path, f"{field}.params", "must be a list of parameter indices")
        for key in ("lr", "eps", "weight_decay"):
            _check_number(group[key], path, f"{field}.{key}", low=0)
        if not isinstance(group["betas"], (list, tuple)) or len(group["betas"]) != 2:
            _fail(path, f"{field}.betas", f"must be two numbers, got {group['betas']!r}")
        for beta in group["betas"]:
            _check_number(beta, path, f"{field}.betas", low=0)
    if not isinstance(saved["state"], dict):
        _fail(path, "optimizer_state_dict.state", "must be a mapping")


def _check_optimizer_fit(saved: dict, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """The saved optimizer state has this optimizer's groups, and every parameter's moments have
    that parameter's shape (torch's own load checks only the group sizes)."""
    ours = [len(group["params"]) for group in optimizer.param_groups]
    theirs = [len(group["params"]) for group in saved["param_groups"]]
    if ours != theirs:
        _fail(path, "optimizer_state_dict", f"has parameter groups of sizes {theirs}, this model's optimizer {ours}")
    parameters = [(name, parameter) for group in optimizer.param_groups
                  for name, parameter in zip(group["names"], group["params"])]
    position = {index: number for number, index in
                enumerate(index for group in saved["param_groups"] for index in group["params"])}
    for index, entry in saved["state"].items():
        field = f"optimizer_state_dict.state[{index!r}]"
        if index not in position:
            _fail(path, field, "belongs to no parameter of param_groups")
        name, parameter = parameters[position[index]]
        _check_fields(entry, ADAM_STATE_KEYS, path, field)
        check_tensors(entry, f"{path} (optimizer state of {name})", "not an optimizer state")
        for key in ("exp_avg", "exp_avg_sq"):
            if entry[key].shape != parameter.shape:
                _fail(path, f"{field}.{key}", f"has shape {tuple(entry[key].shape)}, the parameter {name} "
                                             f"{tuple(parameter.shape)}")
        if entry["step"].numel() != 1:
            _fail(path, f"{field}.step", "must hold one number")


def _check_gradients(gradients: dict, model: nn.Module, source: str, finite: bool) -> None:
    """Pending gradients: tensors named after parameters, of their shapes (finite unless the
    window they belong to already met a non-finite loss)."""
    parameters = dict(model.named_parameters())
    if not isinstance(gradients, dict):
        raise UserError(f"{source}: pending gradients must be a mapping of parameter names to tensors")
    if finite:
        check_tensors(gradients, source, "not a set of pending gradients")
    for name, gradient in gradients.items():
        if not isinstance(gradient, torch.Tensor) or name not in parameters or gradient.shape != parameters[name].shape:
            raise UserError(f"{source}: pending gradient {name!r} is not a tensor of a parameter's shape")




def _pending_gradients(per_rank: list[dict], checkpoint: Path, context: DistributedContext,
                       check: Callable[[dict, int], None] = lambda gradients, rank: None) -> dict:
    """This process's gradients pending at the checkpoint (accumulated since the last optimizer
    step). On the checkpoint's number of processes: its rank's own. On N processes from a
    checkpoint of M = k N: the mean of those of the k old ranks whose items it now takes (old
    ranks r with r % N == its rank; the all-reduce of the next step then averages the same sum).
    Any other change of the number of processes inside an accumulation window is refused.
    `check(gradients, old_rank)` sees each old rank's gradients before they are used."""
    saved_world_size = len(per_rank)
    if saved_world_size == context.world_size:
        gradients = _rank_pending_gradients(per_rank[context.rank], checkpoint)
        check(gradients, context.rank)
        return gradients
    if not any(entry.get("pending_gradients") or "pending_gradients_file" in entry for entry in per_rank):
        return {}
    if saved_world_size % context.world_size:
        raise UserError(f"{checkpoint}: written by {saved_world_size} processes inside an accumulation window "
                        f"(-batch_multiply): it continues on {saved_world_size} processes or a divisor of it, "
                        f"not on {context.world_size}")
    old_ranks = range(context.rank, saved_world_size, context.world_size)
    pending = [_rank_pending_gradients(per_rank[rank], checkpoint) for rank in old_ranks]
    for gradients, rank in zip(pending, old_ranks):
        check(gradients, rank)
        if set(gradients) != set(pending[0]):
            raise UserError(f"{checkpoint}: the pending gradients of old ranks {old_ranks[0]} and {rank} "
                            "name different parameters")
    return {name: torch.stack([gradients[name] for gradients in pending]).mean(dim=0) for name in pending[0]}


def _rank_pending_gradients(entry: dict, checkpoint: Path) -> dict:
    """One old rank's pending gradients: inline (rank 0) or in the rank's own file."""
    if "pending_gradients_file" in entry:
        return read_checkpoint(checkpoint.parent / entry["pending_gradients_file"])
    return entry.get("pending_gradients", {})


def save_run_state(path: Path, state, options: TrainOptions, context: DistributedContext) -> None:
    """Write the checkpoint of `state` (a utils/training/run_state.RunState: model, optimizer,
    schedule, grad_scaler, progress) to `path`. Every rank must call this; rank 0 writes the
    file, another rank's pending gradients go to its own file next to it."""
    pending = {name: parameter.grad.detach().cpu() for name, parameter in state.model.named_parameters()
               if parameter.grad is not None}
    mine = {"rng": RandomState.capture().to_checkpoint(), "parameters_sha256": parameters_sha256(state.model)}
    if pending and not context.is_main:
        save_checkpoint(rank_file(path, context.rank), pending)
        mine["pending_gradients_file"] = rank_file(path, context.rank).name
    per_rank = gather_to_main(mine)
    if not context.is_main:
        return
    per_rank[0]["pending_gradients"] = pending
    save_checkpoint(path, {
        "model_state_dict": state.model.state_dict(),
        "optimizer_state_dict": state.optimizer.state_dict(),
        "scheduler_state_dict": {"warmup_steps": state.schedule.warmup_steps,
                                 "total_steps": state.schedule.total_steps,
                                 "min_lr": state.schedule.min_lr},
        "grad_scaler_state_dict": state.grad_scaler.state_dict(),
        "iter_id": state.progress.iteration,
        "epoch": state.progress.epoch,
        "progress": asdict(state.progress),
        "per_rank": per_rank,
        "world_size": context.world_size,
        "options": options.to_dict(),
        "git_commit": git_commit(),
        "model_config": model_config_record(state.model.config),
    })


def restore_run_state(checkpoint: Checkpoint, state, context: DistributedContext,
                      say: Callable[[str], None]) -> None:
    """Restore `state` (as in `save_run_state`) from a checkpoint of `read_run_state`: the weights,
    optimizer and grad-scaler states, progress, this rank's pending gradients and random state."""
    path, content = checkpoint.path, checkpoint.content
    _check_optimizer_fit(content["optimizer_state_dict"], state.optimizer, path)
    per_rank = content["per_rank"]

    def check(gradients: dict, rank: int) -> None:
        _check_gradients(gradients, state.model, f"{path} (pending gradients of rank {rank})",
                         finite=content["progress"]["window_finite"])

    pending = _pending_gradients(per_rank, path, context, check)
    load_state_into(state.model, content["model_state_dict"], path, strict=True)
    state.optimizer.load_state_dict(content["optimizer_state_dict"])
    if content["grad_scaler_state_dict"]:
        state.grad_scaler.load_state_dict(content["grad_scaler_state_dict"])
    state.progress = Progress(**content["progress"])
    parameters = dict(state.model.named_parameters())
    for name, gradient in pending.items():
        parameters[name].grad = gradient.to(parameters[name].device)
    RandomState.from_checkpoint(per_rank[min(context.rank, len(per_rank) - 1)]["rng"]).restore()
    say(f"continuing from {path}: iteration {state.progress.iteration}, epoch {state.progress.epoch}")


def save_checkpoint(path: Union[str, Path], content: dict) -> None:
    """torch.save `content` (tensors and plain containers only, so that it loads with
    weights_only=True) atomically to `path`."""
    atomic_write(path, lambda file: torch.save(content, file))


def parameters_sha256(model: nn.Module) -> str:
    """A hash of every parameter's bytes: equal on all ranks when they hold the same weights."""
    digest = hashlib.sha256()
    for _, parameter in sorted(model.named_parameters()):
        digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_file(checkpoint: Path, rank) -> Path:
    """Where rank `rank` keeps its own part of `checkpoint` (its pending gradients); rank "*": the
    glob pattern of every rank's."""
    return checkpoint.with_name(f"{checkpoint.name}.rank{rank}")


@functools.cache
def git_commit(repo_dir: Union[str, Path] = REPO_ROOT) -> str:
    """The commit hash of the code this process runs (with '-dirty' when files had changed when it
    was first asked), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo_dir, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if status.strip() else "")
