"""Filter the raw VisDial v1.0 json files so every model input fits in `-max_seq_len` tokens
(dataloader/preprocess.py; docs/data.md, "Preprocessing").

    python preprocessing/pre_process_visdial.py -max_seq_len 256 -vocab data/bert-base-uncased/vocab.txt \
        -visdial_train data/visdial/visdial_1.0_train.json ... (every path has a flag, see -h)
"""
import argparse

from dataloader.preprocess import INPUT_FILES, OUTPUT_FILES, Summary
from dataloader.preprocess import preprocess as preprocess_files
from utils.errors import ArgumentParser, UserError, run_cli

DATA_DIR = "data/visdial"
FILES = {
    "visdial_train": ("visdial_1.0_train.json", "raw train split"),
    "visdial_val": ("visdial_1.0_val.json", "raw val split"),
    "visdial_test": ("visdial_1.0_test.json", "raw test split"),
    "visdial_val_ndcg": ("visdial_1.0_val_dense_annotations.json", "val dense annotations"),
    "visdial_train_ndcg": ("visdial_1.0_train_dense_annotations.json", "train dense annotations"),
    "save_path_train": ("visdial_1.0_train_processed.json", "output: processed train split"),
    "save_path_val": ("visdial_1.0_val_processed.json", "output: processed val split"),
    "save_path_test": ("visdial_1.0_test_processed.json", "output: processed test split"),
    "save_path_train_dense_samples": ("visdial_1.0_train_dense_processed.json",
                                      "output: train dialogs that have a kept dense annotation"),
    "save_path_val_ndcg": ("visdial_1.0_val_dense_annotations_processed.json", "output: kept val dense annotations"),
    "save_path_train_ndcg": ("visdial_1.0_train_dense_annotations_processed.json",
                             "output: kept train dense annotations"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description="Preprocess VisDial v1.0 json for visdial-bert")
    for name in INPUT_FILES + OUTPUT_FILES:
        file_name, help_text = FILES[name]
        parser.add_argument(f"-{name}", f"--{name}", default=f"{DATA_DIR}/{file_name}",
                            help=f"{help_text} (default: %(default)s)")
    parser.add_argument("-max_seq_len", "--max_seq_len", type=int, default=256,
                        help="maximum number of tokens of a dialog encoder input (default: %(default)s)")
    parser.add_argument("-vocab", "--vocab", default="data/bert-base-uncased/vocab.txt",
                        help="BERT vocab.txt, tokenizer folder or hub name (default: %(default)s)")
    parser.add_argument("-keep_all_val", "--keep_all_val", action="store_true",
                        help="keep every val dialog: a round that does not fit drops history rounds from the front "
                             "(caption kept) until it does, as the test split; default: drop the dialog, as the "
                             "reference (the paper's val numbers)")
    parser.add_argument("-quiet", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.max_seq_len < 4:
        raise UserError(f"-max_seq_len must be at least 4, got {args.max_seq_len}")
    return args


def preprocess(args: argparse.Namespace) -> Summary:
    return preprocess_files({name: getattr(args, name) for name in INPUT_FILES + OUTPUT_FILES}, args.max_seq_len,
                            args.vocab, show_progress=not args.quiet, keep_all_val=args.keep_all_val)


def main(argv=None) -> None:
    print("\n".join(preprocess(parse_args(argv)).lines))


if __name__ == "__main__":
    run_cli(main)
