"""One training run per run folder: an OS file lock that names its holder.

`RunLock(folder).acquire()` takes an exclusive `fcntl.flock` on `<folder>/.train.lock` and writes
`pid <pid> on host <host>` into it; a second process asking for the same folder gets a UserError
naming that holder at once (no waiting). The kernel releases the lock when the holding process
ends, however it ends, so a SIGKILL leaves no stale lock: the file may remain, but the next run
locks it. `release()` removes the file. flock works between processes of one machine (and on most
network file systems between machines, but not all: do not share a run folder across hosts).
"""
import fcntl
import os
import socket
from pathlib import Path
from typing import Optional

from utils.errors import UserError

LOCK_FILE = ".train.lock"


class RunLock:
    """The lock of one run folder (module docstring)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self._descriptor: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the process that holds it."""
        while True:
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise UserError(f"{self.path.parent}: cannot lock the run folder ({error.strerror})") from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "a process being started"
                os.close(descriptor)
                raise UserError(f"{self.path.parent}: the run folder is in use by another training run ({holder}); "
                                "wait for it to end, or use another -save_name") from None
            if self._still_the_file(descriptor):
                break
            os.close(descriptor)  # its holder removed the file after we opened it: lock the new one
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._descriptor = descriptor

    def _still_the_file(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file, then let the lock go (a process waiting on the old file retries)."""
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None
