"""The content checks of scripts/download_*.sh: is a downloaded file what it should be?

    printf 'json\tdata/visdial/visdial_1.0_val_processed.json\n' | python -m scripts.check_download

Reads one request a line on stdin, `CHECK<tab>FILE`, and answers each with one line on stdout:
`ok`, or what is wrong with FILE (the calling script names the URL). One process serves a whole
download run, so torch is imported once, and only when a checkpoint comes. Every FILE must not be
a web page (an error page served with status 200); CHECK is `lmdb` (the released LMDB layout, by
the project's reader), `json` (parses within the input limits), `checkpoint` (opens with
`torch.load(weights_only=True)`, a dict) or `sha256:<hex>`.
"""
import argparse
import hashlib
import sys
import warnings
from pathlib import Path

from utils.errors import ArgumentParser, UserError, run_cli
from utils.inputs import read_checkpoint, read_json


def check_not_a_web_page(path: Path) -> None:
    with open(path, "rb") as handle:
        start = handle.read(1024)
    if start.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):  # after a UTF-8 BOM and blanks
        raise UserError("a web page (HTML), not the file")


def check_lmdb(path: Path) -> None:
    from dataloader.feature_store import LmdbFeatureStore
    LmdbFeatureStore(path)


def check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise UserError(f"sha256 is {digest.hexdigest()}, expected {expected}")


CHECKS = {"lmdb": check_lmdb, "json": lambda path: read_json(path, "json file"), "checkpoint": read_checkpoint}


def verdict(check: str, path: Path) -> str:
    """'ok', or what is wrong with the file at `path` (one line)."""
    try:
        check_not_a_web_page(path)
        if check.startswith("sha256:"):
            check_sha256(path, check.removeprefix("sha256:"))
        else:
            CHECKS[check](path)
    except UserError as error:
        # the readers name the file (a .part); the calling script names the URL instead
        return str(error).replace(f"{path}: ", "")
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    return "ok"


def main(argv=None) -> None:
    ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    warnings.simplefilter("ignore")  # the verdicts are the only output
    for request in iter(sys.stdin.readline, ""):
        check, _, path = request.rstrip("\n").partition("\t")
        print(verdict(check, Path(path)), flush=True)


if __name__ == "__main__":
    run_cli(main)
