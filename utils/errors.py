"""User-facing errors: one clear line, no traceback."""
import sys
from typing import Callable


class UserError(Exception):
    """An error caused by the user's input (a file, a flag): printed as one line, no traceback."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line `main`, turning a UserError into `error: ...` on stderr and exit code 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
