"""Score a checkpoint on VisDial val (metrics) or test (the file to upload to EvalAI); docs/evaluation.md.

    python evaluate.py -start_path checkpoints-release/basemodel -save_name basemodel   # test split
    python evaluate.py -split val -start_path checkpoints-release/basemodel -save_name basemodel \\
        -val_evalai -report reports/basemodel
    torchrun --nproc_per_node 8 evaluate.py -split val -start_path ...   # each rank scores a share
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
