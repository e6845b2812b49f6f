"""torchrun with 2 CPU processes (gloo): identical parameters on both ranks, sharded validation,
and a checkpoint that loads in a single process."""
import socket
import subprocess
import sys

import torch

from models import build_model
from tests.train_helpers import fixture_flags, read_metrics
from models.weights import load_model_weights, parameters_sha256


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
