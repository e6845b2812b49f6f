"""What evaluate.py runs: load the evaluated split and the model, score, then report and write.

Only the evaluated split is read. Test: the EvalAI test-std file (`<save_name>_predictions.json`,
the same content in `.txt`). Val: the metrics table and `<save_name>_metrics.json`, with
-val_evalai the EvalAI val-phase file, with -report the HTML report. Before any scoring, every
output is checked (none may be an input or another output, each must be writable:
utils/outputs.py), then every input is validated (the split, the features, the model config
against them, the weights); nothing is written before all of that. The files of a split are
written as one set (utils/files.write_files: the .json and .txt pair; the metrics and the
val-phase file), the report after them. Under torchrun
every rank scores a share and rank 0 writes.
"""
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dataloader.collate import collate_dialog_batch
from dataloader.datasets import VisdialDataset
from dataloader.feature_record import NUM_CLASSES
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import load_tokenizer
from dataloader.visdial_json import load_visdial_json
from models import BertConfig, build_model
from models.weights import load_model_weights
from options import EvalOptions, SharedOptions
from utils.distributed import DistributedContext, check_on_main
from utils.evaluation.evalai import check_predictions, evalai_test_entries, evalai_val_entries, write_predictions
from utils.evaluation.scoring import score_dataset
from utils.evaluation.validation import format_metrics_table, val_metrics, write_val_report
from utils.files import write_json_files
from utils.outputs import Output, check_outputs
from utils.precision import resolve_precision


def outputs(options: EvalOptions) -> dict[str, Output]:
    """What this evaluation writes, by kind."""
    folder, name, flags = Path(options.save_path), options.save_name or options.split, "-save_path/-save_name"
    if options.split == "test":
        return {"predictions": Output(flags, folder / f"{name}_predictions.json"),
                "predictions_txt": Output(flags, folder / f"{name}_predictions.txt")}
    written = {"metrics": Output(flags, folder / f"{name}_metrics.json")}
    if options.val_evalai:
        written["val_predictions"] = Output(flags, folder / f"{name}_val_predictions.json")
    if options.report:
        written["report"] = Output("-report", Path(options.report), is_folder=True, what="the report")
    return written


def load_split(options: EvalOptions) -> Dataset:
    """The dataset of the evaluated split (the other splits are not read)."""
    tokenizer = load_tokenizer(options.vocab)
    features = open_feature_store(options.visdial_image_feats)
    common = dict(max_seq_len=options.max_seq_len, visdial_tot_rounds=options.visdial_tot_rounds,
                  overfit=options.overfit)
    if options.split == "test":
        return VisdialDataset("test", options.visdial_processed_test, features, tokenizer, **common)
    annotations = options.visdial_processed_val_dense_annotations
    if not Path(annotations).exists():  # a folder or a device given for it is an error, not "absent"
        warnings.warn(f"{annotations}: no val dense annotations; NDCG will not be computed", stacklevel=2)
        annotations = None
    return VisdialDataset("val", options.visdial_processed_val, features, tokenizer, annotations,
                          num_options=options.num_options, num_samples=options.num_val_samples, **common)


def model_config_for(options: SharedOptions, dataset) -> BertConfig:
    """-model_config, checked against the data the model will see (a dataset of
    dataloader/datasets.py): its vocabulary, -max_seq_len and, for ViLBERT, the feature store's
    width and classes; UserError naming the config and the data file otherwise."""
    config = BertConfig.from_json_file(options.model_config)
    image = {}
    if options.model_type == "vilbert":
        image = dict(feature_size=dataset.features.feature_size, features=str(dataset.features.path),
                     num_classes=NUM_CLASSES)
    config.check_fits_data(dataset.vocabulary_size, options.vocab, options.max_seq_len, **image)
    return config


def load_model(options: EvalOptions, dataset, device: torch.device, verbose: bool = True) -> torch.nn.Module:
    """The model of -model_config (checked against `dataset`) with the weights of -start_path, on
    `device`."""
    model = build_model(model_config_for(options, dataset), options.model_type)
    if options.start_path:
        report = load_model_weights(model, options.start_path)
        if verbose:
            print(report.describe(options.start_path))
    else:
        warnings.warn("no -start_path: scoring a randomly initialised model", stacklevel=2)
    model = model.to(device)
    return torch.compile(model, dynamic=True) if options.compile else model


def evaluate(options: EvalOptions, context: DistributedContext) -> None:
    """Evaluate as the options say (module docstring); rank 0 prints and writes."""
    written = outputs(options)
    paths = {kind: output.path for kind, output in written.items()}
    check_on_main(lambda: check_outputs(list(written.values()), options.input_paths()), context.is_main)
    dataset = load_split(options)
    model = load_model(options, dataset, context.device, verbose=context.is_main)
    scored = score_dataset(model, dataset, collate_dialog_batch, tokens_per_batch=options.eval_tokens_per_batch,
                           precision=resolve_precision(options.precision, context.device),
                           num_workers=options.num_workers, progress=context.is_main)
    if not context.is_main:
        return
    if options.split == "test":
        entries = evalai_test_entries(scored)
        write_predictions({paths["predictions"]: entries, paths["predictions_txt"]: entries}, len(dataset),
                          one_per_image=True)
        print(f"wrote the EvalAI test submission ({len(entries)} dialogs) to {paths['predictions']} "
              f"(same content in {paths['predictions_txt']})")
        return

    metrics = val_metrics(scored)
    print(format_metrics_table(metrics))
    if options.val_evalai or options.report:
        data = load_visdial_json(options.visdial_processed_val, "val", processed=True)["data"]
    files = {paths["metrics"]: metrics}
    if options.val_evalai:
        entries = evalai_val_entries(scored, data["dialogs"])
        check_predictions(entries, scored.scores.shape[0] * scored.scores.shape[1], one_per_image=False,
                          path=paths["val_predictions"])
        files[paths["val_predictions"]] = entries
    write_json_files(files)
    print(f"wrote the metrics to {paths['metrics']}")
    if options.val_evalai:
        print(f"wrote the EvalAI val-phase file ({len(entries)} rounds) to {paths['val_predictions']}")
    if options.report:
        print(f"wrote the report to {write_val_report(options.report, metrics, scored, data)}")
