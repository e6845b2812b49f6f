"""What -continue checks in a run's checkpoint before anything is restored: the flags and the model
config it was trained with, then every field's type, range and shape (docs/reliability.md)."""
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import torch
from torch import nn

from models import BertConfig
from models.weights import check_tensors
from options import TrainOptions
from utils.distributed import get_world_size
from utils.errors import UserError
from utils.random_state import RandomState
from utils.training.run_state import Progress

REQUIRED_KEYS = ("model_state_dict", "optimizer_state_dict", "progress", "per_rank")
CHECKPOINT_KEYS = (*REQUIRED_KEYS, "scheduler_state_dict", "grad_scaler_state_dict", "iter_id", "epoch",
                   "world_size", "options", "git_commit", "model_config")
"""Every field a run's checkpoint holds; without `model_config`, -continue compares the -model_config path."""
ADAM_STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")


def model_config_record(config: BertConfig) -> dict:
    """What a checkpoint stores of the model config: its values (defaults filled in) and the
    sha256 of their canonical JSON."""
    values = config.to_dict()
    return {"sha256": _config_sha256(values), "values": values}


def _config_sha256(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def check_for_resume(content: dict, path: Path, options: TrainOptions, commit: str) -> list[str]:
    """UserError when the checkpoint `content` (read from `path`) cannot be continued from with
    `options`, or when a flag or the model config changed since it in a way that breaks exact resume;
    else the warnings to print (flags that change only what happens around the training, another
    git commit than `commit`, another number of processes)."""
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise UserError(f"{path}: cannot continue from this checkpoint (no {', '.join(missing)}); "
                        "use it with -start_path without -continue to start from its weights")
    saved_options = content.get("options", {})
    if not isinstance(saved_options, dict) or not all(isinstance(key, str) for key in saved_options):
        raise UserError(f"{path}: field 'options' is not a mapping of flag names to values")
    world_size, saved_world_size = get_world_size(), content.get("world_size", get_world_size())
    saved_options = dict(saved_options)
    # -batch_size is per process: in base mode a saved one that gives the same global batch is unchanged
    if (options.mode == "base" and type(saved_options.get("batch_size")) is int and type(saved_world_size) is int
            and saved_options["batch_size"] * saved_world_size == options.batch_size * world_size):
        saved_options["batch_size"] = options.batch_size
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
    warnings = []
    if noted:
        warnings.append(f"warning: changed since {path.name}, without changing the training: {', '.join(noted)}")
    saved_commit = content.get("git_commit", "unknown")
    if saved_commit != commit:
        warnings.append(f"warning: {path.name} was written by the code at commit {saved_commit}, this is {commit}")
    if saved_world_size != world_size:
        warnings.append(_world_size_change(path, content.get("options", {}), saved_world_size, options, world_size))
    return warnings


def _check_model_config(saved: dict, config_path: str, path: Path) -> None:
    present = BertConfig.from_json_file(config_path).to_dict()
    if _config_sha256(present) == saved["sha256"]:
        return
    values = saved["values"]
    changed = [f"{key} {values.get(key, '(none)')!r} -> {present.get(key, '(none)')!r}"
               for key in sorted(set(values) | set(present)) if values.get(key) != present.get(key)]
    raise UserError(f"{path}: cannot continue exactly, the model config {config_path} changed since this "
                    f"checkpoint: {', '.join(changed) or 'its values no longer match the saved hash'}")


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
        keeps = f" (-batch_size {before // world_size} keeps it)" if before % world_size == 0 else ""
        return (f"warning: {written}: the global batch changes from {before} to {now} sequences per iteration, "
                f"so the run does not continue as it would have{keeps}")
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
    if not isinstance(values, dict):
        _fail(path, field, f"must be a mapping, got a {type(values).__name__}")
    missing = [key for key in expected if key not in values]
    unknown = [str(key) for key in values if key not in expected]
    if missing or unknown:
        _fail(path, field, "lacks " + ", ".join(missing) if missing else "has unknown field(s) " + ", ".join(unknown))


def check_resume_content(content: dict, path: Path) -> None:
    """UserError naming the checkpoint and the field unless every field a run's checkpoint holds has
    its type, range and count."""
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


def check_optimizer_fit(saved: dict, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """UserError unless the saved optimizer state has `optimizer`'s groups and every parameter's
    moments have that parameter's shape (torch's own load checks only the group sizes)."""
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


def check_gradients(gradients: dict, model: nn.Module, source: str, finite: bool) -> None:
    """UserError unless the pending `gradients` are tensors named after `model`'s parameters, of their
    shapes (and finite when the window they belong to met no non-finite loss)."""
    parameters = dict(model.named_parameters())
    if not isinstance(gradients, dict):
        raise UserError(f"{source}: pending gradients must be a mapping of parameter names to tensors")
    if finite:
        check_tensors(gradients, source, "not a set of pending gradients")
    for name, gradient in gradients.items():
        if not isinstance(gradient, torch.Tensor) or name not in parameters or gradient.shape != parameters[name].shape:
            raise UserError(f"{source}: pending gradient {name!r} is not a tensor of a parameter's shape")
