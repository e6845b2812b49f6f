"""Check a file for the EvalAI VisDial server before uploading it: the checks evaluate.py runs.

    python scripts/validate_submission.py mine_predictions.json -split test \
        [-dialogs data/visdial/visdial_1.0_test_processed.json]      # or the raw visdial_1.0_test.json
    python scripts/validate_submission.py mine_val_predictions.json -split val -dialogs val.json
"""
import argparse
from pathlib import Path

from dataloader.visdial_json import EVALUATED_SPLITS, SPLITS, load_visdial_json
from options import SharedOptions
from utils.errors import ArgumentParser, UserError, run_cli
from utils.evaluation.evalai import expected_entries, submission_problems
from utils.inputs import read_json

MAX_LINES = 50  # problems printed before the rest are counted


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description="Check an EvalAI VisDial submission file")
    parser.add_argument("file", help="the submission (a <save_name>_predictions.json or _val_predictions.json)")
    parser.add_argument("-split", "--split", choices=EVALUATED_SPLITS, required=True,
                        help="test: EvalAI's test-std phase; val: its val phase")
    parser.add_argument("-dialogs", "--dialogs", default="",
                        help="the split's dialogs (processed or raw VisDial json): check the entries' image ids "
                             "and rounds against them (default for test: the data layout's "
                             "data/visdial/visdial_1.0_test_processed.json, when it is there; val has none: the "
                             "processed val of the data layout lacks the dialogs the reference's length rule drops, "
                             "which EvalAI's val phase wants)")
    args = parser.parse_args(argv)
    default = getattr(SharedOptions, SPLITS[args.split].json_flag)
    if not args.dialogs and SPLITS[args.split].last_round_only and Path(default).is_file():
        args.dialogs = default
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    expected = None
    if args.dialogs:
        expected = expected_entries(args.split, load_visdial_json(args.dialogs, args.split)["data"]["dialogs"])
    entries = read_json(args.file, "submission")
    problems = submission_problems(entries, args.split, expected)
    if problems:
        shown = [f"{args.file}: {problem}" for problem in problems[:MAX_LINES]]
        if len(problems) > MAX_LINES:
            shown.append(f"{args.file}: ... and {len(problems) - MAX_LINES} more problems")
        raise UserError("\n".join(shown))
    dialogs = len({entry["image_id"] for entry in entries})
    against = f", every dialog of {args.dialogs}" if args.dialogs else \
        " (its image ids and rounds not checked against the split's dialogs: give -dialogs)"
    print(f"{args.file}: a valid EvalAI {args.split} submission: {len(entries)} entries, {dialogs} dialogs{against}")


if __name__ == "__main__":
    run_cli(main)
