"""A training run's folder and its checkpoints in one object (as the VisDial starter's CheckpointManager):
save, keep the last N and the best, find the newest, continue exactly, one run per folder."""
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import socket
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Union

import torch
import yaml
from torch import nn

from models.weights import load_state_into
from options import TrainOptions
from utils.distributed import DistributedContext, broadcast_from_main, check_on_main, gather_to_main
from utils.errors import UserError
from utils.inputs import input_file, read_checkpoint
from utils.outputs import TEMPORARY_MARK, Output, atomic_write, check_outputs, write_text
from utils.random_state import RandomState
from utils.training.resume_checks import check_for_resume, check_gradients, check_optimizer_fit, model_config_record
from utils.training.run_state import Progress, RunState

CHECKPOINT_PREFIX = "visdial_dialog_encoder_"
LOCK_FILE = ".train.lock"


class CheckpointManager:
    """The run folder at `path` (its files: docs/training.md, "the run folder")."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._lock_descriptor: Optional[int] = None

    @classmethod
    def named(cls, save_path: str, save_name: str, visdom_env: str = "") -> "CheckpointManager":
        """<save_path>/<save_name>, or <save_path>/<UTC time stamp>[_<visdom_env>] without a name
        (as the reference); under torchrun every rank gets rank 0's name."""
        name = save_name or datetime.now(timezone.utc).strftime("%d-%b-%y-%H-%M-%S") + (
            f"_{visdom_env}" if visdom_env else "")
        return cls(Path(save_path) / broadcast_from_main(name))

    def checkpoint(self, iteration: int) -> Path:
        return self.path / f"{CHECKPOINT_PREFIX}{iteration}.ckpt"

    @property
    def best(self) -> Path:
        return self.path / f"{CHECKPOINT_PREFIX}best.ckpt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """The (iteration, path) of every periodic checkpoint, oldest first: only the names this code
        writes, `<CHECKPOINT_PREFIX><ASCII digits>.ckpt`."""
        numbered = ((path.stem[len(CHECKPOINT_PREFIX):], path) for path in self.path.glob(f"{CHECKPOINT_PREFIX}*.ckpt"))
        return sorted((int(number), path) for number, path in numbered if number.isascii() and number.isdigit())

    def newest(self) -> Optional[Path]:
        checkpoints = self.checkpoints()
        return checkpoints[-1][1] if checkpoints else None

    def resume_from(self, start_path: str) -> Path:
        """The checkpoint -continue resumes from: `start_path` when given, else the newest; UserError
        without either, and for a `start_path` other than the newest checkpoint of a folder that holds
        some (the two runs' checkpoints would mix)."""
        newest = self.newest()
        if start_path and newest and not os.path.samefile(input_file(start_path, "checkpoint"), newest):
            raise UserError(f"-start_path: {start_path} is not the newest checkpoint of the run folder {self.path} "
                            f"({newest.name}); continuing from it there would mix two runs' "
                            "checkpoints: give another -save_name (a new run folder), or leave out -start_path")
        if start_path:
            return Path(start_path)
        if newest:
            return newest
        raise UserError(f"{self.path}: no checkpoint to continue from ({CHECKPOINT_PREFIX}<iteration>.ckpt)")

    def save(self, state: RunState, options: TrainOptions, context: DistributedContext, best: bool = False) -> Path:
        """Write the checkpoint of `state` after its iterations (or the best one), then keep the last
        -keep_checkpoints; returns its path. Every rank calls this: rank 0 writes the checkpoint,
        another rank its pending gradients into a file of its own next to it."""
        path = self.best if best else self.checkpoint(state.progress.iteration)
        pending = {name: parameter.grad.detach().cpu() for name, parameter in state.model.named_parameters()
                   if parameter.grad is not None}
        mine = {"rng": RandomState.capture().to_checkpoint(), "parameters_sha256": parameters_sha256(state.model)}
        if pending and not context.is_main:
            save_checkpoint(_rank_file(path, context.rank), pending)
            mine["pending_gradients_file"] = _rank_file(path, context.rank).name
        per_rank = gather_to_main(mine)
        if not context.is_main:
            return path
        per_rank[0]["pending_gradients"] = pending
        save_checkpoint(path, {
            "model_state_dict": state.model.state_dict(),
            "optimizer_state_dict": state.optimizer.state_dict(),
            "scheduler_state_dict": {"warmup_steps": state.schedule.warmup_steps,
                                     "total_steps": state.schedule.total_steps,
                                     "min_lr": state.schedule.min_lr},
            "grad_scaler_state_dict": state.grad_scaler.state_dict(),
            "iter_id": state.progress.iteration,
            "epoch": state.progress.epoch,
            "progress": asdict(state.progress),
            "per_rank": per_rank,
            "world_size": context.world_size,
            "options": options.to_dict(),
            "git_commit": git_commit(),
            "model_config": model_config_record(state.model.config),
        })
        if not best:
            self.prune(options.keep_checkpoints)
        return path

    def prune(self, keep: int) -> None:
        """Delete all but the `keep` newest periodic checkpoints, with their rank files."""
        checkpoints = self.checkpoints()
        for _, path in checkpoints[:max(0, len(checkpoints) - keep)]:
            path.unlink(missing_ok=True)
            for part in path.parent.glob(_rank_file(path, "*").name):
                part.unlink(missing_ok=True)

    def read_for_resume(self, start_path: str, options: TrainOptions,
                        say: Callable[[str], None]) -> tuple[Path, dict]:
        """The checkpoint -continue resumes from (`resume_from`) and its content, checked against
        `options` before any heavy work (utils/training/resume_checks.py); warnings go to `say`."""
        path = self.resume_from(start_path)
        content = read_checkpoint(path)
        for warning in check_for_resume(content, path, options, git_commit()):
            say(warning)
        return path, content

    @staticmethod
    def restore(path: Path, content: dict, state: RunState, context: DistributedContext,
                say: Callable[[str], None]) -> None:
        """Put the checkpoint `content` of `read_for_resume` back into `state`, exactly: the weights,
        optimizer and grad-scaler states, progress, this rank's pending gradients and random state."""
        check_optimizer_fit(content["optimizer_state_dict"], state.optimizer, path)
        per_rank = content["per_rank"]

        def check(gradients: dict, rank: int) -> None:
            check_gradients(gradients, state.model, f"{path} (pending gradients of rank {rank})",
                            finite=content["progress"]["window_finite"])

        pending = _pending_gradients(per_rank, path, context, check)
        load_state_into(state.model, content["model_state_dict"], path, strict=True)
        state.optimizer.load_state_dict(content["optimizer_state_dict"])
        if content["grad_scaler_state_dict"]:
            state.grad_scaler.load_state_dict(content["grad_scaler_state_dict"])
        state.progress = Progress(**content["progress"])
        parameters = dict(state.model.named_parameters())
        for name, gradient in pending.items():
            parameters[name].grad = gradient.to(parameters[name].device)
        RandomState.from_checkpoint(per_rank[min(context.rank, len(per_rank) - 1)]["rng"]).restore()
        say(f"continuing from {path}: iteration {state.progress.iteration}, epoch {state.progress.epoch}")

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of a process killed while saving; returns what was removed."""
        removed = list(self.path.glob(f".*{TEMPORARY_MARK}*"))
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    @contextlib.contextmanager
    def claim(self, inputs: Mapping[str, str], resume: bool, is_main: bool = True) -> Iterator[None]:
        """Hold the folder for this run during the block; UserError, before anything is written, when
        it would overwrite or hold an input (`inputs`: flag -> path), cannot be created, is locked by
        another run (named), or holds checkpoints without `resume` (-continue). A folder it created
        and that stays empty is removed again. Under torchrun rank 0 (`is_main`) checks and locks."""
        with contextlib.ExitStack() as held:
            check_on_main(lambda: held.enter_context(self._held(inputs, resume)), is_main)
            yield

    @contextlib.contextmanager
    def _held(self, inputs: Mapping[str, str], resume: bool) -> Iterator[None]:
        check_outputs([Output("-save_path/-save_name", self.path, is_folder=True, what="the run folder")], inputs)
        created = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        try:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"{self.path}: cannot create the run folder ({error.strerror})") from None
            self.lock()
            try:
                if not resume and (self.checkpoints() or self.best.exists()):
                    raise UserError(f"{self.path}: holds the checkpoints of an earlier run; use -continue to "
                                    "resume it, or another -save_name")
                yield
            finally:
                self.unlock()
        finally:
            for folder in created:  # innermost first; a folder that holds anything stays
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def lock(self) -> None:
        """Take an exclusive flock on the folder's .train.lock and write this process into it, or
        UserError naming the process that holds it. The kernel lets go when the process ends."""
        lock_file = self.path / LOCK_FILE
        while True:
            try:
                descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise UserError(f"{self.path}: cannot lock the run folder ({error.strerror})") from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "a process being started"
                os.close(descriptor)
                raise UserError(f"{self.path}: the run folder is in use by another training run ({holder}); "
                                "wait for it to end, or use another -save_name") from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock_file).st_ino == os.fstat(descriptor).st_ino:
                    break
            os.close(descriptor)  # its holder removed the file after we opened it: lock the new one
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._lock_descriptor = descriptor

    def unlock(self) -> None:
        """Remove the lock file, then let the lock go (a process waiting on the old file retries)."""
        if self._lock_descriptor is None:
            return
        (self.path / LOCK_FILE).unlink(missing_ok=True)
        os.close(self._lock_descriptor)
        self._lock_descriptor = None

    def check_space(self, model: nn.Module) -> None:
        """UserError, naming the folder, when its disk cannot hold a checkpoint of `model` (its
        weights, two AdamW moments and some slack)."""
        needed = int(sum(p.numel() * p.element_size() for p in model.parameters()) * 3 * 1.1) + 2**20
        free = shutil.disk_usage(self.path).free
        if free < needed:
            raise UserError(f"{self.path}: only {free / 2**20:.0f} MiB free on this disk, a checkpoint "
                            f"needs about {needed / 2**20:.0f} MiB")

    def write_config(self, options: TrainOptions) -> None:
        """config.yml: the run's options (flag name -> value) under a line naming the git commit."""
        write_text(self.path / "config.yml", f"# visdial-bert run, git commit {git_commit()}\n"
                   + yaml.safe_dump(options.to_dict(), sort_keys=False))


def _pending_gradients(per_rank: list[dict], checkpoint: Path, context: DistributedContext,
                       check: Callable[[dict, int], None] = lambda gradients, rank: None) -> dict:
    """This process's gradients pending at the checkpoint (accumulated since the last optimizer
    step): on the checkpoint's number of processes its rank's own; on N processes from a checkpoint
    of M = k N the mean of those of the old ranks r with r % N == its rank (the next step's
    all-reduce then averages the same sum); UserError for any other change inside an accumulation
    window. `check(gradients, old_rank)` sees each old rank's gradients before they are used."""
    saved_world_size = len(per_rank)
    if saved_world_size == context.world_size:
        gradients = _rank_pending_gradients(per_rank[context.rank], checkpoint)
        check(gradients, context.rank)
        return gradients
    if not any(entry.get("pending_gradients") or "pending_gradients_file" in entry for entry in per_rank):
        return {}
    if saved_world_size % context.world_size:
        raise UserError(f"{checkpoint}: written by {saved_world_size} processes inside an accumulation window "
                        f"(-batch_multiply): it continues on {saved_world_size} processes or a divisor of it, "
                        f"not on {context.world_size}")
    old_ranks = range(context.rank, saved_world_size, context.world_size)
    pending = [_rank_pending_gradients(per_rank[rank], checkpoint) for rank in old_ranks]
    for gradients, rank in zip(pending, old_ranks):
        check(gradients, rank)
        if set(gradients) != set(pending[0]):
            raise UserError(f"{checkpoint}: the pending gradients of old ranks {old_ranks[0]} and {rank} "
                            "name different parameters")
    return {name: torch.stack([gradients[name] for gradients in pending]).mean(dim=0) for name in pending[0]}


def _rank_pending_gradients(entry: dict, checkpoint: Path) -> dict:
    if "pending_gradients_file" in entry:
        return read_checkpoint(checkpoint.parent / entry["pending_gradients_file"])
    return entry.get("pending_gradients", {})


def _rank_file(checkpoint: Path, rank) -> Path:
    """Where rank `rank` keeps its pending gradients of `checkpoint` (rank "*": the glob of every rank's)."""
    return checkpoint.with_name(f"{checkpoint.name}.rank{rank}")


def save_checkpoint(path: Union[str, Path], content: dict) -> None:
    """torch.save `content` (tensors and plain containers, so that it loads with weights_only=True)
    atomically to `path`."""
    atomic_write(path, lambda file: torch.save(content, file))


def parameters_sha256(model: nn.Module) -> str:
    """A hash of every parameter's bytes: equal on all ranks when they hold the same weights."""
    digest = hashlib.sha256()
    for _, parameter in sorted(model.named_parameters()):
        digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@functools.cache
def git_commit() -> str:
    """The commit hash of the code this process runs (with '-dirty' when files had changed when it
    was first asked), or 'unknown'."""
    repo_dir = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo_dir, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if status.strip() else "")
