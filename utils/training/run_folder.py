"""The folder of one training run: what it holds, what the files are called, which are kept.

    <save_path>/<save_name>/
        config.yml                               resolved options and git commit (`write_config`)
        metrics.jsonl, tensorboard/              the loggers' (utils/training/loggers.py)
        visdial_dialog_encoder_<N>.ckpt          checkpoint after N iterations (the reference's name);
                                                 the last -keep_checkpoints are kept (`prune`)
        visdial_dialog_encoder_<N>.ckpt.rank<r>  gradients rank r had accumulated at checkpoint N
                                                 (torchrun, saved inside an accumulation window)
        visdial_dialog_encoder_best.ckpt         the best by val MRR (never pruned)

A run folder belongs to one run (`claim`): the run holds its lock (utils/training/run_lock.py)
while it lives, and a folder that holds checkpoints is reused only with -continue. Nothing is
written into it before every check of the run has passed; a folder that `claim` created and that
stays empty is removed again. Every file is written atomically (utils/outputs.py);
`remove_stale_temporaries` removes what a killed save left.
"""
import contextlib
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping, Union

import yaml

from utils.checkpoints.run_checkpoint import rank_file
from utils.distributed import broadcast_from_main, check_on_main
from utils.errors import UserError
from utils.outputs import Output, TEMPORARY_MARK, check_outputs, write_text
from utils.inputs import input_file
from utils.training.run_lock import RunLock

CHECKPOINT_PREFIX = "visdial_dialog_encoder_"
BEST_CHECKPOINT = CHECKPOINT_PREFIX + "best.ckpt"


class RunFolder:
    """The run folder at `path` (module docstring)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)

    @classmethod
    def named(cls, save_path: str, save_name: str, visdom_env: str = "") -> "RunFolder":
        """<save_path>/<save_name>, or <save_path>/<UTC time stamp>[_<visdom_env>] without a name
        (as the reference); under torchrun every rank gets rank 0's name."""
        name = save_name or datetime.now(timezone.utc).strftime("%d-%b-%y-%H-%M-%S") + (
            f"_{visdom_env}" if visdom_env else "")
        return cls(Path(save_path) / broadcast_from_main(name))

    def checkpoint(self, iteration: int) -> Path:
        return self.path / f"{CHECKPOINT_PREFIX}{iteration}.ckpt"

    @property
    def best(self) -> Path:
        return self.path / BEST_CHECKPOINT

    def checkpoints(self) -> list[tuple[int, Path]]:
        """The (iteration, path) of every periodic checkpoint, oldest first: the names this code writes,
        `<CHECKPOINT_PREFIX><ASCII digits>.ckpt` (another file there, `..._1².ckpt` too, is not one)."""
        found = []
        for path in self.path.glob(f"{CHECKPOINT_PREFIX}*.ckpt"):
            number = path.stem[len(CHECKPOINT_PREFIX):]
            if number.isascii() and number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def resume_from(self, start_path: str) -> Path:
        """The checkpoint -continue resumes from: `start_path` (-start_path, the reference's way) when
        given, else the newest periodic checkpoint of the folder; UserError without either, and for a
        `start_path` other than the newest checkpoint of a folder that holds some (the two runs'
        checkpoints would mix)."""
        checkpoints = self.checkpoints()
        if start_path and checkpoints and not os.path.samefile(input_file(start_path, "checkpoint"),
                                                               checkpoints[-1][1]):
            raise UserError(f"-start_path: {start_path} is not the newest checkpoint of the run folder {self.path} "
                            f"({checkpoints[-1][1].name}); continuing from it there would mix two runs' "
                            "checkpoints: give another -save_name (a new run folder), or leave out -start_path")
        if start_path:
            return Path(start_path)
        if checkpoints:
            return checkpoints[-1][1]
        raise UserError(f"{self.path}: no checkpoint to continue from ({CHECKPOINT_PREFIX}<iteration>.ckpt)")

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the `keep` newest periodic checkpoints (with their rank files); returns
        the deleted checkpoints."""
        checkpoints = self.checkpoints()
        doomed = [path for _, path in checkpoints[:max(0, len(checkpoints) - keep)]]
        for path in doomed:
            path.unlink(missing_ok=True)
            for part in path.parent.glob(rank_file(path, "*").name):
                part.unlink(missing_ok=True)
        return doomed

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files left by a process killed while saving; returns what was removed."""
        removed = []
        for path in self.path.glob(f".*{TEMPORARY_MARK}*"):
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    @contextlib.contextmanager
    def claim(self, inputs: Mapping[str, str], resume: bool, is_main: bool = True) -> Iterator[None]:
        """Hold the folder for this run during the block; UserError, before anything is written, when

        * the folder would overwrite or hold an input (`inputs`: flag -> path; utils/outputs.py), is
          a file, or cannot be created or written;
        * another run holds it (the error names its pid and host);
        * it holds checkpoints and `resume` (-continue) is not set.

        Under torchrun only rank 0 (`is_main`) checks and locks; every rank raises its error.
        """
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
            lock = RunLock(self.path)
            lock.acquire()
            try:
                if not resume and (self.checkpoints() or self.best.exists()):
                    raise UserError(f"{self.path}: holds the checkpoints of an earlier run; use -continue to "
                                    "resume it, or another -save_name")
                yield
            finally:
                lock.release()
        finally:
            for folder in created:  # innermost first; a folder that holds anything stays
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def check_space(self, needed_bytes: int) -> None:
        """UserError, naming the folder, when its disk has less than `needed_bytes` free (one checkpoint)."""
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes:
            raise UserError(f"{self.path}: only {free / 2**20:.0f} MiB free on this disk, a checkpoint "
                            f"needs about {needed_bytes / 2**20:.0f} MiB")

    def write_config(self, options: dict, commit: str) -> None:
        """config.yml: the run's options (flag name -> value) under a line naming the git commit."""
        write_text(self.path / "config.yml",
                   f"# visdial-bert run, git commit {commit}\n" + yaml.safe_dump(options, sort_keys=False))
