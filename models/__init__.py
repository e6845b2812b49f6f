"""Models: the ViLBERT dialog encoder of the paper and the language-only baseline, by model type."""
from pathlib import Path
from typing import Callable, Optional, Union

from torch import nn

from models.config import BertConfig
from models.language_only import LanguageOnlyDialogEncoder
from models.vilbert import EncoderOutput, VisualDialogEncoder
from models.weights import load_bert_weights, load_model_weights
from utils.errors import UserError

MODEL_TYPES = {"vilbert": VisualDialogEncoder, "language_only": LanguageOnlyDialogEncoder}
"""-model_type name -> model class; a class declares its config checks (`check_fits_data`) and its
learning-rate groups (LANGUAGE_PARAMETERS, IMAGE_LR_PARAMETERS). A new model: one file, one entry."""


def model_class(model_type: str) -> type:
    """The class of `model_type`; UserError naming the known types for another name."""
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise UserError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return MODEL_TYPES[model_type]


def checked_model_config(path: Union[str, Path], model_type: str, vocabulary_size: int, vocab, max_seq_len: int,
                         features=None, num_classes: Optional[int] = None) -> BertConfig:
    """The model config at `path`, checked by `model_type`'s class against the vocabulary `vocab` (of
    `vocabulary_size` ids), `max_seq_len` and the open feature store `features` (None: not checked)
    with `num_classes` class probabilities per box; UserError naming the config and the data file."""
    config = BertConfig.from_json_file(path)
    model_class(model_type).check_fits_data(config, vocabulary_size, str(vocab), max_seq_len, features, num_classes)
    return config


def build_model(config: Union[str, Path, BertConfig], model_type: str = "vilbert",
                checkpoint: Union[str, Path, None] = None, *, strict: bool = True,
                bert_init: Union[str, Path, None] = None, say: Optional[Callable[[str], None]] = None) -> nn.Module:
    """A freshly initialised `model_type` model of `config` (a BertConfig or its JSON file), then the
    text stream of the Hugging Face BERT `bert_init`, then the weights of `checkpoint` (strict: every
    key must fit; else what fits, the rest named). `say` gets each load report; UserError naming the
    file for a config or checkpoint that does not fit."""
    if not isinstance(config, BertConfig):
        config = BertConfig.from_json_file(config)
    model = model_class(model_type)(config)
    say = say or (lambda report: None)
    if bert_init:
        say(load_bert_weights(model, bert_init).describe(bert_init))
    if checkpoint:
        say(load_model_weights(model, checkpoint, strict=strict).describe(checkpoint))
    return model


__all__ = ["BertConfig", "EncoderOutput", "LanguageOnlyDialogEncoder", "MODEL_TYPES", "VisualDialogEncoder",
           "build_model", "checked_model_config", "model_class"]
