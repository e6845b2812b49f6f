"""torchrun with 2 CPU processes (gloo). Two nodes on one machine: training with sharded validation
and a sharded evaluation equal one process with the same global batch, and their checkpoint
continues on one process (what changes with the number of processes: docs/training.md,
"Distributed training"). One node: gradient accumulation with -compile, per-rank pending gradients
and exact resume."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import evaluate
import train
from models import build_model
from models.weights import load_model_weights
from options import TrainOptions, parse_options
from tests.dropout_free_run import without_dropout
from tests.test_evaluate import golden_args
from tests.train_helpers import assert_bit_identical, final_weights, fixture_flags, read_metrics
from utils.distributed import DistributedContext
from utils.errors import UserError
from utils.training.checkpoints import _pending_gradients, parameters_sha256, save_checkpoint
from utils.training.resume_checks import _world_size_change


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# 3 iterations; the fixture's 3 train dialogs make one batch an epoch, so a checkpoint after every
# iteration. The one after iteration 1 holds the gradient of iteration 0 (its optimizer step comes
# with iteration 1's, as the reference's); on two nodes rank 1's is in a file of its own.
COMMON = ("-max_iterations", "3", "-val_every", "2", "-num_options", "10", "-num_val_samples", "3",
          "-keep_checkpoints", "3")


def max_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max((first[name].float() - second[name].float()).abs().max().item() for name in first)


def test_two_nodes_equal_one_process_and_continue_on_one(golden_dir, repo_root, tmp_path, single_thread_env,
                                                         monkeypatch, capsys):
    """Two torchrun agents on 127.0.0.1 (--nnodes 2, one gloo process each) train 3 iterations with
    sharded validation, then evaluate val sharded. One process with the same global batch (-batch_size
    4 instead of 2 per process) gets the same weights, to 1e-6; the two nodes' checkpoint inside an
    accumulation window continues on one process to the same weights; the sharded evaluation gives
    the metrics of one process. Dropout is off (tests/dropout_free_run.py): its masks are per process."""
    two_nodes = tmp_path / "two_nodes"
    evaluation = golden_args(golden_dir, tmp_path, "-split", "val", "-num_options", "10", "-start_path",
                             str(two_nodes / "visdial_dialog_encoder_3.ckpt"), "-save_name", "one_process")
    port = free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
         "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
         "-m", "tests.dropout_free_run", *fixture_flags(golden_dir, tmp_path, "two_nodes", *COMMON),
         "--evaluate", *evaluation, "-save_name", "two_nodes"],
        cwd=repo_root, env=single_thread_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    assert "1 iterations per epoch" in outputs[0][0]      # 3 train dialogs over 2 nodes: one image each
    checkpoint = torch.load(two_nodes / "visdial_dialog_encoder_3.ckpt", weights_only=True)
    per_rank = checkpoint["per_rank"]
    assert checkpoint["world_size"] == 2 and per_rank[0]["parameters_sha256"] == per_rank[1]["parameters_sha256"]
    model = build_model(golden_dir / "model_config.json")
    load_model_weights(model, two_nodes / "visdial_dialog_encoder_3.ckpt", strict=True)
    assert parameters_sha256(model) == per_rank[0]["parameters_sha256"]
    assert (two_nodes / "visdial_dialog_encoder_1.ckpt.rank1").is_file()
    records = read_metrics(two_nodes)
    assert [r["iteration"] for r in records if r["event"] == "train"] == [0, 1, 2]
    val = [r for r in records if r["event"] == "val"]
    assert len(val) == 1 and val[0]["iteration"] == 2 and 0 < val[0]["mrr"] <= 1

    # one process with the same global batch: 2 images (4 sequences) an iteration
    monkeypatch.setattr(train, "build_model", without_dropout(train.build_model))
    train.main(fixture_flags(golden_dir, tmp_path, "one", *COMMON, "-batch_size", "4"))
    one = final_weights(tmp_path / "one", 3)
    assert max_difference(final_weights(two_nodes, 3), one) <= 1e-6
    assert max_difference(final_weights(tmp_path / "one", 1), one) > 1e-3   # the weights did train

    # the two nodes' checkpoint inside the accumulation window continues on one process
    capsys.readouterr()
    train.main(fixture_flags(golden_dir, tmp_path, "continued", *COMMON, "-batch_size", "4", "-continue",
                             "-start_path", str(two_nodes / "visdial_dialog_encoder_1.ckpt")))
    assert "written by 2 process(es), this run has 1, with the same global batch of 4 sequences" \
        in capsys.readouterr().out
    assert max_difference(final_weights(tmp_path / "continued", 3), one) <= 1e-6

    # the sharded evaluation of the two nodes equals one process's
    evaluate.main(evaluation)
    assert json.loads((tmp_path / "two_nodes_metrics.json").read_text()) == \
        json.loads((tmp_path / "one_process_metrics.json").read_text())


def test_continuing_on_another_number_of_processes_says_what_changes():
    path = Path("visdial_dialog_encoder_8.ckpt")
    base = parse_options(["-batch_size", "4"], TrainOptions)
    assert "with the same global batch of 8 sequences" in _world_size_change(path, {"batch_size": 2}, 4, base, 2)
    changed = _world_size_change(path, {"batch_size": 4}, 4, base, 2)
    assert changed.startswith("warning:") and "from 16 to 8 sequences" in changed and "-batch_size 8 keeps it" in changed
    dense = parse_options(["-mode", "dense"], TrainOptions)
    assert "one annotated round per iteration" in _world_size_change(path, {}, 2, dense, 1)


def test_pending_gradients_of_old_ranks_are_averaged_or_refused(tmp_path):
    checkpoint = tmp_path / "visdial_dialog_encoder_5.ckpt"
    gradients = [{"w": torch.full((2,), float(rank))} for rank in range(4)]
    per_rank = [{"pending_gradients": gradients[0]}]
    for rank in range(1, 4):
        save_checkpoint(tmp_path / f"{checkpoint.name}.rank{rank}", gradients[rank])
        per_rank.append({"pending_gradients_file": f"{checkpoint.name}.rank{rank}"})

    def on(rank: int, world_size: int, entries=per_rank) -> dict:
        return _pending_gradients(entries, checkpoint, DistributedContext(rank, world_size, rank, torch.device("cpu")))

    assert torch.equal(on(3, 4)["w"], torch.full((2,), 3.0))                 # same processes: its own
    assert torch.equal(on(0, 1)["w"], torch.full((2,), 1.5))                 # 4 -> 1: the mean of all
    assert torch.equal(on(1, 2)["w"], torch.full((2,), 2.0))                 # 4 -> 2: ranks 1 and 3
    with pytest.raises(UserError, match="continues on 4 processes or a divisor of it, not on 3"):
        on(0, 3)
    assert on(2, 3, entries=[{"rng": None}, {"rng": None}]) == {}             # nothing pending: any number


def _train_two_processes(rank: int, ports: list, runs: list, out_dir) -> None:
    """One of two processes (gloo): runs train.main with every argv of `runs` in turn, each in its
    own process group; records, for the first run, whether each iteration's backward was to
    all-reduce and how many gradient buckets it all-reduced, and what DDP wrapped."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    import train
    from utils.training import trainer

    torch.set_num_threads(1)
    # torch.compile still returns its wrapper (OptimizedModule) but traces nothing: this is about the
    # order of compile and DDP, not about the compiler (tracing this model takes a minute of CPU)
    torch._dynamo.config.disable = True
    all_reduces, steps, wrapped = [0], [], []

    def counting_hook(state, bucket):
        all_reduces[0] += 1
        return allreduce_hook(None, bucket)

    def wrap_and_count(model, context):
        wrapped.append(type(model).__name__)
        ddp = real_wrap(model, context)
        ddp.register_comm_hook(None, counting_hook)
        return ddp

    def recording_step(model, batch, settings, sync_gradients=True):
        before = all_reduces[0]
        result = real_step(model, batch, settings, sync_gradients)
        steps.append((sync_gradients, all_reduces[0] - before))
        return result

    real_wrap, real_step = train.wrap_model, trainer.base_step
    train.wrap_model, trainer.base_step = wrap_and_count, recording_step
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    for port, argv in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)
        train.main(argv)
        if port == ports[0]:
            torch.save({"steps": steps, "wrapped": wrapped}, out_dir / f"compiled_rank{rank}.pt")


def test_torchrun_accumulation_all_reduces_once_per_step_and_resumes_exactly(golden_dir, tmp_path):
    """Two gloo processes. With -compile and -batch_multiply 2, DDP wraps the compiled model and
    gradients are all-reduced only in the backward before an optimizer step. A checkpoint inside
    an accumulation window keeps rank 1's pending gradients in a file of its own, and continuing
    from it (without -compile, which does not change the numbers) gives the weights of an
    uninterrupted run."""
    common = ("-batch_multiply", "2", "-val_every", "-1", "-num_options", "10")
    runs = [fixture_flags(golden_dir, tmp_path, "split", *common, "-compile", "-max_iterations", "4"),
            fixture_flags(golden_dir, tmp_path, "split", *common, "-max_iterations", "6", "-continue"),
            fixture_flags(golden_dir, tmp_path, "whole", *common, "-max_iterations", "6")]
    mp.spawn(_train_two_processes, args=([free_port() for _ in runs], runs, tmp_path), nprocs=2)

    for rank in range(2):
        recorded = torch.load(tmp_path / f"compiled_rank{rank}.pt", weights_only=True)
        assert recorded["wrapped"] == ["OptimizedModule"]             # compiled first, then wrapped
        syncs = [sync for sync, _ in recorded["steps"]]
        assert syncs == [False, False, True, False]                   # the step after iterations 0-2
        all_reduces = [count for _, count in recorded["steps"]]
        assert all_reduces[2] >= 1 and all_reduces[:2] == [0, 0] and all_reduces[3] == 0

    checkpoint = torch.load(tmp_path / "split" / "visdial_dialog_encoder_4.ckpt", weights_only=True)
    per_rank = checkpoint["per_rank"]
    assert per_rank[0]["pending_gradients"] and "pending_gradients" not in per_rank[1]
    rank1_file = tmp_path / "split" / per_rank[1]["pending_gradients_file"]
    assert rank1_file.name == "visdial_dialog_encoder_4.ckpt.rank1"
    rank1_gradients = torch.load(rank1_file, weights_only=True)
    assert rank1_gradients.keys() == per_rank[0]["pending_gradients"].keys()
    assert any(not torch.equal(rank1_gradients[name], gradient)
               for name, gradient in per_rank[0]["pending_gradients"].items())

    continued = torch.load(tmp_path / "split" / "visdial_dialog_encoder_6.ckpt", weights_only=True)
    whole = torch.load(tmp_path / "whole" / "visdial_dialog_encoder_6.ckpt", weights_only=True)
    assert_bit_identical(continued["model_state_dict"], whole["model_state_dict"])
    assert [rank["parameters_sha256"] for rank in continued["per_rank"]] == [
        rank["parameters_sha256"] for rank in whole["per_rank"]]
