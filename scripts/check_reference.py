"""Check this implementation against a reference fixture folder (laid out like ../shared/golden).

    python scripts/check_reference.py --fixtures ../shared/golden              # every check
    python scripts/check_reference.py --fixtures ../shared/golden --only eval  # one group

Prints one row per check (its max abs difference where numeric) and exits 1 when any check
fails. A fixture file that is absent is reported as absent, never as passed. The groups:
model (utils/conformance/model.py), data (utils/conformance/data.py) and eval
(utils/conformance/evaluation.py; `evaluation` is accepted as its old name).
"""
import sys
from pathlib import Path

import torch

from utils.conformance.common import CheckResult
from utils.conformance.data import data_checks
from utils.conformance.evaluation import eval_checks
from utils.conformance.model import model_checks
from utils.errors import ArgumentParser, UserError, run_cli

CHECK_GROUPS = {"model": model_checks, "data": data_checks, "eval": eval_checks}
GROUP_ALIASES = {"evaluation": "eval"}


def run_group(name: str, check, fixtures: Path) -> list:
    """Run one group of checks; an error inside it becomes one failed row, not a crash."""
    try:
        return check(fixtures)
    except UserError as error:
        return [CheckResult(f"{name}: could not run", False, None, str(error))]


def print_table(results: list) -> None:
    width = max(len(result.name) for result in results)
    for result in results:
        status = "PASS" if result.passed else "FAIL"
        diff = "" if result.max_abs_diff is None else f"{result.max_abs_diff:.3g}"
        print(f"{status}  {result.name:<{width}}  {diff:>9}  {result.detail}")


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", "-fixtures", required=True, type=Path,
                        help="fixture folder laid out like ../shared/golden")
    parser.add_argument("--only", "-only", choices=sorted(CHECK_GROUPS), action="append",
                        type=lambda name: GROUP_ALIASES.get(name, name),
                        help="run only this group of checks (repeatable)")
    args = parser.parse_args(argv)
    if not args.fixtures.is_dir():
        raise UserError(f"{args.fixtures}: fixture folder not found")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = []
    for name in args.only or CHECK_GROUPS:
        results += run_group(name, CHECK_GROUPS[name], args.fixtures)
    print_table(results)
    failed = sum(not result.passed for result in results)
    print(f"\n{len(results) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
