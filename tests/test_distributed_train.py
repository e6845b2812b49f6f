"""torchrun with 2 CPU processes (gloo): identical parameters on both ranks, sharded validation,
a checkpoint that loads in a single process; gradient accumulation with -compile, per-rank pending
gradients and exact resume."""
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp

from models import build_model
from models.weights import load_model_weights, parameters_sha256
from tests.train_helpers import assert_bit_identical, fixture_flags, read_metrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_training(golden_dir, repo_root, tmp_path, single_thread_env):
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "train.py",
               *fixture_flags(golden_dir, tmp_path, "ddp", "-max_iterations", "3", "-val_every", "2",
                              "-num_options", "10", "-num_val_samples", "3")]
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300,
                            env=single_thread_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "ddp"
    # 3 train dialogs over 2 ranks: one image per rank and epoch
    assert "1 iterations per epoch" in result.stdout
    checkpoint = torch.load(run_dir / "visdial_dialog_encoder_3.ckpt", weights_only=True)
    per_rank = checkpoint["per_rank"]
    assert checkpoint["world_size"] == 2 and len(per_rank) == 2
    assert per_rank[0]["parameters_sha256"] == per_rank[1]["parameters_sha256"]

    model = build_model(golden_dir / "model_config.json")
    load_model_weights(model, run_dir / "visdial_dialog_encoder_3.ckpt", strict=True)
    assert parameters_sha256(model) == per_rank[0]["parameters_sha256"]
    initial = build_model(golden_dir / "model_config.json")
    assert parameters_sha256(initial) != per_rank[0]["parameters_sha256"]

    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records if r["event"] == "train"] == [0, 1, 2]
    val = [r for r in records if r["event"] == "val"]
    assert len(val) == 1 and val[0]["iteration"] == 2 and 0 < val[0]["mrr"] <= 1


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
