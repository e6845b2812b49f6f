"""Model configuration in the reference's JSON schema (`config/bert_base_6layer_6conect.json`), checked
when read and, before a model is built, against the data (`check_fits_data`)."""
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from utils.errors import UserError, report_problems
from utils.inputs import SMALL_FILE_BYTES, read_json

ACTIVATIONS = ("gelu", "relu", "swish")
AT_LEAST_ONE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "v_feature_size", "v_target_size", "v_hidden_size",
                "v_num_hidden_layers", "v_num_attention_heads", "v_intermediate_size", "bi_hidden_size",
                "bi_num_attention_heads", "bi_intermediate_size")
PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "v_hidden_dropout_prob",
                 "v_attention_probs_dropout_prob")
NOT_NEGATIVE = ("initializer_range", "v_initializer_range", "fixed_v_layer", "fixed_t_layer")
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              List[int]: "a list of integers"}


@dataclass
class BertConfig:
    """Hyper-parameters of the two-stream ViLBERT (and of the language-only baseline). Field names and
    defaults are the reference's, so every released config loads unchanged (docs/reference.md: the
    fields read but unused).

    Example
    -------
    >>> config = BertConfig.from_json_file("config/bert_base_6layer_6conect.json")
    >>> config.num_hidden_layers, config.v_num_hidden_layers
    (12, 6)
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    v_feature_size: int = 2048
    v_target_size: int = 1601
    v_hidden_size: int = 768
    v_num_hidden_layers: int = 3
    v_num_attention_heads: int = 12
    v_intermediate_size: int = 3072
    bi_hidden_size: int = 1024
    bi_num_attention_heads: int = 16
    bi_intermediate_size: int = 1024
    bi_attention_type: int = 1
    v_attention_probs_dropout_prob: float = 0.1
    v_hidden_act: str = "gelu"
    v_hidden_dropout_prob: float = 0.1
    v_initializer_range: float = 0.2
    v_biattention_id: List[int] = field(default_factory=lambda: [0, 1])
    t_biattention_id: List[int] = field(default_factory=lambda: [10, 11])
    predict_feature: bool = False
    fast_mode: bool = False
    fixed_v_layer: int = 0
    fixed_t_layer: int = 0
    in_batch_pairs: bool = False
    fusion_method: str = "mul"
    pooling_method: str = "mul"
    intra_gate: bool = False
    with_coattention: bool = True
    # for error messages; not part of the JSON schema
    source: str = field(default="config", repr=False, compare=False)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "BertConfig":
        """Build and validate a config from a dict; unknown keys are an error naming `source`."""
        known = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{source}: unknown model config key(s) {', '.join(unknown)}")
        config = cls(**values, source=source)
        config.validate()
        return config

    @classmethod
    def from_json_file(cls, path: Union[str, Path]) -> "BertConfig":
        """Read a JSON model config (the reference's schema)."""
        path = Path(path)
        values = read_json(path, "model config", max_bytes=SMALL_FILE_BYTES)
        if not isinstance(values, dict):
            raise UserError(f"{path}: a model config must be a JSON object")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        """The JSON schema's fields and values."""
        values = dataclasses.asdict(self)
        values.pop("source")
        return values

    def _fail(self, problem: str) -> None:
        raise UserError(f"{self.source}: {problem}")

    def validate(self) -> None:
        """UserError for a field of the wrong type or range, or text-stream settings the model cannot build."""
        for spec in dataclasses.fields(self):
            if spec.name != "source":
                self._check_field(spec.name, spec.type, getattr(self, spec.name))
        if self.hidden_act not in ACTIVATIONS:
            self._fail(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            self._fail(f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                       f"({self.num_attention_heads})")

    def _check_field(self, name: str, kind, value) -> None:
        if kind is float:
            right_type = type(value) in (int, float) and math.isfinite(value)
        elif kind == List[int]:
            right_type = type(value) is list and all(type(item) is int for item in value)
        else:
            right_type = type(value) is kind
        if not right_type:
            self._fail(f"{name} must be {TYPE_NAMES[kind]}, got {value!r}")
        if name in AT_LEAST_ONE and value < 1:
            self._fail(f"{name} must be at least 1, got {value}")
        if name == "type_vocab_size" and value < 2:
            self._fail(f"type_vocab_size must be at least 2 (segment ids 0 and 1), got {value}")
        if name in PROBABILITIES and not 0 <= value <= 1:
            self._fail(f"{name} must be in [0, 1], got {value}")
        if (name in NOT_NEGATIVE or kind == List[int]) and min(value if kind == List[int] else [value], default=0) < 0:
            self._fail(f"{name} must not be negative, got {value}")

    def check_fits_data(self, vocab_size: int, vocab: str, max_seq_len: int, feature_size: Optional[int] = None,
                        features: str = "", num_classes: Optional[int] = None) -> None:
        """UserError, one line per problem, when the vocabulary `vocab` (`vocab_size` ids), -max_seq_len or
        the feature store `features` (`feature_size`-d, `num_classes` class probabilities) do not fit."""
        problems = []
        if self.vocab_size < vocab_size:
            problems.append(f"{self.source}: vocab_size {self.vocab_size} is smaller than the {vocab_size} token ids "
                            f"of {vocab}")
        if self.max_position_embeddings < max_seq_len:
            problems.append(f"{self.source}: max_position_embeddings {self.max_position_embeddings} is smaller than "
                            f"-max_seq_len {max_seq_len}")
        if feature_size is not None and self.v_feature_size != feature_size:
            problems.append(f"{self.source}: v_feature_size {self.v_feature_size} does not match the "
                            f"{feature_size}-d features of {features}")
        if num_classes is not None and self.v_target_size != num_classes:
            problems.append(f"{self.source}: v_target_size {self.v_target_size} does not match the {num_classes} "
                            f"class probabilities per box of {features}")
        report_problems(problems)

    def validate_two_stream(self) -> None:
        """UserError for image-stream and co-attention settings ViLBERT cannot build."""
        fail = self._fail
        if self.v_hidden_act not in ACTIVATIONS:
            fail(f"v_hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.v_hidden_act!r}")
        for hidden, heads in (("v_hidden_size", "v_num_attention_heads"),
                              ("bi_hidden_size", "bi_num_attention_heads")):
            if getattr(self, hidden) % getattr(self, heads) != 0:
                fail(f"{hidden} ({getattr(self, hidden)}) is not a multiple of {heads} "
                     f"({getattr(self, heads)})")
        if len(self.v_biattention_id) != len(self.t_biattention_id):
            fail("v_biattention_id and t_biattention_id must have the same length")
        for ids, layers in (("v_biattention_id", "v_num_hidden_layers"), ("t_biattention_id", "num_hidden_layers")):
            if getattr(self, ids) and max(getattr(self, ids)) >= getattr(self, layers):
                fail(f"{ids} {getattr(self, ids)} must be below {layers} ({getattr(self, layers)})")
        for ids in (self.v_biattention_id, self.t_biattention_id):
            if list(ids) != sorted(ids):
                fail(f"co-attention positions must be increasing, got {ids}")
        if self.v_biattention_id and (self.fixed_v_layer > self.v_biattention_id[0]
                                      or self.fixed_t_layer > self.t_biattention_id[0]):
            fail("fixed_v_layer / fixed_t_layer must not pass the first co-attention layer")
        if self.fusion_method not in ("mul", "sum"):
            fail(f"fusion_method must be 'mul' or 'sum', got {self.fusion_method!r}")
        if self.in_batch_pairs:
            fail("in_batch_pairs is not supported: every dialog sequence is scored with its own image")
        if self.fast_mode:
            fail("fast_mode is not supported: every dialog sequence is scored with its own image "
                 "(in the reference it changed no output)")
