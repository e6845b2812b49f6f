"""A training run's checkpoints: saved atomically, read and checked for -continue, restored exactly
(run_checkpoint.py). Model weights are read by models/weights.py."""
from utils.checkpoints.run_checkpoint import (Checkpoint, Progress, estimated_checkpoint_bytes, git_commit,
                                              read_run_state, restore_run_state, save_checkpoint,
                                              save_run_state)

__all__ = ["Checkpoint", "Progress", "estimated_checkpoint_bytes", "git_commit", "read_run_state",
           "restore_run_state", "save_checkpoint", "save_run_state"]
