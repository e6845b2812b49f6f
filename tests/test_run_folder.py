"""One training run per run folder (utils/training/run_lock.py): the lock names its holder."""
import os
import socket

import pytest

from utils.errors import UserError
from utils.training.run_lock import LOCK_FILE, RunLock

HOLDER = f"on host {socket.gethostname()}"


def test_a_second_lock_on_a_folder_names_the_holder_and_the_released_lock_is_gone(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    with pytest.raises(UserError, match=f"{tmp_path}: the run folder is in use by another training run "
                                        rf"\(pid {os.getpid()} {HOLDER}\)"):
        second.acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    second.acquire()
    second.release()
