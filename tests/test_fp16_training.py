"""fp16 training through train.py's loop (utils/training/trainer.Trainer) on the demo's toy data: a
grad scaler that starts beyond what fp16 gradients hold overflows, the trainer skips those optimizer
steps and counts and reports each while the scale backs off, every loss stays finite and the loss
falls. On the CPU: autocast fp16 and the CPU grad scaler (train.py takes fp16 on a CUDA GPU only)."""
import contextlib
import json
import math
import statistics

import pytest
import torch

from models import build_model
from options import TrainOptions, parse_options
from utils.benchmarking.toy import make_toy_visdial
from utils.distributed import DistributedContext
from utils.training.data import build_training_data
from utils.training.checkpoints import CheckpointManager
from utils.training.loggers import TrainingLogger
from utils.training.run_state import RunState
from utils.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ITERATIONS = 24
INITIAL_SCALE = 2.0 ** 20  # fp16 holds up to 65,504: the first steps' scaled gradients overflow


def test_overflowing_fp16_steps_are_skipped_and_reported_and_the_loss_falls(tmp_path, repo_root):
    data_flags = make_toy_visdial(tmp_path / "toy", train_dialogs=40, val_dialogs=4, test_dialogs=2)
    options = parse_options([
        "-config", str(repo_root / "config/presets/toy.yml"), *data_flags, "-precision", "fp16", "-batch_size", "4",
        "-max_iterations", str(ITERATIONS), "-total_steps", str(ITERATIONS), "-warmup_steps", str(ITERATIONS // 6),
        "-log_every", "1", "-num_workers", "0", "-val_every", "-1", "-save_path", str(tmp_path / "runs"),
        "-save_name", "fp16"], TrainOptions)
    context = DistributedContext(0, 1, 0, torch.device("cpu"))
    torch.manual_seed(options.seed)
    model = build_model(options.model_config)
    folder = CheckpointManager(tmp_path / "runs" / "fp16")
    folder.path.mkdir(parents=True)
    state = RunState.start(model, options, "fp16")
    state.grad_scaler = torch.amp.GradScaler("cpu", init_scale=INITIAL_SCALE)
    trainer = Trainer(options, context, folder, state, build_training_data(options, context), model,
                      TrainingLogger(folder.path), "fp16", "fp16")
    with open(folder.path / "train.log", "w") as log, contextlib.redirect_stdout(log):
        assert trainer.run() == 0

    records = [json.loads(line) for line in (folder.path / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if record["event"] == "train"]
    overflows = [record["iteration"] for record in records if record["event"] == "overflow_step"]
    assert len(losses) == ITERATIONS == state.progress.iteration
    assert overflows[0] == 1 and state.progress.overflow_steps == len(overflows) < ITERATIONS // 2
    assert state.grad_scaler.get_scale() == INITIAL_SCALE / 2 ** len(overflows)  # halved at each overflow
    assert all(math.isfinite(loss) for loss in losses)
    assert statistics.fmean(losses[-3:]) < statistics.fmean(losses[:3])
