"""Command-line options of train.py (and the argument groups evaluate.py reuses).

Every flag of the reference's options.py keeps its single-dash name, meaning and default (except
`-visdom_server`, which defaults to localhost instead of the authors' lab machine); each also has a
double-dash alias (`--batch_size`). `-config preset.yml` reads defaults from a YAML file whose keys
are flag names (`batch_size: 80`); flags given on the command line override the preset.

    parser = build_train_parser()
    options = parse_options(parser, sys.argv[1:], TrainOptions)   # a typed TrainOptions
    problems = validate_train_options(options)                      # one line per problem
"""
import argparse
import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence, TypeVar

import yaml

from utils.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MODEL_TYPES = ("vilbert", "language_only")
MODES = ("base", "dense")
NAN_POLICIES = ("stop", "skip")


def add_flag(group, name: str, **kwargs) -> None:
    """Add `-name` with the alias `--name` (the reference's single-dash spelling stays canonical)."""
    group.add_argument(f"-{name}", f"--{name}", dest=name, **kwargs)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Data files, tokenizer and dataset shape flags (shared by train.py and evaluate.py)."""
    group = parser.add_argument_group("data")
    add_flag(group, "visdial_processed_train", default="data/visdial/visdial_1.0_train_processed.json",
         help="json file with the preprocessed train split")
    add_flag(group, "visdial_processed_val", default="data/visdial/visdial_1.0_val_processed.json",
         help="json file with the preprocessed val split")
    add_flag(group, "visdial_processed_test", default="data/visdial/visdial_1.0_test_processed.json",
         help="json file with the preprocessed test split")
    add_flag(group, "visdial_image_feats", default="data/visdial/visdial_img_feat.lmdb",
         help="image features of all splits (LMDB folder or .h5 file)")
    add_flag(group, "visdial_processed_train_dense",
         default="data/visdial/visdial_1.0_train_dense_processed.json",
         help="train dialogs that have dense annotations")
    add_flag(group, "visdial_processed_train_dense_annotations",
         default="data/visdial/visdial_1.0_train_dense_annotations_processed.json",
         help="dense annotations of some train dialogs")
    add_flag(group, "visdial_processed_val_dense_annotations",
         default="data/visdial/visdial_1.0_val_dense_annotations_processed.json",
         help="dense annotations of the val split")
    add_flag(group, "vocab", default="data/bert-base-uncased/vocab.txt",
         help="BERT WordPiece vocabulary: a vocab.txt, a folder, or a Hugging Face hub name "
              "(default: where scripts/download_preprocessed.sh puts it)")
    add_flag(group, "num_options", type=int, default=100, help="answer options per round (2..100)")
    add_flag(group, "visdial_tot_rounds", type=int, default=11,
         help="rounds kept in a sequence, the caption counting as one (at most 11)")
    add_flag(group, "max_seq_len", type=int, default=256, help="maximum length of a dialog sequence")
    add_flag(group, "num_train_samples", type=int, default=0, help="train dialogs to use, 0 for all")
    add_flag(group, "num_val_samples", type=int, default=0, help="val dialogs to use, 0 for all")
    add_flag(group, "overfit", action="store_true", help="use a handful of dialogs (debugging)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model to build and which weights to start from."""
    group = parser.add_argument_group("model")
    add_flag(group, "model_config", default="config/bert_base_6layer_6conect.json",
         help="model definition (the reference's JSON config schema)")
    add_flag(group, "model_type", choices=MODEL_TYPES, default="vilbert",
         help="vilbert (the paper's model) or language_only (the text-only baseline)")
    add_flag(group, "start_path", default="", help="checkpoint to start from (weights only, unless -continue)")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Devices, precision and data-loading workers."""
    group = parser.add_argument_group("runtime")
    add_flag(group, "n_gpus", type=int, default=8,
         help="GPUs of the job (kept for users' scripts; processes come from torchrun)")
    add_flag(group, "num_workers", type=int, default=8, help="DataLoader worker processes")
    add_flag(group, "precision", choices=PRECISIONS, default="auto",
         help="autocast precision; auto = bf16 on GPUs that support it, else fp32")
    add_flag(group, "compile", action="store_true", help="compile the model with torch.compile")


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """Visdom (the reference's logger) and TensorBoard."""
    group = parser.add_argument_group("logging")
    add_flag(group, "enable_visdom", type=int, default=0, help="1 to log to a visdom server")
    add_flag(group, "visdom_env", type=str, default="", help="visdom environment name")
    add_flag(group, "visdom_server", type=str, default="http://localhost", help="visdom server address")
    add_flag(group, "visdom_server_port", type=int, default=7777, help="visdom server port")
    add_flag(group, "tensorboard", type=int, default=0,
         help="1 to write TensorBoard event files to <run folder>/tensorboard")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimisation, objective and checkpointing flags of train.py."""
    group = parser.add_argument_group("training")
    add_flag(group, "mode", choices=MODES, default="base",
         help="base: MLM + NSP + masked regions; dense: dense-annotation finetuning")
    add_flag(group, "batch_size", type=int, default=80, help="sequences per iteration")
    add_flag(group, "batch_multiply", type=int, default=1,
         help="iterations whose gradients are accumulated into one optimizer step")
    add_flag(group, "num_epochs", type=int, default=20, help="total number of epochs")
    add_flag(group, "max_iterations", type=int, default=0,
         help="stop after this many iterations in total (0: run all epochs)")
    add_flag(group, "lr", type=float, default=2e-5, help="learning rate of the language parameters")
    add_flag(group, "image_lr", type=float, default=2e-5, help="learning rate of all other parameters")
    add_flag(group, "min_lr", type=float, default=1e-5, help="floor of every learning rate (reference: 1e-5)")
    add_flag(group, "warmup_steps", type=int, default=10000, help="iterations of linear warm-up")
    add_flag(group, "total_steps", type=int, default=200000, help="iteration where the linear decay ends")
    add_flag(group, "grad_clip", type=float, default=0.0, help="clip the gradient norm to this (0: off)")
    add_flag(group, "sequences_per_image", type=int, default=8,
         help="sequences sampled from an image per iteration (at most 8)")
    add_flag(group, "num_negative_samples", type=int, default=1,
         help="random answers per true answer for the NSP loss")
    add_flag(group, "mask_prob", type=float, default=0.15, help="probability of masking a token")
    add_flag(group, "lm_loss_coeff", type=float, default=1.0, help="weight of the masked-LM loss")
    add_flag(group, "nsp_loss_coeff", type=float, default=1.0, help="weight of the NSP loss")
    add_flag(group, "img_loss_coeff", type=float, default=1.0, help="weight of the masked-region loss")
    add_flag(group, "dense_chunk", type=int, default=20,
         help="dense mode: sequences per forward pass (sets peak memory; the loss stays exact)")
    add_flag(group, "bert_init", default="", help="initialise the text stream from a Hugging Face BERT")
    add_flag(group, "seed", type=int, default=0, help="seed of every random number generator")
    add_flag(group, "save_path", default="checkpoints/", help="folder that holds run folders")
    add_flag(group, "save_name", default="",
         help="run folder name inside -save_path (default: a time stamp)")
    add_flag(group, "continue", action="store_true",
         help="resume exactly from the newest checkpoint of the run folder (or -start_path when it has none)")
    add_flag(group, "keep_checkpoints", type=int, default=3,
         help="keep this many newest checkpoints (plus the best by val MRR)")
    add_flag(group, "nan_policy", choices=NAN_POLICIES, default="stop",
         help="on a non-finite loss: stop (default) or skip the step")
    add_flag(group, "skip_bad_records", action="store_true",
         help="count and skip unreadable records instead of stopping")
    add_flag(group, "val_every", type=int, default=0,
         help="validate every this many iterations (0: as the reference, every 8 // sequences_per_image "
              "epochs, every epoch in dense mode; -1: never)")
    add_flag(group, "log_every", type=int, default=10, help="print and plot the losses every this many iterations")


@dataclasses.dataclass(frozen=True)
class SharedOptions:
    """The data, model and runtime options of train.py and evaluate.py (field names are the
    flag names of `add_data_arguments`, `add_model_arguments` and `add_runtime_arguments`)."""
    visdial_processed_train: str
    visdial_processed_val: str
    visdial_processed_test: str
    visdial_image_feats: str
    visdial_processed_train_dense: str
    visdial_processed_train_dense_annotations: str
    visdial_processed_val_dense_annotations: str
    vocab: str
    num_options: int
    visdial_tot_rounds: int
    max_seq_len: int
    num_train_samples: int
    num_val_samples: int
    overfit: bool
    model_config: str
    model_type: str
    start_path: str
    n_gpus: int
    num_workers: int
    precision: str
    compile: bool


@dataclasses.dataclass(frozen=True)
class TrainOptions(SharedOptions):
    """The resolved options of one training run (field names are the flag names)."""
    enable_visdom: int
    visdom_env: str
    visdom_server: str
    visdom_server_port: int
    tensorboard: int
    mode: str
    batch_size: int
    batch_multiply: int
    num_epochs: int
    max_iterations: int
    lr: float
    image_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    grad_clip: float
    sequences_per_image: int
    num_negative_samples: int
    mask_prob: float
    lm_loss_coeff: float
    nsp_loss_coeff: float
    img_loss_coeff: float
    dense_chunk: int
    bert_init: str
    seed: int
    save_path: str
    save_name: str
    resume: bool
    keep_checkpoints: int
    nan_policy: str
    skip_bad_records: bool
    val_every: int
    log_every: int
    config: str = ""

    def to_dict(self) -> dict:
        """Flag name -> value (`-continue` under its flag name), e.g. for config.yml."""
        values = dataclasses.asdict(self)
        values["continue"] = values.pop("resume")
        return values


def build_train_parser() -> argparse.ArgumentParser:
    """The full argument parser of train.py."""
    parser = argparse.ArgumentParser(
        description="Train visdial-bert (base objective or dense-annotation finetuning)")
    add_flag(parser, "config", default="", help="YAML preset of flag values (command-line flags override it)")
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_runtime_arguments(parser)
    add_logging_arguments(parser)
    add_training_arguments(parser)
    return parser


def _apply_preset(parser: argparse.ArgumentParser, path: str) -> None:
    """Use the values of a YAML preset as the parser's defaults, converted by each flag's type."""
    preset_file = Path(path)
    try:
        preset = yaml.safe_load(preset_file.read_text())
    except OSError as error:
        raise UserError(f"{path}: cannot read the preset ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if preset is None:
        return
    if not isinstance(preset, dict):
        raise UserError(f"{path}: a preset must be a mapping of flag names to values")
    actions = {action.dest: action for action in parser._actions}
    defaults = {}
    for key, value in preset.items():
        action = actions.get(str(key))
        if action is None or key in ("config", "help"):
            raise UserError(f"{path}: unknown option '{key}'")
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise UserError(f"{path}: option '{key}' must be true or false, got {value!r}")
        elif value is not None and action.type is not None:
            try:
                value = action.type(str(value))
            except ValueError:
                raise UserError(f"{path}: option '{key}' expects {action.type.__name__}, got {value!r}") from None
        if action.choices is not None and value not in action.choices:
            raise UserError(f"{path}: option '{key}' must be one of {', '.join(action.choices)}, got {value!r}")
        defaults[key] = value
    parser.set_defaults(**defaults)


OptionsT = TypeVar("OptionsT")


def parse_options(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                  options_type: type[OptionsT]) -> OptionsT:
    """Parse argv (after the `-config` preset, if any) into `options_type` (a dataclass whose
    fields are the parser's destinations; a `continue` flag lands in the field `resume`)."""
    preliminary = argparse.ArgumentParser(add_help=False)
    add_flag(preliminary, "config", default="")
    known, _ = preliminary.parse_known_args(argv)
    if known.config:
        _apply_preset(parser, known.config)
    values = vars(parser.parse_args(argv))
    if "continue" in values:
        values["resume"] = values.pop("continue")
    return options_type(**values)


def validate_data_options(options) -> list[str]:
    """Problems with the data-shape flags, one line each (empty when all is well)."""
    problems = []
    if not 2 <= options.num_options <= 100:
        problems.append(f"-num_options must be in 2..100, got {options.num_options}")
    if not 2 <= options.visdial_tot_rounds <= 11:
        problems.append(f"-visdial_tot_rounds must be in 2..11 (the caption counts as a round), "
                        f"got {options.visdial_tot_rounds}")
    if not 8 <= options.max_seq_len <= 512:
        problems.append(f"-max_seq_len must be in 8..512, got {options.max_seq_len}")
    for name in ("num_train_samples", "num_val_samples"):
        if getattr(options, name, 0) < 0:
            problems.append(f"-{name} must be >= 0, got {getattr(options, name)}")
    return problems


def validate_runtime_options(options) -> list[str]:
    """Problems with the runtime flags, one line each."""
    problems = []
    if options.n_gpus < 1:
        problems.append(f"-n_gpus must be >= 1, got {options.n_gpus}")
    if options.num_workers < 0:
        problems.append(f"-num_workers must be >= 0, got {options.num_workers}")
    return problems


def validate_train_options(options: TrainOptions) -> list[str]:
    """Every problem with the options of train.py, one line each (empty when all is well)."""
    problems = validate_data_options(options) + validate_runtime_options(options)
    positive = ("batch_size", "batch_multiply", "num_epochs", "dense_chunk", "keep_checkpoints",
                "log_every", "total_steps")
    for name in positive:
        if getattr(options, name) < 1:
            problems.append(f"-{name} must be >= 1, got {getattr(options, name)}")
    for name in ("max_iterations", "warmup_steps"):
        if getattr(options, name) < 0:
            problems.append(f"-{name} must be >= 0, got {getattr(options, name)}")
    if options.val_every < -1:
        problems.append(f"-val_every must be -1 (never), 0 (as the reference) or positive, got {options.val_every}")
    if not 1 <= options.sequences_per_image <= 8:
        problems.append(f"-sequences_per_image must be in 1..8, got {options.sequences_per_image}")
    elif options.mode == "base" and options.batch_size >= 1 and options.batch_size % options.sequences_per_image:
        problems.append(f"-batch_size must be a multiple of -sequences_per_image ({options.sequences_per_image}) "
                        f"in base mode, got {options.batch_size}")
    # with a bad -num_options this range is meaningless: report only -num_options
    if options.num_options >= 2 and not 0 <= options.num_negative_samples <= options.num_options - 1:
        problems.append(f"-num_negative_samples must be in 0..num_options-1 ({options.num_options - 1}), "
                        f"got {options.num_negative_samples}")
    if not 0.0 <= options.mask_prob <= 1.0:
        problems.append(f"-mask_prob must be in [0, 1], got {options.mask_prob}")
    for name in ("lr", "image_lr", "min_lr", "grad_clip", "lm_loss_coeff", "nsp_loss_coeff", "img_loss_coeff"):
        value = getattr(options, name)
        if not math.isfinite(value) or value < 0:
            problems.append(f"-{name} must be a finite number >= 0, got {value}")
    if options.lr <= 0 and options.image_lr <= 0:
        problems.append("-lr and -image_lr are both 0: nothing would be trained")
    if options.resume and not (options.start_path or options.save_name):
        problems.append("-continue needs -save_name (the run folder to resume) or -start_path (a checkpoint)")
    return problems
