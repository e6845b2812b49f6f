"""Model weights in checkpoint files: reading any file safely, loading weights by name, writing atomically.

* Every file goes through `torch.load(..., weights_only=True)`: a checkpoint that would need to
  run pickled code is refused, never executed (`read_checkpoint`).
* Keys saved under other prefixes (`module.` of DDP, the ViLBERT code bases' names without
  `bert_pretrained.`) are aligned to ours; loading is strict (released checkpoints) or partial
  with a `LoadReport` that names every missing and unexpected key.
* A Hugging Face BERT (safetensors or `pytorch_model.bin`) initialises the text stream
  (`load_bert_weights`).
* `save_checkpoint` writes with torch.save, atomically.
"""
import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import torch
from torch import nn

from utils.errors import UserError
from utils.outputs import atomic_write
from utils.inputs import input_file

WRAPPER_PREFIXES = ("module.",)
MODEL_PREFIX = "bert_pretrained."


def read_checkpoint(path: Union[str, Path], what: str = "checkpoint") -> dict:
    """Load a file saved by torch.save onto the CPU with weights_only=True; UserError if it cannot
    be or does not hold a dict. what: how the messages name the file (a checkpoint, a score file)."""
    path = input_file(path, what)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is boilerplate around one line: "... unsupported GLOBAL module.name ..."
        # for pickled code, "Unsupported operand N" for bytes that are no checkpoint at all
        code = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if code:
            raise UserError(f"{path}: refused to load: the {what} needs pickled code, which is "
                            f"never executed ({code[0]})") from None
        raise UserError(f"{path}: not a PyTorch {what} (weights-only loading cannot read it)") from None
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: not a PyTorch {what} ({reason})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: not a {what} (holds a {type(content).__name__}, "
                        "expected a dict)")
    return content


def extract_state_dict(content: dict, source: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint: a raw state dict, or the training wrapper's
    `model_state_dict` (what the reference's train.py and ours save), checked by
    `check_tensors`."""
    state = content.get("model_state_dict", content)
    if not isinstance(state, dict) or not state:
        raise UserError(f"{source}: no model weights found")
    check_tensors(state, source, "not a model state dict")
    return state


def check_tensors(tensors: dict, source: Union[str, Path], what: str) -> None:
    """Every key a string and every value a real tensor (dense, with data: not on the meta device)
    whose floating-point values are all finite; else a UserError naming `source` and the key
    (`what` says what the dict is not, for a key or value of the wrong kind)."""
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise UserError(f"{source}: {what} (key {key!r} is not a string)")
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {what} (entry {key!r} is not a tensor)")
        if value.is_meta or value.layout != torch.strided:
            raise UserError(f"{source}: {key} is not a dense tensor with data ({value.device.type}, {value.layout})")
        if (value.is_floating_point() or value.is_complex()) and not torch.isfinite(value).all():
            raise UserError(f"{source}: {key} holds NaN or inf")


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
        path = input_file(path, "BERT checkpoint")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise UserError(f"{path}: not a safetensors file ({error})") from None
        check_tensors(state, path, "not a BERT checkpoint")
        return state
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
