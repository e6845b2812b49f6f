"""Command-line options: one typed, validated dataclass per program, one `flag(...)` field per flag,
from which the parser, the YAML preset reader and the checks are built.

    options = parse_options(sys.argv[1:], TrainOptions)   # a typed TrainOptions
    report_problems(options.problems())                    # one `error:` line per problem
"""
import argparse
import dataclasses
import math
import os
from numbers import Integral, Real
from typing import Optional, Sequence, TypeVar

import torch
import yaml

from dataloader.feature_record import NUM_CLASSES
from dataloader.visdial_json import EVALUATED_SPLITS, NUM_ANSWER_OPTIONS, SPLITS
from models import MODEL_TYPES, BertConfig, checked_model_config
from models.losses import DENSE_LOSSES
from utils.errors import ArgumentParser, UserError, report_problems
from utils.outputs import resolved
from utils.inputs import SMALL_FILE_BYTES, read_text

MODES = ("base", "dense")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""-precision name -> autocast dtype (None: no autocast); the flag also takes `auto` (`resolve_precision`)."""
NAN_POLICIES = ("stop", "skip")

# What `-continue` does when a flag differs from the value saved in the checkpoint:
EXACT = "exact"        # refused: the run would not continue as it would have without the stop
NOTED = "noted"        # a warning: the continuation is the same, something around it changes
FREE = "free"          # nothing to say: how long to run, where to save, where to resume from

CPU_COUNT = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
"""The CPUs this process may use: the most DataLoader workers that make sense (-num_workers)."""


def resolve_precision(name: str, device: torch.device, evaluation: bool = False) -> str:
    """The one meaning of a -precision value on `device`, for every entry point: `auto` is bf16 for
    training on a GPU that supports it, else fp32 (evaluation: docs/performance.md). UserError for
    fp16 off a CUDA device and for a name that is neither auto nor one of PRECISIONS."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() and not evaluation else "fp32"
    if not isinstance(name, str) or name not in PRECISIONS:
        raise UserError(f"-precision must be auto or one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise UserError("-precision fp16 needs a CUDA device (use fp32 or bf16 on the CPU)")
    return name


def flag(default, help: str, group: Optional[str], *, choices: Sequence = (), at_least=None,
         at_most=None, note: str = "", wanted: str = "", on_resume: str = EXACT,
         name: str = "", is_input: bool = False, item_type: Optional[type] = None):
    """A dataclass field that is also a flag `-<name>` / `--<name>` (name: the field's, unless given).
    at_least / at_most: the range `problems()` checks (floats also finite); `note` is appended to its
    message, `wanted` replaces its wording. on_resume: EXACT, NOTED or FREE. is_input: a file or
    folder the program reads (no output may overwrite it). item_type: one or more values (a tuple)."""
    metadata = dict(help=help, group=group, choices=tuple(choices), at_least=at_least, at_most=at_most,
                    note=note, wanted=wanted, on_resume=on_resume, name=name, is_input=is_input,
                    item_type=item_type)
    return dataclasses.field(default=default, metadata=metadata)


def same_flag(options_type: type, name: str) -> dataclasses.Field:
    """The flag `name` of another options dataclass, with the same default, help and checks."""
    field = options_type.__dataclass_fields__[name]
    return dataclasses.field(default=field.default, metadata=field.metadata)


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a field: its name without the dash (`continue` for the field `resume`)."""
    return field.metadata["name"] or field.name


def _range_problem(field: dataclasses.Field, value, name: str = "") -> Optional[str]:
    """`-name must be ..., got value` when `value` is outside the field's range (`name`: a Python parameter's)."""
    low, high = field.metadata["at_least"], field.metadata["at_most"]
    if (low is None and high is None) or field.metadata["item_type"] is not None:
        return None
    if isinstance(value, float):
        inside = math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
        wanted = f"in [{low:g}, {high:g}]" if high is not None else f"a finite number >= {low:g}"
    else:
        inside = (low is None or value >= low) and (high is None or value <= high)
        wanted = f"in {low}..{high}" if high is not None else f">= {low}"
    if inside:
        return None
    return (f"{name or '-' + flag_name(field)} must be {field.metadata['wanted'] or wanted}{field.metadata['note']}, "
            f"got {value}")


KINDS = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}
"""How a message names the type of a flag's value."""


def check_parameters(options_type: type, **parameters) -> None:
    """Check Python API parameters as their flags are checked: `name=(field, value)` is a parameter,
    the field of `options_type` whose flag it stands for, and its value. UserError, one line each
    naming the parameter, for a value of another type than the flag's or outside its range."""
    problems = []
    for name, (field_name, value) in parameters.items():
        field = options_type.__dataclass_fields__[field_name]
        kind = {int: Integral, float: Real}.get(field.type, field.type)
        if not isinstance(value, kind) or isinstance(value, bool) and field.type is not bool:
            problems.append(f"{name} must be {KINDS[field.type]}, got {value!r}")
        elif problem := _range_problem(field, value, name):
            problems.append(problem)
    report_problems(problems)


N_GPUS_DEFAULT = 8
"""The reference's -n_gpus default."""


@dataclasses.dataclass(frozen=True)
class FlagOptions:
    """Options of a command line, one flag per field (`flag`): their problems and input paths."""

    DESCRIPTION = ""

    def problems(self) -> list[str]:
        """Every problem with these options, one line each (empty when all is well)."""
        return [problem for field in dataclasses.fields(self)
                if (problem := _range_problem(field, getattr(self, field.name))) is not None]

    def input_paths(self) -> dict[str, str]:
        """`-flag` -> path of every file or folder given to an input flag (`is_input`); a flag of
        several values gives `-flag (path)` -> path for each."""
        paths = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (field.metadata["is_input"] and value):
                continue
            if field.metadata["item_type"] is None:
                paths[f"-{flag_name(field)}"] = value
            else:
                paths.update({f"-{flag_name(field)} ({path})": path for path in value})
        return paths


@dataclasses.dataclass(frozen=True)
class SharedOptions(FlagOptions):
    """The preset, data, model and runtime flags of train.py and evaluate.py."""

    config: str = flag("", "YAML preset of flag values (command-line flags override it)", None, on_resume=FREE,
                       is_input=True)
    # data
    visdial_processed_train: str = flag("data/visdial/visdial_1.0_train_processed.json",
                                        "json file with the preprocessed train split", "data", is_input=True)
    visdial_processed_val: str = flag("data/visdial/visdial_1.0_val_processed.json",
                                      "json file with the preprocessed val split", "data", on_resume=NOTED,
                                      is_input=True)
    visdial_processed_test: str = flag("data/visdial/visdial_1.0_test_processed.json",
                                       "json file with the preprocessed test split", "data", on_resume=FREE,
                                       is_input=True)
    visdial_image_feats: str = flag("data/visdial/visdial_img_feat.lmdb",
                                    "image features of all splits (LMDB folder or .h5 file)", "data", is_input=True)
    visdial_processed_train_dense: str = flag("data/visdial/visdial_1.0_train_dense_processed.json",
                                              "train dialogs that have dense annotations", "data", is_input=True)
    visdial_processed_train_dense_annotations: str = flag(
        "data/visdial/visdial_1.0_train_dense_annotations_processed.json",
        "dense annotations of some train dialogs", "data", is_input=True)
    visdial_processed_val_dense_annotations: str = flag(
        "data/visdial/visdial_1.0_val_dense_annotations_processed.json",
        "dense annotations of the val split", "data", on_resume=NOTED, is_input=True)
    vocab: str = flag("data/bert-base-uncased/vocab.txt",
                      "BERT WordPiece vocabulary: a vocab.txt, a folder, or a Hugging Face hub name", "data",
                      is_input=True)
    num_options: int = flag(100, "answer options per round (2..100)", "data", at_least=2, at_most=100)
    visdial_tot_rounds: int = flag(11, "rounds kept in a sequence, the caption counting as one (at most 11)",
                                   "data", at_least=2, at_most=11, note=" (the caption counts as a round)")
    max_seq_len: int = flag(256, "maximum length of a dialog sequence", "data", at_least=8, at_most=512)
    num_train_samples: int = flag(0, "train dialogs to use, 0 for all", "data", at_least=0)
    num_val_samples: int = flag(0, "val dialogs to use, 0 for all", "data", at_least=0, on_resume=NOTED)
    overfit: bool = flag(False, "use a handful of dialogs (debugging)", "data")
    # model
    model_config: str = flag("config/bert_base_6layer_6conect.json",
                             "model definition (the reference's JSON config schema; -continue compares its "
                             "content, not its path)", "model", is_input=True)
    model_type: str = flag("vilbert", "vilbert (the paper's model) or language_only (the text-only baseline)",
                           "model", choices=MODEL_TYPES)
    start_path: str = flag("", "checkpoint to start from (weights only, unless -continue)", "model",
                           on_resume=FREE, is_input=True)
    # runtime
    n_gpus: int = flag(N_GPUS_DEFAULT, "accepted for the reference's scripts and otherwise ignored: the processes "
                          "come from torchrun", "runtime", at_least=1, on_resume=FREE)
    num_workers: int = flag(min(8, CPU_COUNT), "DataLoader worker processes (default: 8, or fewer CPUs)",
                            "runtime", at_least=0, at_most=CPU_COUNT,
                            note=" (the CPUs of this machine)", on_resume=NOTED)
    precision: str = flag("auto", "autocast precision; auto = bf16 for training on GPUs that support it, fp32 "
                                  "for evaluation and on the CPU", "runtime", choices=("auto", *PRECISIONS))
    compile: bool = flag(False, "compile the model with torch.compile", "runtime", on_resume=NOTED)

    def unused_flags(self, world_size: int) -> list[str]:
        """A `note:` line for each flag whose value means nothing in a run of `world_size` processes
        (accepted, as the reference's scripts and the presets give them, and stated, not refused).
        -n_gpus at its default (the reference's 8) is not stated: every run would print it."""
        if self.n_gpus in (world_size, N_GPUS_DEFAULT):
            return []
        return [f"note: -n_gpus {self.n_gpus} is not used: this run has {world_size} process(es), as torchrun "
                "started it (--nproc_per_node)"]

    def to_dict(self) -> dict:
        """Flag name -> value (e.g. `continue`, not the field name `resume`), as in config.yml."""
        return {flag_name(field): getattr(self, field.name) for field in dataclasses.fields(self)}

    def changes_since(self, saved: dict) -> tuple[list[str], list[str]]:
        """The flags whose value differs from `saved` (a `to_dict()` of earlier options), as
        `-name old -> new`: (those that break exact resume, those that are only noted)."""
        changes = {EXACT: [], NOTED: [], FREE: []}
        for field in dataclasses.fields(self):
            name, value = flag_name(field), getattr(self, field.name)
            if name in saved and saved[name] != value:
                changes[field.metadata["on_resume"]].append(f"-{name} {saved[name]!r} -> {value!r}")
        return changes[EXACT], changes[NOTED]


def model_config_for(options: SharedOptions, dataset) -> BertConfig:
    """-model_config, checked against the data the model will see (a dataset of dataloader/datasets.py):
    its vocabulary, -max_seq_len and the feature store; UserError naming the config and the data file."""
    return checked_model_config(options.model_config, options.model_type, dataset.vocabulary_size, options.vocab,
                                options.max_seq_len, dataset.features, NUM_CLASSES)


@dataclasses.dataclass(frozen=True)
class TrainOptions(SharedOptions):
    """The resolved options of one training run (field names are the flag names, but `resume`)."""

    DESCRIPTION = "Train visdial-bert (base objective or dense-annotation finetuning)"

    # logging
    enable_visdom: int = flag(0, "1 to log to a visdom server", "logging", on_resume=NOTED)
    visdom_env: str = flag("", "visdom environment name", "logging", on_resume=NOTED)
    visdom_server: str = flag("http://localhost", "visdom server address", "logging", on_resume=NOTED)
    visdom_server_port: int = flag(7777, "visdom server port", "logging", at_least=1, at_most=65535, on_resume=NOTED)
    tensorboard: int = flag(0, "1 to write TensorBoard event files to <run folder>/tensorboard", "logging",
                            on_resume=NOTED)
    # training
    mode: str = flag("base", "base: MLM + NSP + masked regions; dense: dense-annotation finetuning",
                     "training", choices=MODES)
    batch_size: int = flag(80, "sequences per iteration (base mode; dense mode takes one annotated round per "
                               "process and iteration)", "training", at_least=1)
    batch_multiply: int = flag(1, "iterations whose gradients are accumulated into one optimizer step",
                               "training", at_least=1)
    num_epochs: int = flag(20, "total number of epochs", "training", at_least=1, on_resume=FREE)
    max_iterations: int = flag(0, "stop after this many iterations in total (0: run all epochs)", "training",
                               at_least=0, on_resume=FREE)
    lr: float = flag(2e-5, "learning rate of the language parameters", "training", at_least=0.0)
    image_lr: float = flag(2e-5, "learning rate of all other parameters", "training", at_least=0.0)
    min_lr: float = flag(1e-5, "floor of every learning rate (reference: 1e-5)", "training", at_least=0.0)
    warmup_steps: int = flag(10000, "iterations of linear warm-up", "training", at_least=0)
    total_steps: int = flag(200000, "iteration where the linear decay ends", "training", at_least=1)
    grad_clip: float = flag(0.0, "clip the gradient norm to this (0: off)", "training", at_least=0.0)
    sequences_per_image: int = flag(8, "sequences sampled from an image per iteration (at most 8)", "training",
                                    at_least=1, at_most=8)
    num_negative_samples: int = flag(1, "random answers per true answer for the NSP loss", "training")
    mask_prob: float = flag(0.15, "probability of masking a token", "training", at_least=0.0, at_most=1.0)
    lm_loss_coeff: float = flag(1.0, "weight of the masked-LM loss", "training", at_least=0.0)
    nsp_loss_coeff: float = flag(1.0, "weight of the NSP loss", "training", at_least=0.0)
    img_loss_coeff: float = flag(1.0, "weight of the masked-region loss", "training", at_least=0.0)
    dense_chunk: int = flag(20, "dense mode: sequences per forward pass (sets peak memory; the loss stays exact)",
                            "training", at_least=1)
    dense_loss: str = flag("ce", "dense mode: the ranking loss over an annotated round's options: ce (the "
                                 "reference's), listmle or approxndcg (docs/training.md)", "training",
                           choices=DENSE_LOSSES)
    approxndcg_temperature: float = flag(1.0, "-dense_loss approxndcg: temperature of the smooth ranks (smaller: "
                                              "closer to NDCG, sparser gradients)", "training", at_least=1e-3)
    dense_target_temperature: float = flag(1.0, "-dense_loss ce: the target is softmax(relevance / this); 1.0 is the "
                                                "reference's, smaller is sharper (docs/training.md)", "training",
                                           at_least=1e-3)
    bert_init: str = flag("", "initialise the text stream from a Hugging Face BERT", "training", on_resume=FREE,
                           is_input=True)
    seed: int = flag(0, "seed of every random number generator", "training", at_least=0, at_most=2**32 - 1)
    save_path: str = flag("checkpoints/", "folder that holds run folders", "training", on_resume=FREE)
    save_name: str = flag("", "run folder name inside -save_path (default: a time stamp)", "training",
                          on_resume=FREE)
    resume: bool = flag(False, "resume exactly from -start_path, or without it from the newest checkpoint of "
                               "the run folder", "training", on_resume=FREE, name="continue")
    keep_checkpoints: int = flag(3, "keep this many newest checkpoints (plus the best by val MRR)", "training",
                                 at_least=1, on_resume=NOTED)
    nan_policy: str = flag("stop", "on a non-finite loss: stop (default) or skip the step", "training",
                           choices=NAN_POLICIES, on_resume=NOTED)
    skip_bad_records: bool = flag(False, "count and skip unreadable records instead of stopping (until more "
                                         "than half of those read are)", "training", on_resume=NOTED)
    val_every: int = flag(0, "validate every this many iterations (0: as the reference, every "
                             "8 // sequences_per_image epochs, every epoch in dense mode; -1: never)", "training",
                          at_least=-1, wanted="-1 (never), 0 (as the reference) or positive", on_resume=NOTED)
    log_every: int = flag(10, "print and plot the losses every this many iterations", "training", at_least=1,
                          on_resume=NOTED)

    def problems(self) -> list[str]:
        problems = super().problems()
        if 1 <= self.sequences_per_image <= 8 and self.mode == "base" and self.batch_size >= 1 \
                and self.batch_size % self.sequences_per_image:
            problems.append(f"-batch_size must be a multiple of -sequences_per_image ({self.sequences_per_image}) "
                            f"in base mode, got {self.batch_size}")
        # with a bad -num_options this range is meaningless: report only -num_options
        if self.num_options >= 2 and not 0 <= self.num_negative_samples <= self.num_options - 1:
            problems.append(f"-num_negative_samples must be in 0..num_options-1 ({self.num_options - 1}), "
                            f"got {self.num_negative_samples}")
        if self.dense_loss != "ce" and self.mode != "dense":
            problems.append(f"-dense_loss {self.dense_loss} needs -mode dense (base training has no ranking loss)")
        if self.dense_target_temperature != 1.0 and (self.mode, self.dense_loss) != ("dense", "ce"):
            problems.append(f"-dense_target_temperature {self.dense_target_temperature:g} needs -mode dense and "
                            "-dense_loss ce (the target of the ce loss)")
        if self.lr <= 0 and self.image_lr <= 0:
            problems.append("-lr and -image_lr are both 0: nothing would be trained")
        if self.resume and not (self.start_path or self.save_name):
            problems.append("-continue needs -save_name (the run folder to resume) or -start_path (a checkpoint)")
        return problems

    def unused_flags(self, world_size: int) -> list[str]:
        notes = super().unused_flags(world_size)
        if self.mode == "dense":
            notes.append(f"note: -batch_size {self.batch_size} is not used in dense mode: an iteration takes one "
                         "annotated round per process (all its options, -dense_chunk sequences per forward pass)")
        return notes

    def input_paths(self) -> dict[str, str]:
        paths = super().input_paths()
        if self.resume:  # -continue reads the run folder's own checkpoints: -start_path may be one of them
            paths.pop("-start_path", None)
        return paths


@dataclasses.dataclass(frozen=True)
class EvalOptions(SharedOptions):
    """The resolved options of one evaluation (field names are the flag names)."""

    DESCRIPTION = "Evaluate visdial-bert on VisDial val or test"

    split: str = flag("test", "test: write the EvalAI submission; val: compute the metrics", "evaluation",
                      choices=EVALUATED_SPLITS)
    eval_tokens_per_batch: int = flag(0, "tokens of one forward pass (0: 4096 on the CPU, 65536 on a GPU)",
                                      "evaluation", at_least=0)
    save_path: str = flag(".", "folder for the output files", "evaluation")
    save_name: str = flag("", "prefix of the output files: <save_name>_predictions.json, "
                              "<save_name>_metrics.json (default: the split name)", "evaluation")
    val_evalai: bool = flag(False, "val only: also write <save_name>_val_predictions.json for EvalAI's val phase",
                            "evaluation")
    report: str = flag("", "val only: write an HTML report with plots into this folder", "evaluation")
    question_types: str = flag("", "val only: a question-type file; adds MRR and R@1 per type, and of a random "
                                   "ranking (docs/evaluation.md)", "evaluation", is_input=True)
    images: str = flag("", "with -report: a folder of the images by image id; the report shades each sample's "
                           "regions by the top answer's co-attention (ViLBERT only; docs/explain.md)", "evaluation",
                       is_input=True)
    compare_metrics: str = flag("", "with -question_types: LABEL=FILE[,LABEL=FILE...], metrics of other runs "
                                    "shown beside this one per type", "evaluation")
    save_scores: str = flag("", "also write every scored option's probability to this file (the input of "
                                "scripts/ensemble.py; docs/evaluation.md)", "evaluation")

    @property
    def compared_metrics(self) -> list[tuple[str, str]]:
        """-compare_metrics as (label, metrics file) pairs in the order given (an entry without both
        is (its text, ''), for `problems` to name)."""
        entries = []
        for entry in filter(None, self.compare_metrics.split(",")):
            label, _, path = entry.partition("=")
            entries.append((label, path) if label and path else (entry, ""))
        return entries

    def input_paths(self) -> dict[str, str]:
        paths = super().input_paths()
        paths.update({f"-compare_metrics {label}": path for label, path in self.compared_metrics if path})
        return paths

    def problems(self) -> list[str]:
        problems = super().problems()
        if SPLITS[self.split].last_round_only and (self.val_evalai or self.report or self.question_types):
            problems.append("-val_evalai, -report and -question_types need -split val")
        if self.compare_metrics and not self.question_types:
            problems.append("-compare_metrics needs -question_types")
        if self.images and not self.report:
            problems.append("-images needs -report (the report shows the pictures)")
        if self.images and self.model_type != "vilbert":
            problems.append(f"-images: the {self.model_type} model reads no image, so there is nothing to shade")
        problems += [f"-compare_metrics: {label!r} is not LABEL=FILE"
                     for label, path in dict(self.compared_metrics).items() if not path]
        labels = [label for label, _ in self.compared_metrics]
        problems += [f"-compare_metrics: the label {label!r} is given {labels.count(label)} times; give each file "
                     "its own" for label in dict.fromkeys(labels) if labels.count(label) > 1]
        if self.val_evalai and self.num_options != NUM_ANSWER_OPTIONS:
            problems.append(f"-val_evalai needs all {NUM_ANSWER_OPTIONS} options (-num_options {NUM_ANSWER_OPTIONS})")
        return problems


COMBINATIONS = ("mean_prob", "mean_logprob", "rank")


@dataclasses.dataclass(frozen=True)
class EnsembleOptions(FlagOptions):
    """The options of scripts/ensemble.py: score files of evaluate.py -save_scores, how to combine
    them, and evaluate.py's data and output flags (field names are the flag names)."""

    DESCRIPTION = "Combine the option scores of several models (evaluate.py -save_scores) into one evaluation"

    scores: tuple = flag((), "score files written by evaluate.py -save_scores, all of the same split, dialogs, "
                             "rounds and options", "ensemble", is_input=True, item_type=str)
    weights: tuple = flag((), "one weight (>= 0) per score file (default: equal weights)", "ensemble",
                          item_type=float)
    combine: str = flag("mean_prob", "weighted mean of the probabilities (mean_prob), of their logs "
                                     "(mean_logprob) or of the ranks (rank)", "ensemble", choices=COMBINATIONS)
    split: str = same_flag(EvalOptions, "split")
    visdial_processed_val: str = same_flag(SharedOptions, "visdial_processed_val")
    visdial_processed_test: str = same_flag(SharedOptions, "visdial_processed_test")
    visdial_processed_val_dense_annotations: str = same_flag(SharedOptions, "visdial_processed_val_dense_annotations")
    save_path: str = same_flag(EvalOptions, "save_path")
    save_name: str = same_flag(EvalOptions, "save_name")
    val_evalai: bool = same_flag(EvalOptions, "val_evalai")
    report: str = same_flag(EvalOptions, "report")
    save_scores: str = same_flag(EvalOptions, "save_scores")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.scores:
            problems.append("-scores: give at least one score file (evaluate.py -save_scores)")
        files = [resolved(path, "-scores") for path in self.scores]  # one file under two names is given twice
        for file in dict.fromkeys(files):
            if (count := files.count(file)) > 1:
                problems.append(f"-scores: {self.scores[files.index(file)]} is given {count} times (weigh a model "
                                "with -weights)")
        if self.weights and len(self.weights) != len(self.scores):
            problems.append(f"-weights: {len(self.weights)} weights for {len(self.scores)} score files")
        if any(not (math.isfinite(weight) and weight >= 0) for weight in self.weights) or (
                self.weights and not any(self.weights)):
            problems.append("-weights must be finite, >= 0 and not all 0")
        if SPLITS[self.split].last_round_only and (self.val_evalai or self.report):
            problems.append("-val_evalai and -report need -split val")
        return problems


OptionsT = TypeVar("OptionsT", bound=FlagOptions)


def build_parser(options_type: type[FlagOptions]) -> argparse.ArgumentParser:
    """The argparse parser of an options dataclass: `-name` / `--name` per field, grouped by `group`."""
    parser = ArgumentParser(description=options_type.DESCRIPTION)
    groups = {}
    for field in dataclasses.fields(options_type):
        group = field.metadata["group"]
        if group is not None and group not in groups:
            groups[group] = parser.add_argument_group(group)
        arguments = dict(dest=field.name, default=field.default, help=field.metadata["help"])
        if field.type is bool:
            arguments["action"] = "store_true"
        elif field.metadata["item_type"] is not None:
            arguments.update(type=field.metadata["item_type"], nargs="+")
        else:
            arguments["type"] = field.type
            arguments["choices"] = field.metadata["choices"] or None
        name = flag_name(field)
        (parser if group is None else groups[group]).add_argument(f"-{name}", f"--{name}", **arguments)
    return parser


def _preset_value(path: str, key: str, field: dataclasses.Field, value):
    """A preset's value for `field`, of the field's type: YAML's own bool for a bool flag, a
    string for a path or name, a number (or a string that reads as one, as YAML reads `1e-5`)
    for a number; null, a list, a mapping or another type is a UserError naming the key."""
    kind = field.type
    wanted = KINDS[kind] + (" (quote a value that YAML would read as a number)" if kind is str else "")
    if kind is bool:
        right_type = type(value) is bool
    elif kind is str:
        right_type = type(value) is str
    else:
        right_type = type(value) in ((int,) if kind is int else (int, float)) or type(value) is str
        if right_type:
            try:
                value = kind(value)
            except ValueError:
                right_type = False
    if not right_type:
        raise UserError(f"{path}: option '{key}' must be {wanted}, got {value!r}")
    choices = field.metadata["choices"]
    if choices and value not in choices:
        raise UserError(f"{path}: option '{key}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def _apply_preset(parser: argparse.ArgumentParser, options_type: type[FlagOptions], path: str) -> None:
    text = read_text(path, "preset", max_bytes=SMALL_FILE_BYTES)
    try:
        preset = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"{path}: not a preset: YAML nested deeper than the reader can follow") from None
    if preset is None:
        return
    if not isinstance(preset, dict):
        raise UserError(f"{path}: a preset must be a mapping of flag names to values")
    fields = {flag_name(field): field for field in dataclasses.fields(options_type)}
    defaults = {}
    for key, value in preset.items():
        field = fields.get(str(key))
        if field is None or field.name == "config":
            raise UserError(f"{path}: unknown option '{key}'")
        defaults[field.name] = _preset_value(path, key, field, value)
    parser.set_defaults(**defaults)


def parse_options(argv: Optional[Sequence[str]], options_type: type[OptionsT]) -> OptionsT:
    """Parse argv (after the `-config` preset, if any) into `options_type`."""
    parser = build_parser(options_type)
    preliminary = ArgumentParser(add_help=False)
    preliminary.add_argument("-config", "--config", default="")
    known, _ = preliminary.parse_known_args(argv)
    if known.config and "config" in {field.name for field in dataclasses.fields(options_type)}:
        _apply_preset(parser, options_type, known.config)
    return options_type(**vars(parser.parse_args(argv)))
