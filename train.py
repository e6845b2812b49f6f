"""Train visdial-bert: base training (MLM + NSP + masked regions) or dense-annotation finetuning.

The paper's three runs (config/presets/*.yml hold their flags; flags given after -config win):

    python train.py -config config/presets/base.yml        # base model from the VQA weights
    python train.py -config config/presets/dense.yml       # dense finetuning, no NSP loss
    python train.py -config config/presets/dense_nsp.yml   # dense finetuning with the NSP loss

One process uses one GPU (or the CPU). For several GPUs or nodes, launch it with torchrun:

    torchrun --nproc_per_node=8 train.py -config config/presets/base.yml
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
             --nproc_per_node=8 train.py -config config/presets/base.yml

A run writes into <save_path>/<save_name>/ (docs/training.md); SIGTERM or SIGINT saves and exits,
and the same command with -continue resumes exactly.
"""
import sys

import torch
import yaml

from models import build_model
from options import TrainOptions, model_config_for, parse_options, resolve_precision
from utils.distributed import DistributedContext, barrier, setup_distributed, teardown_distributed, wrap_model
from utils.errors import report_problems, run_cli
from utils.random_state import seed_everything
from utils.training.checkpoints import CheckpointManager
from utils.training.data import build_training_data
from utils.training.loggers import TrainingLogger
from utils.training.run_state import RunState
from utils.training.trainer import Trainer


def train(options: TrainOptions, context: DistributedContext) -> int:
    """Claim the run folder, build the run and train; returns the process exit code. Nothing is
    written into the run folder before every check has passed."""
    precision = resolve_precision(options.precision, context.device)
    folder = CheckpointManager.named(options.save_path, options.save_name, options.visdom_env)
    with folder.claim(options.input_paths(), options.resume, context.is_main):
        return build_and_train(options, context, folder, precision)


def build_and_train(options: TrainOptions, context: DistributedContext, folder: CheckpointManager,
                    precision: str) -> int:
    """The checks and the building of the run, then its first writes into `folder`, then training."""
    say = print if context.is_main else (lambda message: None)
    for note in options.unused_flags(context.world_size):
        say(note)
    checkpoint = folder.read_for_resume(options.start_path, options, say) if options.resume else None
    data = build_training_data(options, context)

    seed_everything(options.seed)
    # -continue restores its checkpoint's weights below; a new run starts from -bert_init, then -start_path
    start_path, bert_init = (None, None) if options.resume else (options.start_path, options.bert_init)
    model = build_model(model_config_for(options, data.dataset), options.model_type, start_path, strict=False,
                        bert_init=bert_init, say=say)
    model.to(context.device)
    if context.is_main:
        folder.check_space(model)
    state = RunState.start(model, options, precision)
    if checkpoint:
        folder.restore(*checkpoint, state, context, say)

    # every check has passed: from here on the run writes into its folder
    if context.is_main and (removed := folder.remove_stale_temporaries()):
        say(f"removed {len(removed)} incomplete file(s) of a killed save")
    barrier()
    # compiled first, then wrapped: DistributedDataParallel stays outermost (its no_sync works)
    train_model = wrap_model(torch.compile(model) if options.compile else model, context)
    visdom = {"server": options.visdom_server, "port": options.visdom_server_port, "env": options.visdom_env}
    logger = TrainingLogger(folder.path, enabled=context.is_main, tensorboard=bool(options.tensorboard),
                            visdom=visdom if options.enable_visdom else None)
    if context.is_main:
        folder.write_config(options)
        logger.log_text(yaml.safe_dump(options.to_dict(), sort_keys=False))
    # validation is evaluation: under -precision auto in fp32, as evaluate.py runs, so that the best
    # checkpoint is picked by the metrics evaluate.py will report
    validation_precision = resolve_precision(options.precision, context.device, evaluation=True)
    return Trainer(options, context, folder, state, data, train_model, logger, precision, validation_precision).run()


def main(argv=None) -> None:
    options = parse_options(argv, TrainOptions)
    report_problems(options.problems())
    context = setup_distributed()
    try:
        exit_code = train(options, context)
    finally:
        teardown_distributed()
    if exit_code:
        sys.exit(exit_code)


if __name__ == "__main__":
    run_cli(main)
