"""Reading input files with limits: regular files only, a size cap checked before reading, UTF-8
(a byte-order mark and CRLF or CR line ends accepted), JSON without NaN or Infinity, torch.save
files without running pickled code; every problem is one UserError line naming the file (`what`
names its kind: "model config not found")."""
import json
import math
import os
import pickle
import stat
from pathlib import Path
from typing import Union

import numpy as np

from utils.errors import UserError

PathLike = Union[str, os.PathLike]

SMALL_FILE_BYTES = 1 << 20
"""Model configs and presets: a few kB each."""
DATA_FILE_BYTES = 2 << 30
"""VisDial json files and dense annotations (the largest released one is about 0.2 GB)."""


def is_json_number(value) -> bool:
    """Whether a value read from a json file is a finite number (an int or a float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_text(value) -> bool:
    """Whether a value is a string that encodes to UTF-8 (not one with a lone surrogate, which json
    escapes and lenient decodings make)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB" \
        if count >= 2**20 else f"{count} bytes"


def input_file(path: PathLike, what: str) -> Path:
    """`path` as a Path when it is a regular file (links followed); else a UserError naming it:
    not found, a folder, or another kind of file (a device, a FIFO, a socket)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: not a regular file (a device, FIFO or socket), not a {what}")
    return path


def read_bytes(path: PathLike, what: str, max_bytes: int) -> bytes:
    """The content of a regular file of at most `max_bytes` bytes (UserError otherwise)."""
    path = input_file(path, what)
    too_large = f"{path}: larger than the {_size(max_bytes)} a {what} may have"
    if path.stat().st_size > max_bytes:
        raise UserError(f"{too_large} ({_size(path.stat().st_size)})")
    try:
        with open(path, "rb") as handle:
            content = handle.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None
    if len(content) > max_bytes:
        raise UserError(too_large)
    return content


def read_text(path: PathLike, what: str, max_bytes: int = SMALL_FILE_BYTES) -> str:
    """A UTF-8 text file of at most `max_bytes` bytes, as an editor may save it: a byte-order mark
    is dropped and CRLF or CR line ends read as LF. Binary content is a UserError."""
    return _decoded(read_bytes(path, what, max_bytes), path, what)


def _decoded(content: bytes, path: PathLike, what: str) -> str:
    try:
        text = content.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a text file (byte {error.start} is 0x{content[error.start]:02x}, not UTF-8)") \
            from None
    if "\x00" in text:
        raise UserError(f"{path}: not a text file (it holds NUL bytes)")
    return text


def _backslashes_before(raw: bytes, position: int) -> int:
    count = 0
    while count < position and raw[position - count - 1] == ord("\\"):
        count += 1
    return count


def _string_quotes(raw: bytes) -> np.ndarray:
    """Positions of the quotes that open or close json strings (not those after an odd number of
    backslashes); vectorised, since UTF-8 never puts an ASCII byte inside a multi-byte character."""
    data = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    after_backslash = quotes[quotes > 0]
    after_backslash = after_backslash[data[after_backslash - 1] == ord("\\")]
    escaped = [position for position in after_backslash.tolist() if _backslashes_before(raw, position) % 2]
    return np.delete(quotes, np.searchsorted(quotes, escaped))


def _first_boolean(raw: bytes, quotes: np.ndarray) -> int:
    """The position of the first `true` or `false` outside strings, or -1."""
    found = []
    for literal in (b"true", b"false"):
        position = raw.find(literal)
        while position >= 0 and np.searchsorted(quotes, position) % 2:
            position = raw.find(literal, position + 1)
        found.append(position)
    return min((position for position in found if position >= 0), default=-1)


def read_json(path: PathLike, what: str, max_bytes: int = DATA_FILE_BYTES, booleans: bool = True):
    """Parse a json file of at most `max_bytes`; UserError naming the file.

    booleans=False: the file's schema has no boolean anywhere (the VisDial files), so a `true` or
    `false` is a wrong type wherever it is (Python would take it for the integer 1 or 0)."""
    content = read_bytes(path, what, max_bytes)
    if not booleans and (position := _first_boolean(content, _string_quotes(content))) >= 0:
        line = content.count(b"\n", 0, position) + 1
        raise UserError(f"{path}: a true/false at line {line}, where this file holds only numbers, strings, "
                        "lists and objects")

    def refuse_constant(name: str):
        raise ValueError(f"{name} is not a number json allows")

    try:
        return json.loads(_decoded(content, path, what), parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno} column {error.colno}: {error.msg})") from None
    except ValueError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested deeper than the reader can follow)") from None


def read_checkpoint(path: PathLike, what: str = "checkpoint") -> dict:
    """The dict a torch.save file holds, loaded onto the CPU with weights_only=True (pickled code is
    refused, never run); UserError if it cannot be. what: how messages name the file."""
    import torch  # here, not at the top: the shared base stays cheap to import

    path = input_file(path, what)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's boilerplate holds one line "... unsupported GLOBAL module.name ..." for pickled code
        code = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if code:
            raise UserError(f"{path}: refused to load: the {what} needs pickled code, which is "
                            f"never executed ({code[0]})") from None
        raise UserError(f"{path}: not a PyTorch {what} (weights-only loading cannot read it)") from None
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: not a PyTorch {what} ({reason})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: not a {what} (holds a {type(content).__name__}, expected a dict)")
    return content
