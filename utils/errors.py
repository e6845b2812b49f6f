"""User-facing errors: one clear line per problem, no traceback."""
import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence


class UserError(Exception):
    """An error caused by the user's input (a file, a flag): one `error:` line per line of its
    message under `run_cli`, no traceback."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt, so that writers clean up."""


def note_on_stderr(line: str) -> None:
    """Tell the user something that is not an error: `note: <line>` on stderr."""
    print(f"note: {line}", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose argument errors are a UserError `-flag: problem` instead of its usage block."""

    def error(self, message: str):
        raise UserError(argument_problem(message))


def bounded(kind: type, low: float, high: float = math.inf, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite `kind` (int or float) in low..high (`above`: more than `low`)."""
    wanted = f"in {low:g}..{high:g}" if high < math.inf else f"{'>' if above else '>='} {low:g}"

    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value) or not low <= value <= high or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be a number {wanted}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names it in `invalid int value`
    return parse


def argument_problem(message: str) -> str:
    """argparse's error `message` as `-flag: problem`: the flag first, by its first spelling."""
    if match := re.fullmatch(r"argument ([^:/ ]+)(?:/\S+)?: (.*)", message, re.S):
        return f"{match[1]}: {match[2]}"
    if match := re.fullmatch(r"unrecognized arguments: (.*)", message, re.S):
        first, *rest = match[1].split() or [""]
        return f"{first}: unrecognized argument{f's {match[1]!r}' if rest else ''} (-h lists the flags)"
    if match := re.fullmatch(r"the following arguments are required: (.*)", message, re.S):
        names = ", ".join(name.split("/")[0] for name in match[1].split(", "))
        return f"{names}: required (-h lists the flags)"
    if match := re.fullmatch(r"ambiguous option: (\S+) could match (.*)", message, re.S):
        return f"{match[1]}: ambiguous, could be {match[2]}"
    return message


def library_problem(error: BaseException) -> str:
    """One line for an OSError or lmdb.Error no caller converted: the file, if named, and the reason."""
    if isinstance(error, OSError):
        subject = f"{error.filename}: " if error.filename else ""
        return subject + (error.strerror or str(error) or type(error).__name__)
    return f"LMDB store: {type(error).__name__}: {error}"


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _NamedStdout:
    """Standard output whose write errors name it (`<stdout>: No space left on device`)."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        return self._named(self._stream.write, text)

    def flush(self) -> None:
        self._named(self._stream.flush)

    @staticmethod
    def _named(operation: Callable, *arguments):
        try:
            return operation(*arguments)
        except OSError as error:
            error.filename = error.filename or "<stdout>"
            raise


def report_problems(problems: Sequence[str]) -> None:
    """Raise one UserError that lists every problem, one line each; nothing when there is none."""
    if problems:
        raise UserError("\n".join(problems))


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in this process's main thread; a process forked
    inside it (a DataLoader worker) keeps the default: SIGTERM ends it at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def terminate(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line `main`: a UserError, an OSError or an lmdb.Error becomes `error:` lines on
    stderr and exit code 2, a closed stdout exit 141, Ctrl-C 130, SIGTERM 143; anything else is a bug
    and keeps its traceback (docs/reliability.md, "The error boundary")."""
    import lmdb

    stdout, sys.stdout = sys.stdout, _NamedStdout(sys.stdout)
    try:
        with sigterm_raises():
            main()
            sys.stdout.flush()
    except UserError as error:
        for line in str(error).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(128 + signal.SIGPIPE)
    except (OSError, lmdb.Error) as error:
        print(f"error: {library_problem(error)}", file=sys.stderr)
        if getattr(error, "filename", None) == "<stdout>":
            _quiet_stdout()  # what it still holds is not flushed again at exit
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    finally:
        sys.stdout = stdout
