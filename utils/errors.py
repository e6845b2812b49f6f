"""User-facing errors: one clear line per problem, no traceback."""
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence


class UserError(Exception):
    """An error caused by the user's input (a file, a flag): printed as one `error:` line, no
    traceback. A message of several lines (see `report_problems`) prints one `error:` line each."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT, so that what is being
    written is cleaned up (temporary files removed) before the process exits."""


def note_on_stderr(line: str) -> None:
    """Tell the user something that is not an error (`note: <line>` on stderr), such as what an
    imported feature format lacks."""
    print(f"note: {line}", file=sys.stderr)


def report_problems(problems: Sequence[str]) -> None:
    """Raise one UserError that lists every problem, one line each; nothing when there is none."""
    if problems:
        raise UserError("\n".join(problems))


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in this process's main thread. A process forked
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
    """Run a command-line `main`, turning a UserError into `error: ...` lines on stderr and exit code 2.

    SIGINT (Ctrl-C) and SIGTERM stop it with one line and exit code 130 or 143, after the writers
    have removed their temporary files (training handles both itself: it saves, then stops).
    """
    try:
        with sigterm_raises():
            main()
    except UserError as error:
        for line in str(error).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
