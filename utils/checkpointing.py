"""Reading checkpoints safely and putting their weights into a model; saving them atomically.

Every file goes through `torch.load(..., weights_only=True)`: a checkpoint that would need to
run pickled code is refused, never executed. Training saves with `save_checkpoint` (temporary
file, fsync, rename), so a process killed at any moment leaves the previous checkpoint intact.
"""
import os
import pickle
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Tuple, Union

import torch
from torch import nn

from utils.errors import UserError

# Prefixes that other ViLBERT code bases (and nn.DataParallel / DDP) put before our names.
WRAPPER_PREFIXES = ("module.",)
MODEL_PREFIX = "bert_pretrained."


def read_checkpoint(path: Union[str, Path]) -> dict:
    """Load a checkpoint file onto the CPU with weights_only=True; UserError if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is boilerplate around one line: "... unsupported GLOBAL module.name ..."
        # for pickled code, "Unsupported operand N" for bytes that are no checkpoint at all
        code = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if code:
            raise UserError(f"{path}: refused to load: the checkpoint needs pickled code, which is "
                            f"never executed ({code[0]})") from None
        raise UserError(f"{path}: not a PyTorch checkpoint (weights-only loading cannot read it)") from None
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: not a checkpoint (holds a {type(content).__name__}, "
                        "expected a dict)")
    return content


def extract_state_dict(content: dict, source: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint: a raw state dict, or the training wrapper's
    `model_state_dict` (what the reference's train.py and ours save)."""
    state = content.get("model_state_dict", content)
    if not isinstance(state, dict) or not state:
        raise UserError(f"{source}: no model weights found")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise UserError(f"{source}: not a model state dict (entry {not_tensors[0]!r} is not a "
                        "tensor)")
    return state


def align_key_names(state: Dict[str, torch.Tensor],
                    expected: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename keys saved under other prefixes (`module.`, `bert.` ...) to the model's names."""
    renamed = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key not in expected and MODEL_PREFIX + key in expected:
            key = MODEL_PREFIX + key
        renamed[key] = value
    return renamed


@dataclass
class LoadReport:
    """Which keys of a checkpoint were loaded, missing from it, or not used by the model."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def describe(self, source: Union[str, Path]) -> str:
        """A readable block: counts, then every missing and unexpected key by name."""
        lines = [f"{source}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"  missing from the checkpoint ({len(self.missing)}), left as initialised:")
            lines += [f"    {key}" for key in self.missing]
        if self.unexpected:
            lines.append(f"  in the checkpoint but not in the model ({len(self.unexpected)}), ignored:")
            lines += [f"    {key}" for key in self.unexpected]
        return "\n".join(lines)


def load_state_into(model: nn.Module, state: Dict[str, torch.Tensor], source: Union[str, Path],
                    strict: bool = True) -> LoadReport:
    """Copy `state` into `model`, refusing any shape mismatch.

    strict=True also refuses missing or unexpected keys (released checkpoints load strictly);
    strict=False loads what fits and reports the rest.
    """
    expected = model.state_dict()
    state = align_key_names(state, expected)
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            raise UserError(f"{source}: {key} has shape {tuple(value.shape)} in the checkpoint but "
                            f"{tuple(expected[key].shape)} in the model config")
    report = LoadReport(loaded=[key for key in state if key in expected],
                        missing=[key for key in expected if key not in state],
                        unexpected=[key for key in state if key not in expected])
    if strict and (report.missing or report.unexpected):
        raise UserError(f"{source}: does not fit the model config: {len(report.missing)} missing "
                        f"keys (first: {(report.missing or ['-'])[0]}), {len(report.unexpected)} "
                        f"unexpected keys (first: {(report.unexpected or ['-'])[0]})")
    model.load_state_dict({key: state[key] for key in report.loaded}, strict=False)
    return report


def load_model_weights(model: nn.Module, path: Union[str, Path], strict: bool = True) -> LoadReport:
    """Load the model weights of a checkpoint file (see `read_checkpoint`, `load_state_into`)."""
    state = extract_state_dict(read_checkpoint(path), path)
    return load_state_into(model, state, path, strict=strict)


def read_bert_weights(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a Hugging Face BERT checkpoint: a folder or a `.safetensors` / `.bin` file."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        found = [candidate for candidate in candidates if candidate.is_file()]
        if not found:
            raise UserError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
        path = found[0]
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        if not path.is_file():
            raise UserError(f"{path}: BERT checkpoint not found")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise UserError(f"{path}: not a safetensors file ({error})") from None
    return extract_state_dict(read_checkpoint(path), path)


def bert_key_to_model_key(key: str) -> str:
    """`bert.encoder.layer.0...gamma` (Hugging Face / Google BERT) -> our name of that tensor."""
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                      "LayerNorm.bias")
    if key.startswith("bert."):
        key = key[len("bert."):]
    if key.startswith("cls."):
        return MODEL_PREFIX + key
    return MODEL_PREFIX + "bert." + key


def load_bert_weights(model: nn.Module, path: Union[str, Path]) -> LoadReport:
    """Initialise the text stream (and LM head) of `model` from a BERT checkpoint.

    Tensors the model has under the same name are loaded (shapes must match); the image
    stream and co-attention keep their initialisation. `report.unexpected` lists the BERT
    tensors that have no place in the model (e.g. the tanh pooler for ViLBERT).
    """
    state = {bert_key_to_model_key(key): value for key, value in read_bert_weights(path).items()}
    return load_state_into(model, state, path, strict=False)


# ---------------------------------------------------------------------------------------------
# Saving (training side): atomic files, run folders, keeping the last K and the best.
# ---------------------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "visdial_dialog_encoder_"   # the reference's file names: <prefix><iteration>.ckpt
BEST_CHECKPOINT = CHECKPOINT_PREFIX + "best.ckpt"
TEMPORARY_MARK = ".tmp-"


def checkpoint_path(run_dir: Union[str, Path], iteration: int) -> Path:
    """<run_dir>/visdial_dialog_encoder_<iteration>.ckpt"""
    return Path(run_dir) / f"{CHECKPOINT_PREFIX}{iteration}.ckpt"


def list_checkpoints(run_dir: Union[str, Path]) -> List[Tuple[int, Path]]:
    """The (iteration, path) of every periodic checkpoint of a run folder, oldest first."""
    found = []
    for path in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*.ckpt"):
        number = path.stem[len(CHECKPOINT_PREFIX):]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that it is either absent, the previous version, or complete.

    `write(file)` fills a temporary file in the same folder, which is flushed, fsync'ed and then
    renamed over `path` (a rename is atomic), and the folder is fsync'ed. On any error (disk
    full, no permission) the temporary file is removed, `path` is left as it was, and a
    UserError names the path.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({error.strerror or error}); "
                        "the previous file, if any, is kept") from None


def save_checkpoint(path: Union[str, Path], content: dict) -> None:
    """torch.save `content` (tensors and plain containers only, so that it loads with
    weights_only=True) atomically to `path`."""
    atomic_write(path, lambda file: torch.save(content, file))


def remove_stale_temporaries(run_dir: Union[str, Path]) -> List[Path]:
    """Delete temporary files left by a process killed while saving; returns what was removed."""
    removed = []
    for path in Path(run_dir).glob(f".*{TEMPORARY_MARK}*"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def prune_checkpoints(run_dir: Union[str, Path], keep: int) -> List[Path]:
    """Delete all but the `keep` newest periodic checkpoints (the best one is a separate file
    and is never pruned); returns the deleted paths."""
    checkpoints = list_checkpoints(run_dir)
    doomed = [path for _, path in checkpoints[:max(0, len(checkpoints) - keep)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def check_writable(run_dir: Union[str, Path], needed_bytes: int) -> None:
    """Fail early, with the path, when the run folder cannot be created or written, or when its
    disk has less than `needed_bytes` free (one checkpoint)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{run_dir}: cannot create the run folder ({error.strerror})") from None
    atomic_write(run_dir / ".write_test", lambda file: file.write(b"ok"))
    (run_dir / ".write_test").unlink()
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(f"{run_dir}: only {free / 2**20:.0f} MiB free on this disk, a checkpoint "
                        f"needs about {needed_bytes / 2**20:.0f} MiB")


def latest_checkpoint(run_dir: Union[str, Path]) -> Path:
    """The newest periodic checkpoint of a run folder (for -continue); UserError if none."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise UserError(f"{run_dir}: no checkpoint to continue from "
                        f"({CHECKPOINT_PREFIX}<iteration>.ckpt)")
    return checkpoints[-1][1]


def git_commit(repo_dir: Union[str, Path]) -> str:
    """The commit hash of the code (with '-dirty' when files changed), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo_dir, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if status.strip() else "")
