"""Writing outputs: every file is written atomically, and every output is checked before work starts.

`atomic_output(path)` hands out a temporary path in the same folder; when the block succeeds the
file is flushed to disk and renamed over `path` (a rename is atomic), so a reader, a crash or a
SIGKILL sees the previous file or the complete new one, never a part of it. `atomic_write`,
`write_json` and `write_text` build on it; writers that need a path (HDF5) use it directly. On a
failure (disk full, no permission) the temporary file is removed and a UserError names the path.

`check_writable` fails early, before any heavy work, when an output cannot be written.
"""
import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

from utils.errors import UserError

TEMPORARY_MARK = ".tmp-"
"""Temporary files are `.<name>.tmp-<pid>` next to their target (a killed writer leaves them)."""

PathLike = Union[str, os.PathLike]


def _reason(error: OSError) -> str:
    """The short reason of an OSError ('No space left on device'), also for h5py's long messages."""
    if error.errno:
        return os.strerror(error.errno)
    return error.strerror or (str(error).splitlines()[0] if str(error) else type(error).__name__)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_output(path: PathLike, what: str = "") -> Iterator[Path]:
    """Yield a temporary path to write `path` through; on success it replaces `path` atomically.

    what: names the output in the error message ("cannot write the HDF5 feature store ...").
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):  # absent, or its folder is not one
            temporary.unlink()
        if isinstance(error, OSError):
            raise UserError(f"{path}: cannot write{' ' + what if what else ''} ({_reason(error)}); "
                            "the previous file, if any, is kept") from None
        raise


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None], what: str = "") -> None:
    """Write a file with `write(binary file)` so that it is either the previous version or complete."""
    with atomic_output(path, what) as temporary, open(temporary, "wb") as file:
        write(file)


def write_json(path: PathLike, content) -> None:
    """`content` as JSON (the `json` module's default formatting), atomically."""
    atomic_write(path, lambda file: file.write(json.dumps(content).encode()))


def write_text(path: PathLike, text: str) -> None:
    """`text` in UTF-8, atomically."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def check_writable(path: PathLike, what: str = "the output", is_folder: bool = False) -> None:
    """Fail early, naming `path`, when an output cannot be written.

    For a file, its folder is created if needed and a file is created and removed in it; for a
    folder (`is_folder`), the same for the folder itself. The UserError says `cannot write <what>`
    (`cannot create <what>` when a folder cannot be created).
    """
    path = Path(path)
    folder = path if is_folder else path.parent
    verb = "create" if is_folder else "write"
    try:
        if not is_folder and path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        folder.mkdir(parents=True, exist_ok=True)
        verb = "write"
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"{path}: cannot {verb} {what} ({_reason(error)})") from None
