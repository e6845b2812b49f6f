"""User-facing errors: one clear line per problem, no traceback."""
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An error caused by the user's input (a file, a flag): printed as one `error:` line, no
    traceback. A message of several lines (see `report_problems`) prints one `error:` line each."""


def report_problems(problems: Sequence[str]) -> None:
    """Raise one UserError that lists every problem, one line each; nothing when there is none."""
    if problems:
        raise UserError("\n".join(problems))


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line `main`, turning a UserError into `error: ...` lines on stderr and exit code 2."""
    try:
        main()
    except UserError as error:
        for line in str(error).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
