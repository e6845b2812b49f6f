"""torchrun entry point of tests/test_multinode.py: train.py's run, then evaluate.py's, in one
process group, with every dropout of the model off.

    torchrun ... -m tests.dropout_free_run <train.py flags> --evaluate <evaluate.py flags>

Dropout masks are drawn per process, so only without dropout do one process and several compute
the same; everything else in training and evaluation must not depend on the number of processes.
"""
import sys

import torch

import train
from options import EvalOptions, TrainOptions, parse_options
from utils.distributed import setup_distributed, teardown_distributed
from utils.evaluation.run import evaluate


def without_dropout(build_model):
    """`build_model` whose models have every dropout probability set to 0."""
    def build_model_without_dropout(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model
    return build_model_without_dropout


def main(argv: list[str]) -> None:
    split = argv.index("--evaluate")
    torch.set_num_threads(1)
    train.build_model = without_dropout(train.build_model)
    context = setup_distributed()
    try:
        exit_code = train.train(parse_options(argv[:split], TrainOptions), context)
        evaluate(parse_options(argv[split + 1:], EvalOptions), context)
    finally:
        teardown_distributed()
    sys.exit(exit_code)


if __name__ == "__main__":
    main(sys.argv[1:])
