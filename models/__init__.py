"""Models: the ViLBERT dialog encoder of the paper and the language-only baseline, by model type."""
from pathlib import Path
from typing import Optional, Union

from torch import nn

from models.config import BertConfig
from models.language_only import LanguageOnlyDialogEncoder
from models.vilbert import EncoderOutput, VisualDialogEncoder
from utils.errors import UserError

MODEL_TYPES = {"vilbert": VisualDialogEncoder, "language_only": LanguageOnlyDialogEncoder}
"""-model_type name -> model class. A class declares what the rest of the code needs of it: its
config checks against the data (`check_fits_data`) and its learning-rate groups by parameter name
(LANGUAGE_PARAMETERS, IMAGE_LR_PARAMETERS; models/optimizer.py). A new model is one file of
models/ and one entry here."""


def model_class(model_type: str) -> type:
    """The class of `model_type`; UserError naming the known types for another name."""
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise UserError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return MODEL_TYPES[model_type]


def checked_model_config(path: Union[str, Path], model_type: str, vocabulary_size: int, vocab, max_seq_len: int,
                         features=None, num_classes: Optional[int] = None) -> BertConfig:
    """The model config at `path`, checked by `model_type`'s class against the vocabulary `vocab`
    (of `vocabulary_size` ids), `max_seq_len` and the feature store `features` (an open reader of
    dataloader/feature_store.py with `num_classes` class probabilities per box; None: no store to
    check against); UserError naming the config and the data file otherwise."""
    config = BertConfig.from_json_file(path)
    model_class(model_type).check_fits_data(config, vocabulary_size, str(vocab), max_seq_len, features, num_classes)
    return config


def build_model(config: Union[str, Path, BertConfig], model_type: str = "vilbert") -> nn.Module:
    """Build a freshly initialised model from a config (or the path of its JSON file)."""
    if not isinstance(config, BertConfig):
        config = BertConfig.from_json_file(config)
    return model_class(model_type)(config)


__all__ = ["BertConfig", "EncoderOutput", "LanguageOnlyDialogEncoder", "MODEL_TYPES", "VisualDialogEncoder",
           "build_model", "checked_model_config", "model_class"]
