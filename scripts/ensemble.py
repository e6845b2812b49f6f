"""Combine the option scores of several models into one evaluation (an ensemble).

Each model is scored once with evaluate.py -save_scores; the ensemble is written exactly as
evaluate.py writes one model, with the same output flags and file names:

    python evaluate.py -split val -start_path run_a/checkpoint_4.pt -save_scores a_val.pt -save_name a
    python evaluate.py -split val -start_path run_b/checkpoint_4.pt -save_scores b_val.pt -save_name b
    python scripts/ensemble.py -split val -scores a_val.pt b_val.pt -combine mean_prob -save_name ab
    # -> ab_metrics.json (and -val_evalai, -report as evaluate.py); -split test -> ab_predictions.json

The files must score the same split, dialogs, rounds and options (one error line names the first
mismatch) and the dialogs of -visdial_processed_val / -visdial_processed_test; val NDCG needs
-visdial_processed_val_dense_annotations.
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
