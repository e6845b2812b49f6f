"""Score a checkpoint on VisDial val (metrics) or test (the file to upload to EvalAI).

    # test split (default): <save_path>/<save_name>_predictions.json (+ .txt) for EvalAI test-std
    python evaluate.py -start_path checkpoints-release/basemodel -save_name basemodel
    # val split: metrics table, <save_name>_metrics.json; optional EvalAI val file and HTML report
    python evaluate.py -split val -start_path checkpoints-release/basemodel -save_name basemodel \\
        -val_evalai -report reports/basemodel
    # several GPUs or processes: each scores a share of the dialogs, rank 0 writes
    torchrun --nproc_per_node 8 evaluate.py -split val -start_path ...

Only the evaluated split is read. Scoring is length-bucketed (utils/scoring.py): set the work of
one forward pass with -eval_tokens_per_batch and the arithmetic with -precision.
"""
import argparse
import dataclasses
import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

import options as shared_options
from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from dataloader.question_types import load_question_types
from dataloader.visdial_json import load_visdial_json
from models import build_model
from utils.checkpointing import atomic_write, load_model_weights
from utils.distributed import DistributedContext, setup_distributed, teardown_distributed
from utils.errors import UserError, run_cli
from utils.feature_store import open_feature_store
from utils.metrics import scores_to_ranks, visdial_metrics
from utils.question_type_metrics import (comparison_table, format_table_html, format_table_text,
                                         load_compared_metrics, question_type_metrics)
from utils.report import DialogText
from utils.report import write_report as write_html_report
from utils.scoring import ScoredDialogs, default_precision, score_dataset
from utils.tokenizer import load_tokenizer

SPLITS = ("val", "test")
NUM_ROUNDS = 10
NUM_ANSWER_OPTIONS = 100


@dataclasses.dataclass(frozen=True)
class EvalOptions(shared_options.SharedOptions):
    """The resolved options of one evaluation (field names are the flag names)."""
    split: str
    eval_tokens_per_batch: int
    save_path: str
    save_name: str
    val_evalai: bool
    report: str
    question_types: str
    compare_metrics: list
    config: str = ""


def build_eval_parser() -> argparse.ArgumentParser:
    """The argument parser of evaluate.py (data, model and runtime flags shared with train.py)."""
    parser = argparse.ArgumentParser(description="Evaluate visdial-bert on VisDial val or test")
    shared_options.add_flag(parser, "config", default="", help="YAML preset of flag values")
    shared_options.add_data_arguments(parser)
    shared_options.add_model_arguments(parser)
    shared_options.add_runtime_arguments(parser)
    group = parser.add_argument_group("evaluation")
    add = shared_options.add_flag
    add(group, "split", choices=SPLITS, default="test",
        help="test: write the EvalAI submission; val: compute the metrics")
    add(group, "eval_tokens_per_batch", type=int, default=16384,
        help="tokens of one forward pass (sequences x their longest length); lower it on small GPUs")
    add(group, "save_path", default=".", help="folder for the output files")
    add(group, "save_name", default="",
        help="prefix of the output files: <save_name>_predictions.json, <save_name>_metrics.json "
             "(default: the split name)")
    add(group, "val_evalai", action="store_true",
        help="val only: also write <save_name>_val_predictions.json for EvalAI's val phase")
    add(group, "report", default="", help="val only: write an HTML report with plots into this folder")
    add(group, "question_types", default="",
        help="val only: a question-type file (dataloader/question_types.py); adds MRR and R@1 per type, and "
             "of a random ranking, to the metrics, the printed table and the report")
    add(group, "compare_metrics", action="append", default=[], metavar="LABEL=FILE",
        help="with -question_types: put this metrics file of another run (evaluated with the same types) "
             "beside this one in the per-type table; repeatable")
    return parser


def validate_eval_options(options: EvalOptions) -> list[str]:
    """Every problem with the options of evaluate.py, one line each."""
    problems = shared_options.validate_data_options(options) + shared_options.validate_runtime_options(options)
    if options.eval_tokens_per_batch < 1:
        problems.append(f"-eval_tokens_per_batch must be >= 1, got {options.eval_tokens_per_batch}")
    if options.split == "test" and (options.val_evalai or options.report or options.question_types):
        problems.append("-val_evalai, -report and -question_types need -split val")
    if options.compare_metrics and not options.question_types:
        problems.append("-compare_metrics needs -question_types")
    if options.val_evalai and options.num_options != NUM_ANSWER_OPTIONS:
        problems.append(f"-val_evalai needs all {NUM_ANSWER_OPTIONS} options (-num_options {NUM_ANSWER_OPTIONS})")
    return problems


def output_paths(options: EvalOptions) -> dict[str, Path]:
    """The files this evaluation writes, by kind."""
    folder, name = Path(options.save_path), options.save_name or options.split
    if options.split == "test":
        return {"predictions": folder / f"{name}_predictions.json",
                "predictions_txt": folder / f"{name}_predictions.txt"}
    paths = {"metrics": folder / f"{name}_metrics.json"}
    if options.val_evalai:
        paths["val_predictions"] = folder / f"{name}_val_predictions.json"
    return paths


def check_writable(paths: dict[str, Path]) -> None:
    """Fail before any scoring when an output file cannot be written (nothing is left behind)."""
    for path in paths.values():
        try:
            if path.is_dir():
                raise IsADirectoryError(21, "is a folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as error:
            raise UserError(f"{path}: cannot write the output ({error.strerror or error})") from None


def load_split(options: EvalOptions) -> Dataset:
    """The dataset of the evaluated split (the other splits are not read)."""
    tokenizer = load_tokenizer(options.vocab)
    features = open_feature_store(options.visdial_image_feats)
    common = dict(max_seq_len=options.max_seq_len, visdial_tot_rounds=options.visdial_tot_rounds,
                  overfit=options.overfit)
    if options.split == "test":
        return VisdialDataset("test", options.visdial_processed_test, features, tokenizer, **common)
    annotations = options.visdial_processed_val_dense_annotations
    if not Path(annotations).is_file():
        warnings.warn(f"{annotations}: no val dense annotations; NDCG will not be computed", stacklevel=2)
        annotations = None
    return VisdialDataset("val", options.visdial_processed_val, features, tokenizer, annotations,
                          num_options=options.num_options, num_samples=options.num_val_samples, **common)


def load_model(options: EvalOptions, device: torch.device, verbose: bool = True) -> torch.nn.Module:
    """The model of -model_config with the weights of -start_path, on `device`."""
    model = build_model(options.model_config, options.model_type)
    if options.start_path:
        report = load_model_weights(model, options.start_path)
        if verbose:
            print(report.describe(options.start_path))
    else:
        warnings.warn("no -start_path: scoring a randomly initialised model", stacklevel=2)
    model = model.to(device)
    return torch.compile(model, dynamic=True) if options.compile else model


def evaluate_val(model: torch.nn.Module, dataset: Dataset, *, tokens_per_batch: int = 16384,
                 precision: str = "fp32", num_workers: int = 0, progress: bool = False) -> dict[str, float]:
    """Val metrics of `model` on a val `VisdialDataset`: r@1, r@5, r@10, mean, mrr, ndcg (when the
    dataset has dense annotations) and the per-round values. The training loop calls this for
    periodic validation; under torchrun every rank gets the metrics of the whole split."""
    scored = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=tokens_per_batch,
                           precision=precision, num_workers=num_workers, progress=progress)
    return val_metrics(scored)


def val_metrics(scored: ScoredDialogs) -> dict[str, float]:
    """Metrics of scored val dialogs (no NDCG when they carry no dense annotations)."""
    return visdial_metrics(scored.scores, scored.fields["gt_option_inds"],
                           scored.fields.get("round_id"), scored.fields.get("gt_relevance"))


def format_metrics_table(metrics: dict[str, float]) -> str:
    """The overall metrics on one line each, then one row per round."""
    overall = [("R@1", "r@1"), ("R@5", "r@5"), ("R@10", "r@10"), ("Mean rank", "mean"), ("MRR", "mrr"),
               ("NDCG", "ndcg")]
    lines = [f"{label:<10}{metrics[key]:>10.4f}" for label, key in overall if key in metrics]
    rounds = sorted(int(key.rsplit("_", 1)[1]) for key in metrics if key.startswith("mrr_round_"))
    lines.append(f"{'round':<7}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'Mean':>8}{'MRR':>8}")
    for number in rounds:
        values = [metrics[f"{name}_round_{number}"] for name in ("r_1", "r_5", "r_10", "mean", "mrr")]
        lines.append(f"{number:<7}" + "".join(f"{value:>8.4f}" if i != 3 else f"{value:>8.2f}"
                                              for i, value in enumerate(values)))
    return "\n".join(lines)


def evalai_test_entries(scored: ScoredDialogs) -> list[dict]:
    """EvalAI test-std entries: per dialog its image_id, round_id and the 1-based rank of each of
    the last round's options, in the json option order."""
    ranks = scores_to_ranks(scored.scores[:, -1])
    return [{"image_id": int(image_id), "round_id": int(round_id), "ranks": row}
            for image_id, round_id, row in zip(scored.fields["image_id"].tolist(),
                                               scored.fields["round_id"].tolist(), ranks.tolist())]


def val_option_order(gt_index: int, num_options: int) -> list[int]:
    """Json positions of a val round's options in item order: the ground truth, then the others
    (the order of dataloader.datasets.VisdialDataset val items)."""
    others = [position for position in range(NUM_ANSWER_OPTIONS) if position != gt_index]
    return [gt_index] + others[:num_options - 1]


def evalai_val_entries(scored: ScoredDialogs, dialogs: list[dict]) -> list[dict]:
    """EvalAI val-phase entries: one per dialog and round, ranks in the json option order."""
    ranks = scores_to_ranks(scored.scores)
    entries = []
    for dialog, image_id, dialog_ranks in zip(dialogs, scored.fields["image_id"].tolist(), ranks):
        for round_index, turn in enumerate(dialog["dialog"]):
            in_json_order = torch.empty(NUM_ANSWER_OPTIONS, dtype=torch.long)
            in_json_order[val_option_order(turn["gt_index"], NUM_ANSWER_OPTIONS)] = dialog_ranks[round_index]
            entries.append({"image_id": int(image_id), "round_id": round_index + 1,
                            "ranks": in_json_order.tolist()})
    return entries


def check_predictions(entries: list[dict], expected_count: int, one_per_image: bool, path: Path) -> None:
    """The EvalAI format: ranks a permutation of 1..100, round_id in 1..10, the expected number of
    entries, and (test) one entry per image. Raises UserError naming `path` otherwise."""
    permutation = list(range(1, NUM_ANSWER_OPTIONS + 1))
    problems = []
    if len(entries) != expected_count:
        problems.append(f"{len(entries)} entries for {expected_count} expected")
    if one_per_image and len({entry["image_id"] for entry in entries}) != len(entries):
        problems.append("an image_id appears more than once")
    for entry in entries:
        if not 1 <= entry["round_id"] <= NUM_ROUNDS:
            problems.append(f"image {entry['image_id']}: round_id {entry['round_id']} not in 1..{NUM_ROUNDS}")
        if sorted(entry["ranks"]) != permutation:
            problems.append(f"image {entry['image_id']}: ranks are not a permutation of 1..{NUM_ANSWER_OPTIONS}")
    if problems:
        raise UserError(f"{path}: predictions fail the EvalAI format check ({problems[0]}); not written")


def write_json(path: Path, content) -> None:
    """Write `content` as JSON atomically."""
    atomic_write(path, lambda file: file.write(json.dumps(content).encode()))


def write_val_report(directory: str, metrics: dict, scored: ScoredDialogs, data: dict,
                     type_table_html: str = "") -> Path:
    """The HTML report (utils/report.py) of scored val dialogs with their texts from `data`."""
    num_options = scored.scores.shape[2]
    texts = []
    for dialog in data["dialogs"][:scored.scores.shape[0]]:
        rounds = dialog["dialog"]
        texts.append(DialogText(
            image_id=dialog["image_id"], caption=dialog["caption"],
            questions=[data["questions"][turn["question"]] for turn in rounds],
            options=[[data["answers"][turn["answer_options"][position]]
                      for position in val_option_order(turn["gt_index"], num_options)] for turn in rounds]))
    return write_html_report(directory, metrics, scored.scores, scored.fields["gt_option_inds"], texts,
                             scored.fields.get("round_id"), scored.fields.get("gt_relevance"),
                             type_table_html=type_table_html)


def run(options: EvalOptions, context: DistributedContext) -> None:
    """Evaluate as the options say; rank 0 prints and writes."""
    paths = output_paths(options)
    if context.is_main:
        check_writable(paths)
    question_types = load_question_types(options.question_types) if options.question_types else None
    compared = load_compared_metrics(options.compare_metrics)
    dataset = load_split(options)
    model = load_model(options, context.device, verbose=context.is_main)
    precision = default_precision(context.device) if options.precision == "auto" else options.precision
    scored = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=options.eval_tokens_per_batch,
                           precision=precision, num_workers=options.num_workers, progress=context.is_main)
    if not context.is_main:
        return
    if options.split == "test":
        entries = evalai_test_entries(scored)
        check_predictions(entries, len(dataset), one_per_image=True, path=paths["predictions"])
        write_json(paths["predictions"], entries)
        write_json(paths["predictions_txt"], entries)
        print(f"wrote the EvalAI test submission ({len(entries)} dialogs) to {paths['predictions']} "
              f"(same content in {paths['predictions_txt']})")
        return

    metrics = val_metrics(scored)
    print(format_metrics_table(metrics))
    type_table_html = ""
    if question_types:
        metrics.update(question_type_metrics(scored.scores, scored.fields["gt_option_inds"],
                                             scored.fields["image_id"], question_types))
        table = comparison_table({options.model_type: metrics, **compared})
        print(format_table_text(table))
        type_table_html = format_table_html(table, question_types.descriptions)
    write_json(paths["metrics"], metrics)
    print(f"wrote the metrics to {paths['metrics']}")
    if options.val_evalai or options.report:
        data = load_visdial_json(options.visdial_processed_val, "val", processed=True)["data"]
    if options.val_evalai:
        entries = evalai_val_entries(scored, data["dialogs"])
        check_predictions(entries, scored.scores.shape[0] * scored.scores.shape[1], one_per_image=False,
                          path=paths["val_predictions"])
        write_json(paths["val_predictions"], entries)
        print(f"wrote the EvalAI val-phase file ({len(entries)} rounds) to {paths['val_predictions']}")
    if options.report:
        print(f"wrote the report to {write_val_report(options.report, metrics, scored, data, type_table_html)}")


def main(argv=None) -> None:
    options = shared_options.parse_options(build_eval_parser(), argv, EvalOptions)
    problems = validate_eval_options(options)
    if problems:
        raise UserError("\n".join(problems))
    context = setup_distributed()
    try:
        run(options, context)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    run_cli(main)
