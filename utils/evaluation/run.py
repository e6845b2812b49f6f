"""What evaluate.py and scripts/ensemble.py run: load the evaluated split and the model, score, then
check and write the outputs (docs/evaluation.md: the files, the order of the checks, what is atomic)."""
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch.utils.data import Dataset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from dataloader.feature_store import open_feature_store
from dataloader.question_types import QuestionTypes, load_question_types
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import (NUM_ANSWER_OPTIONS, SPLITS, check_annotations_follow_dialogs,
                                     load_dense_annotations, load_visdial_json)
from models import build_model
from options import EnsembleOptions, EvalOptions, model_config_for, resolve_precision
from utils.distributed import DistributedContext, check_on_main
from utils.errors import UserError
from utils.evaluation.evalai import check_submission, evalai_test_entries, evalai_val_entries, expected_entries
from utils.evaluation.pointing import format_pointing_text, pointing_metrics
from utils.evaluation.question_types import (comparison_table, format_table_html, format_table_text,
                                             load_compared_metrics, question_type_metrics)
from utils.evaluation.ranker import DialogRanker
from utils.evaluation.report import SAMPLE_DIALOGS, check_pictures, image_files
from utils.evaluation.score_files import (check_matches_dialogs, check_same_keys, combine_scores, read_score_file,
                                          score_file_content, score_file_writer, val_ground_truth)
from utils.evaluation.scoring import ScoredDialogs, score_dataset
from utils.evaluation.validation import format_metrics_table, val_metrics, write_val_report
from utils.outputs import Output, check_outputs, json_writer, write_files


def outputs(options: Union[EvalOptions, EnsembleOptions]) -> dict[str, Output]:
    """What this evaluation (or ensemble) writes, by kind."""
    folder, name, flags = Path(options.save_path), options.save_name or options.split, "-save_path/-save_name"
    if SPLITS[options.split].last_round_only:
        written = {"predictions": Output(flags, folder / f"{name}_predictions.json"),
                   "predictions_txt": Output(flags, folder / f"{name}_predictions.txt")}
    else:
        written = {"metrics": Output(flags, folder / f"{name}_metrics.json")}
    if options.val_evalai:
        written["val_predictions"] = Output(flags, folder / f"{name}_val_predictions.json")
    if options.report:
        written["report"] = Output("-report", Path(options.report), is_folder=True, what="the report")
    if options.save_scores:
        written["scores"] = Output("-save_scores", Path(options.save_scores), what="the score file")
    return written


def load_split(options: EvalOptions) -> Dataset:
    """The dataset of the evaluated split (the other splits are not read)."""
    tokenizer = load_tokenizer(options.vocab)
    features = open_feature_store(options.visdial_image_feats)
    common = dict(max_seq_len=options.max_seq_len, visdial_tot_rounds=options.visdial_tot_rounds,
                  overfit=options.overfit)
    split = SPLITS[options.split]
    if split.last_round_only:  # served whole, all its options
        return VisdialDataset(split.name, _split_path(options), features, tokenizer, **common)
    return VisdialDataset(split.name, _split_path(options), features, tokenizer, _dense_annotations_path(options),
                          num_options=options.num_options, num_samples=getattr(options, split.samples_flag), **common)


def _dense_annotations_path(options) -> Optional[str]:
    """The dense annotations of the evaluated split, or None with a warning when nothing is at its
    path (a folder or a device there is an error when it is read, not "absent")."""
    annotations = getattr(options, SPLITS[options.split].dense_annotations_flag)
    if not Path(annotations).exists():
        warnings.warn(f"{annotations}: no {options.split} dense annotations; NDCG will not be computed", stacklevel=3)
        return None
    return annotations


def load_model(options: EvalOptions, dataset, device: torch.device, verbose: bool = True) -> torch.nn.Module:
    """The model of -model_config (checked against `dataset`) with the weights of -start_path, on `device`."""
    model = build_model(model_config_for(options, dataset), options.model_type, options.start_path,
                        say=print if verbose else None).to(device)
    if not options.start_path:
        warnings.warn("no -start_path: scoring a randomly initialised model", stacklevel=2)
    return torch.compile(model, dynamic=True) if options.compile else model


def evaluate(options: EvalOptions, context: DistributedContext) -> None:
    """Evaluate as the options say (module docstring); rank 0 prints and writes."""
    precision = resolve_precision(options.precision, context.device, evaluation=True)
    for note in options.unused_flags(context.world_size) if context.is_main else ():
        print(note)
    written = outputs(options)
    check_on_main(lambda: check_outputs(list(written.values()), options.input_paths()), context.is_main)
    question_types = load_question_types(options.question_types) if options.question_types else None
    compared = load_compared_metrics(dict(options.compared_metrics), options.model_type)
    pictures = {}  # read before the scoring: a bad -images folder costs no hours
    if options.images:
        check_on_main(lambda: pictures.update(image_files(options.images)), context.is_main)
    dataset = load_split(options)
    if options.images:  # the pictures the report shows, read before the scoring too
        samples = [dialog["image_id"] for dialog in dataset.dialogs[:min(len(dataset), SAMPLE_DIALOGS)]]
        check_on_main(lambda: check_pictures(pictures, samples), context.is_main)
    model = load_model(options, dataset, context.device, verbose=context.is_main)
    scored = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=options.eval_tokens_per_batch,
                           precision=precision, num_workers=options.num_workers, progress=context.is_main)
    if context.is_main:
        explains = options.model_type == "vilbert" and (options.images or (question_types and question_types.regions))
        ranker = DialogRanker(model, load_tokenizer(options.vocab), dataset.features, max_seq_len=options.max_seq_len,
                              max_rounds=options.visdial_tot_rounds, precision=precision,
                              tokens_per_batch=options.eval_tokens_per_batch) if explains else None
        write_results(options, scored, {kind: output.path for kind, output in written.items()},
                      question_types=question_types, compared=compared, ranker=ranker,
                      pictures=pictures if options.images else None)


def _split_path(options) -> str:
    return getattr(options, SPLITS[options.split].json_flag)


def write_results(options, scored: ScoredDialogs, paths: dict, data: Optional[dict] = None,
                  question_types: Optional[QuestionTypes] = None, compared: Optional[dict] = None,
                  ranker: Optional[DialogRanker] = None, pictures: Optional[dict] = None) -> None:
    """Print and write what `outputs(options)` (evaluate.py's or ensemble.py's) declares, at `paths` by
    kind, for `scored`: every file checked before any is written, the split's files as one set, the
    report after them. data: the processed split's `data` (read when needed and not given).
    question_types (val): metrics per type, beside the `compared` runs' (label -> metrics). ranker:
    the evaluated ViLBERT, for the pointing score and, with `pictures` (image id -> file), the
    report's shaded regions."""
    needs_data = options.save_scores or ranker is not None or options.val_evalai or options.report
    if data is None and needs_data:
        data = load_visdial_json(_split_path(options), options.split, processed=True)["data"]
    files = {}
    if options.save_scores:
        files[paths["scores"]] = score_file_writer(score_file_content(scored, options.split, data["dialogs"]))
    if SPLITS[options.split].last_round_only:
        entries = evalai_test_entries(scored)
        check_submission(entries, options.split, None, paths["predictions"])
        write_files({paths["predictions"]: json_writer(entries), paths["predictions_txt"]: json_writer(entries),
                     **files})
        print(f"wrote the EvalAI test submission ({len(entries)} dialogs) to {paths['predictions']} "
              f"(same content in {paths['predictions_txt']})")
    else:
        metrics = val_metrics(scored)
        print(format_metrics_table(metrics))
        type_table_html = ""
        if question_types:
            metrics.update(question_type_metrics(scored.scores, scored.fields["gt_option_inds"],
                                                 scored.fields["image_id"], question_types))
            table = comparison_table({options.model_type: metrics, **(compared or {})})
            print(format_table_text(table))
            type_table_html = format_table_html(table, question_types.descriptions)
            if ranker is not None and question_types.regions:
                metrics.update(pointing_metrics(ranker, data, scored.scores.shape[0], question_types,
                                                options.question_types))
                print(format_pointing_text(metrics, options.model_type))
        files[paths["metrics"]] = json_writer(metrics)
        if options.val_evalai:
            entries = evalai_val_entries(scored, data["dialogs"])
            check_submission(entries, options.split,
                             expected_entries(options.split, data["dialogs"][:scored.scores.shape[0]]),
                             paths["val_predictions"])
            files[paths["val_predictions"]] = json_writer(entries)
        write_files(files)
        print(f"wrote the metrics to {paths['metrics']}")
        if options.val_evalai:
            print(f"wrote the EvalAI val-phase file ({len(entries)} rounds) to {paths['val_predictions']}")
        if options.report:
            page = write_val_report(options.report, metrics, scored, data, type_table_html,
                                    ranker if pictures is not None else None, pictures)
            print(f"wrote the report to {page}")
    if options.save_scores:
        print(f"wrote the option scores to {paths['scores']}")


def ensemble(options: EnsembleOptions) -> None:
    """scripts/ensemble.py: check the score files against one another and the split, combine them
    (-combine, -weights) and write as evaluate.py does."""
    written = outputs(options)
    check_outputs(list(written.values()), options.input_paths())
    contents = [read_score_file(path) for path in options.scores]
    check_same_keys(options.scores, contents)
    if contents[0]["split"] != options.split:
        raise UserError(f"{options.scores[0]}: scores the {contents[0]['split']} split, -split is {options.split}")
    data = load_visdial_json(_split_path(options), options.split, processed=True)["data"]
    check_matches_dialogs(options.scores[0], contents[0], data["dialogs"], _split_path(options))
    num_dialogs, _, num_options = contents[0]["scores"].shape
    if options.val_evalai and num_options != NUM_ANSWER_OPTIONS:
        raise UserError(f"{options.scores[0]}: scores {num_options} options per round; -val_evalai needs all "
                        f"{NUM_ANSWER_OPTIONS} (evaluate.py -num_options {NUM_ANSWER_OPTIONS})")
    if SPLITS[options.split].last_round_only:
        fields = {"image_id": contents[0]["image_id"], "round_id": contents[0]["round_id"][:, -1]}
    else:
        annotations_path, annotations = _dense_annotations_path(options), None
        if annotations_path is not None:
            annotations = load_dense_annotations(annotations_path)
            check_annotations_follow_dialogs(annotations, data["dialogs"], annotations_path)
            annotations = annotations[:num_dialogs]
        fields = val_ground_truth(data["dialogs"][:num_dialogs], annotations, num_options)
    weights = list(options.weights) or [1.0] * len(contents)
    scores = combine_scores([content["scores"] for content in contents], weights, options.combine)
    print(f"ensemble of {len(contents)} score files ({options.combine}, weights "
          f"{', '.join(f'{weight:g}' for weight in weights)}): {num_dialogs} dialogs")
    write_results(options, ScoredDialogs(scores, fields), {kind: output.path for kind, output in written.items()}, data)
