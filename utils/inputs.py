"""Reading input files with limits: every text and JSON input of the project goes through here.

A user can name anything as an input: a folder, a device (`/dev/zero` reads forever), a FIFO (an
open blocks until some writer appears), a file of many gigabytes, a file of binary junk, or JSON
nested so deeply that the parser overflows. `input_file` admits regular files only, and
`read_text` / `read_json` read at most a size limit (checked before reading), decode UTF-8 (with
or without a byte-order mark, any line ends) and parse, turning each of these into one UserError line naming the file:

    config = read_json("config/toy_model.json", "model config", max_bytes=SMALL_FILE_BYTES)

`what` names the kind of file in the messages ("data/x.json: file not found", "...: is a folder,
not a model config").

JSON's non-standard `NaN` / `Infinity` are refused, and nesting deeper than `MAX_JSON_DEPTH`
levels is refused before Python's parser recurses into it.
"""
import json
import math
import os
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
MAX_JSON_DEPTH = 64
"""The deepest nesting any json of the project has is 6 levels (a round's answer_options)."""


def is_json_number(value) -> bool:
    """Whether a value read from a json file is a finite number (an int or a float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_text(value) -> bool:
    """Whether a value is a string that encodes to UTF-8 (json escapes and lenient decodings make
    lone surrogates, which do not)."""
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
    """Positions of the quotes that open or close json strings: a quote preceded by an odd number
    of backslashes is escaped (only those right after a backslash are looked at one by one).
    Vectorised over the bytes; UTF-8 never puts an ASCII byte inside a multi-byte character."""
    data = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    after_backslash = quotes[quotes > 0]
    after_backslash = after_backslash[data[after_backslash - 1] == ord("\\")]
    escaped = [position for position in after_backslash.tolist() if _backslashes_before(raw, position) % 2]
    return np.delete(quotes, np.searchsorted(quotes, escaped))


def json_depth(raw: bytes, quotes: np.ndarray) -> int:
    """The deepest nesting of `[` and `{` in a json text, brackets inside strings (after an odd
    number of the string `quotes`) not counted. Up to the first syntax error this is the parser's
    own view, so the parser never nests deeper than this number."""
    data = np.frombuffer(raw, dtype=np.uint8)
    brackets = np.flatnonzero((data == ord("[")) | (data == ord("]")) | (data == ord("{")) | (data == ord("}")))
    brackets = brackets[np.searchsorted(quotes, brackets) % 2 == 0]
    opening = (data[brackets] == ord("[")) | (data[brackets] == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1)).max(initial=0))


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
    """Parse a json file (see the module docstring for the limits); UserError naming the file.

    booleans=False: the file's schema has no boolean anywhere (the VisDial files), so a `true` or
    `false` is a wrong type wherever it is (Python would take it for the integer 1 or 0)."""
    content = read_bytes(path, what, max_bytes)
    quotes = _string_quotes(content)
    depth = json_depth(content, quotes)
    if depth > MAX_JSON_DEPTH:
        raise UserError(f"{path}: json nested {depth} levels deep, more than the {MAX_JSON_DEPTH} allowed")
    if not booleans and (position := _first_boolean(content, quotes)) >= 0:
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
