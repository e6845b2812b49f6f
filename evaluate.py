"""Score a checkpoint on VisDial val (metrics) or test (the file to upload to EvalAI).

    # test split (default): <save_path>/<save_name>_predictions.json (+ .txt) for EvalAI test-std
    python evaluate.py -start_path checkpoints-release/basemodel -save_name basemodel
    # val split: metrics table, <save_name>_metrics.json; optional EvalAI val file and HTML report
    python evaluate.py -split val -start_path checkpoints-release/basemodel -save_name basemodel \\
        -val_evalai -report reports/basemodel
    # several GPUs or processes: each scores a share of the dialogs, rank 0 writes
    torchrun --nproc_per_node 8 evaluate.py -split val -start_path ...

Only the evaluated split is read (utils/evaluation/run.py). Scoring is length-bucketed
(utils/evaluation/scoring.py): set the work of one forward pass with -eval_tokens_per_batch and
the arithmetic with -precision.
"""
from options import EvalOptions, parse_options
from utils.distributed import setup_distributed, teardown_distributed
from utils.errors import report_problems, run_cli
from utils.evaluation.run import evaluate


def main(argv=None) -> None:
    options = parse_options(argv, EvalOptions)
    report_problems(options.problems())
    context = setup_distributed()
    try:
        evaluate(options, context)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    run_cli(main)
