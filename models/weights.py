"""Model weights from checkpoint files: keys aligned to the model's names, strict or reported
loading, and a Hugging Face BERT into the text stream."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import torch
from torch import nn

from utils.errors import UserError
from utils.inputs import input_file, read_checkpoint

MODEL_PREFIX = "bert_pretrained."


def extract_state_dict(content: dict, source: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The weights of a checkpoint: a raw state dict, or its `model_state_dict` (what the reference's
    train.py and ours save), checked by `check_tensors`."""
    state = content.get("model_state_dict", content)
    if not isinstance(state, dict) or not state:
        raise UserError(f"{source}: no model weights found")
    check_tensors(state, source, "not a model state dict")
    return state


def check_tensors(tensors: dict, source: Union[str, Path], what: str) -> None:
    """UserError naming `source` and the key unless every key is a string and every value a dense
    tensor with data and finite values (`what`: what the dict is not, for a key or value of the wrong kind)."""
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise UserError(f"{source}: {what} (key {key!r} is not a string)")
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {what} (entry {key!r} is not a tensor)")
        if value.is_meta or value.layout != torch.strided:
            raise UserError(f"{source}: {key} is not a dense tensor with data ({value.device.type}, {value.layout})")
        if (value.is_floating_point() or value.is_complex()) and not torch.isfinite(value).all():
            raise UserError(f"{source}: {key} holds NaN or inf")


def align_key_names(state: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename keys saved under other prefixes (DDP's `module.`, `bert.` ...) to the model's names."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
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
    """Copy `state` into `model`, refusing any shape mismatch; strict also refuses missing or
    unexpected keys, else what fits loads and the report names the rest."""
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
    """The weights of the checkpoint file `path` into `model` (`load_state_into`)."""
    state = extract_state_dict(read_checkpoint(path), path)
    return load_state_into(model, state, path, strict=strict)


def bert_key_to_model_key(key: str) -> str:
    """`bert.encoder.layer.0...gamma` (Hugging Face / Google BERT) -> our name of that tensor."""
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if key.startswith("bert."):
        key = key[len("bert."):]
    if key.startswith("cls."):
        return MODEL_PREFIX + key
    return MODEL_PREFIX + "bert." + key


def load_bert_weights(model: nn.Module, path: Union[str, Path]) -> LoadReport:
    """The text stream and LM head of `model` from a Hugging Face BERT (a folder, `.safetensors` or
    `.bin`); the image stream keeps its initialisation, `report.unexpected` lists the BERT tensors
    without a place (ViLBERT has no tanh pooler)."""
    file = Path(path)
    if file.is_dir():
        found = [candidate for candidate in (file / "model.safetensors", file / "pytorch_model.bin")
                 if candidate.is_file()]
        if not found:
            raise UserError(f"{file}: no model.safetensors or pytorch_model.bin in this folder")
        file = found[0]
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        file = input_file(file, "BERT checkpoint")
        try:
            state = load_file(str(file))
        except (SafetensorError, OSError) as error:
            raise UserError(f"{file}: not a safetensors file ({error})") from None
        check_tensors(state, file, "not a BERT checkpoint")
    else:
        state = extract_state_dict(read_checkpoint(file), file)
    state = {bert_key_to_model_key(key): value for key, value in state.items()}
    return load_state_into(model, state, path, strict=False)
