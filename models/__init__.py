"""Models: the ViLBERT dialog encoder of the paper and the language-only baseline."""
from pathlib import Path
from typing import Union

from torch import nn

from models.config import BertConfig
from models.language_only import LanguageOnlyDialogEncoder
from models.vilbert import EncoderOutput, VisualDialogEncoder

MODEL_TYPES = {"vilbert": VisualDialogEncoder, "language_only": LanguageOnlyDialogEncoder}


def build_model(config: Union[str, Path, BertConfig], model_type: str = "vilbert") -> nn.Module:
    """Build a freshly initialised model from a config (or the path of its JSON file)."""
    if not isinstance(config, BertConfig):
        config = BertConfig.from_json_file(config)
    return MODEL_TYPES[model_type](config)


__all__ = ["BertConfig", "EncoderOutput", "LanguageOnlyDialogEncoder", "MODEL_TYPES",
           "VisualDialogEncoder", "build_model"]
