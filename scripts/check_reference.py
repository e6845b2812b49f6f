"""Check this implementation against a reference fixture folder (laid out like ../shared/golden).

    python scripts/check_reference.py --fixtures ../shared/golden              # every check
    python scripts/check_reference.py --fixtures ../shared/golden --only eval  # one group: model, data, eval
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


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", "-fixtures", required=True, type=Path,
                        help="fixture folder laid out like ../shared/golden")
    parser.add_argument("--only", "-only", choices=sorted(CHECK_GROUPS), action="append",
                        type=lambda name: {"evaluation": "eval"}.get(name, name),
                        help="run only this group of checks (repeatable)")
    args = parser.parse_args(argv)
    if not args.fixtures.is_dir():
        raise UserError(f"{args.fixtures}: fixture folder not found")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = []
    for name in args.only or CHECK_GROUPS:
        try:  # an error inside a group is one failed row, not a crash
            results += CHECK_GROUPS[name](args.fixtures)
        except UserError as error:
            results.append(CheckResult(f"{name}: could not run", False, None, str(error)))
    width = max(len(result.name) for result in results)
    for result in results:
        diff = "" if result.max_abs_diff is None else f"{result.max_abs_diff:.3g}"
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name:<{width}}  {diff:>9}  {result.detail}")
    failed = sum(not result.passed for result in results)
    print(f"\n{len(results) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
