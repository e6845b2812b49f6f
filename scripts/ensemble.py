"""Combine the option scores of several models (evaluate.py -save_scores) into one evaluation, written as
evaluate.py writes one model's (docs/evaluation.md).

    python evaluate.py -split val -start_path run_a/checkpoint_4.pt -save_scores a_val.pt -save_name a
    python evaluate.py -split val -start_path run_b/checkpoint_4.pt -save_scores b_val.pt -save_name b
    python scripts/ensemble.py -split val -scores a_val.pt b_val.pt -combine mean_prob -save_name ab
"""
from options import EnsembleOptions, parse_options
from utils.errors import report_problems, run_cli
from utils.evaluation.run import ensemble


def main(argv=None) -> None:
    options = parse_options(argv, EnsembleOptions)
    report_problems(options.problems())
    ensemble(options)


if __name__ == "__main__":
    run_cli(main)
