"""A command's outputs: checked against its inputs before any work (`check_outputs`), then written
through a temporary file or folder renamed into place, so a reader or a crash sees the previous
output or the whole new one."""
import contextlib
import errno
import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence, Union

from utils.errors import UserError, report_problems
from utils.inputs import PathLike

TEMPORARY_MARK = ".tmp-"
"""Temporary files are `.<name>.tmp-<pid>` next to their target (a killed writer leaves them)."""

Writer = Callable[[BinaryIO], None]


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


def resolved(path: PathLike, subject: str = "") -> Path:
    """The absolute `path`, symbolic links resolved; a loop (RuntimeError or OSError, by Python
    version) is a UserError naming `path` and `subject` (the flag that gave it)."""
    try:
        return Path(os.path.abspath(path)).resolve()
    except (RuntimeError, OSError) as error:
        reason = _reason(error) if isinstance(error, OSError) else "symbolic links form a loop"
        raise UserError(f"{path}: {subject + ': ' if subject else ''}cannot resolve it ({reason})") from None


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above `path`; returns those it created, the outermost first."""
    missing = [folder for folder in reversed(path.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_folders(folders: list[Path]) -> None:
    """Remove the folders `make_parents` created (innermost first) where they are still empty."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def _disk_error(error: BaseException):
    """The OSError behind `error` (torch.save turns a failed write into a RuntimeError), or None; a
    suppressed context (`raise ... from None`) is not behind it."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return error


def _failed(error: BaseException, path: Path, what: str, kept: str) -> BaseException:
    """A UserError for a failed write of `path` with an OSError (a full disk) behind it; anything
    else (a bug, our own UserError, Ctrl-C or SIGTERM) unchanged."""
    if isinstance(error, UserError) or not isinstance(error, Exception):
        return error
    if (disk_error := _disk_error(error)) is not None:
        return UserError(f"{path}: cannot write{' ' + what if what else ''} ({_reason(disk_error)}); {kept}")
    return error


@contextlib.contextmanager
def atomic_output(path: PathLike, what: str = "") -> Iterator[Path]:
    """Yield a temporary path to write `path` through; on success it replaces `path` atomically.
    `what` names the output in the error message ("cannot write the HDF5 feature store ...")."""
    path = Path(path)
    temporary = _temporary(path)
    created = []
    try:
        created = make_parents(path)
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):  # absent, or its folder is not one
            temporary.unlink()
        remove_folders(created)
        raise _failed(error, path, what, "the previous file, if any, is kept") from None


@contextlib.contextmanager
def atomic_folder(path: PathLike, what: str, extra: frozenset = frozenset()) -> Iterator[Path]:
    """Yield a temporary folder next to `path` to write a set of files into; when the block
    succeeds it takes the place of `path`. An existing `path` is replaced only when every file in
    it is one of the new set or matches a pattern of `extra` (`images/*.png`), else UserError; a
    failure leaves the previous folder as it was (docs/reliability.md, "Outputs as one set")."""
    path = Path(path)
    temporary = _temporary(path)
    created = []
    try:
        created = make_parents(path)
        temporary.mkdir()
        yield temporary
        if unknown := _foreign_files(path, temporary, extra):
            raise UserError(f"{path}: holds {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}, not "
                            f"{what}; not replaced (choose a new or empty folder)")
        if path.is_dir() and os.listdir(path):
            previous = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.rename(path, previous)
            os.rename(temporary, path)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, path)
        _fsync(path.parent)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        remove_folders(created)
        if isinstance(error, UserError):  # a writer names its file in the temporary folder: name it in place
            raise UserError(str(error).replace(str(temporary), str(path))) from None
        raise _failed(error, path, what, "the previous one, if any, is kept") from None


def _foreign_files(previous: Path, new: Path, extra: frozenset) -> list[str]:
    """The files and links under `previous` (relative, sorted) neither under `new` nor in `extra`."""
    foreign = []
    for root, folders, files in os.walk(previous):
        for name in files + [folder for folder in folders if os.path.islink(os.path.join(root, folder))]:
            relative = Path(root, name).relative_to(previous)
            if not (new / relative).exists() and not any(_matches(relative, pattern) for pattern in extra):
                foreign.append(relative.as_posix())
    return sorted(foreign)


def _matches(relative: Path, pattern: str) -> bool:
    """Whether a relative path matches a pattern folder by folder (`images/*.png`: not images/a/b.png)."""
    parts = PurePosixPath(pattern).parts
    return len(relative.parts) == len(parts) and all(map(fnmatch.fnmatchcase, relative.parts, parts))


def write_files(writers: Mapping[PathLike, Writer], what: str = "") -> None:
    """Write several files as one set: `writers` maps each path to a function that writes its
    content into a binary file; all are renamed into place only when all are complete, so a failure
    leaves every previous file as it was (a UserError names the file that failed)."""
    targets = [Path(path) for path in writers]
    temporaries = [_temporary(path) for path in targets]
    current, renamed, created = targets[0], 0, []
    try:
        for target, temporary, write in zip(targets, temporaries, writers.values()):
            current = target
            created += make_parents(target)
            with open(temporary, "wb") as file:
                write(file)
            _fsync(temporary)
        for target, temporary in zip(targets, temporaries):
            current = target
            os.replace(temporary, target)
            renamed += 1
        for folder in dict.fromkeys(target.parent for target in targets):
            _fsync(folder)
    except BaseException as error:
        for temporary in temporaries[renamed:]:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if not renamed:
            remove_folders(created)
        kept = ("the previous file, if any, is kept" if len(targets) == 1 else
                f"{renamed} of the {len(targets)} files were replaced, the others keep their previous content"
                if renamed else f"none of the {len(targets)} files was replaced")
        raise _failed(error, current, what, kept) from None


def atomic_write(path: PathLike, write: Writer, what: str = "") -> None:
    """Write a file with `write(binary file)` so that it is either the previous version or complete."""
    write_files({path: write}, what)


def json_writer(content) -> Writer:
    """A `Writer` of `content` as JSON (the `json` module's default formatting)."""
    return lambda file: file.write(json.dumps(content).encode())


def write_json(path: PathLike, content) -> None:
    """`content` as JSON, atomically."""
    write_files({path: json_writer(content)})


def write_text(path: PathLike, text: str) -> None:
    """`text` in UTF-8, atomically."""
    write_files({path: lambda file: file.write(text.encode("utf-8"))})


def check_writable(path: PathLike, what: str = "the output", is_folder: bool = False) -> None:
    """UserError `cannot write <what>` (`cannot create` for a folder not there yet) unless the
    nearest existing folder of `path` accepts a new file (one is created there and removed)."""
    path = Path(path)
    folder = path if is_folder else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent and not existing.is_symlink():
        existing = existing.parent
    verb = "create" if is_folder and existing != folder else "write"
    try:
        if not is_folder and path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"{path}: cannot {verb} {what} ({_reason(error)})") from None


@dataclass(frozen=True)
class Output:
    """One output of a command: `flag` names it as the user gave it (`-save_path/-save_name`),
    `what` in the writability message (`cannot write the output`)."""
    flag: str
    path: Path
    is_folder: bool = False
    what: str = "the output"


def _same(first: Path, second: Path) -> bool:
    """Whether two resolved paths are one file (equal, or hard links to one inode)."""
    if first == second:
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return False


def _kind_problem(output: Output) -> str:
    if output.is_folder and output.path.exists() and not output.path.is_dir():
        return f"{output.path}: the output {output.flag} is a file, expected a folder"
    if not output.is_folder and output.path.is_dir():
        return f"{output.path}: the output {output.flag} is a folder, expected a file"
    return ""


def _input_problem(output: Output, resolved_output: Path, flag: str, path: PathLike) -> str:
    """How `output` would destroy the input `flag` (at `path`), or ''."""
    resolved_input = resolved(path, flag)
    if _same(resolved_output, resolved_input):
        return (f"{output.path}: the output {output.flag} is the input {flag}; writing it would destroy "
                "the input (give the output another path)")
    if output.is_folder and resolved_output in resolved_input.parents:
        return (f"{output.path}: the output folder {output.flag} holds the input {flag} ({path}); "
                "choose a folder outside the inputs")
    if resolved_input in resolved_output.parents:
        return (f"{output.path}: the output {output.flag} is inside the input {flag} ({path}); "
                "choose a path outside the inputs")
    return ""


def check_outputs(outputs: Union[Sequence[Output], Mapping[str, PathLike]], inputs: Mapping[str, PathLike]) -> None:
    """UserError, one line per problem, for an output that is an input, holds one or lies inside
    one, two outputs at one path, then outputs that cannot be written. outputs: Outputs, or flag ->
    path of output files; inputs: flag -> path of everything read; empty paths skipped."""
    if isinstance(outputs, Mapping):
        outputs = [Output(flag, Path(path)) for flag, path in outputs.items() if str(path)]
    inputs = {flag: path for flag, path in inputs.items() if str(path)}
    resolved_outputs = [resolved(output.path, output.flag) for output in outputs]
    problems = []
    for index, output in enumerate(outputs):
        earlier = next((other for other, path in zip(outputs[:index], resolved_outputs)
                        if _same(path, resolved_outputs[index])), None)
        if earlier is not None:
            problems.append(f"{output.path}: the outputs {earlier.flag} and {output.flag} are the same path; "
                            "give each output its own")
            continue
        overlaps = [problem for flag, path in inputs.items()
                    if (problem := _input_problem(output, resolved_outputs[index], flag, path))]
        problems += overlaps[:1] or [problem for problem in [_kind_problem(output)] if problem]
    report_problems(problems)
    for output in outputs:
        check_writable(output.path, output.what, is_folder=output.is_folder)
