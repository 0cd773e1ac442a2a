"""JSON lines input, shared by the ``jsonl`` source, ``kestrel eval`` and
``kestrel record --input``: a line reader with a size limit, and parse errors
in plain words at ``file:line:column``.

orjson parses (the core's JSON codec); this module only bounds what reaches
it and rewords its errors.  A bad line is never fatal here: the caller
counts it and reads on.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO, Iterator

import orjson

from .normalize import MAX_DEPTH

MAX_LINE_BYTES = 1 << 20
"""Longest line accepted (1 MiB, newline excluded).  An ECS event is a few
KiB; a longer line is skipped as ``line too long`` without being held in
memory whole.  ``max_line_bytes`` (source setting, ``--max-line-bytes``)
raises it."""

_CHUNK = 1 << 16


class LineError(ValueError):
    """A line that is not a JSON object; ``column`` is 1-based, in characters."""

    def __init__(self, message: str, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.column = column

    def located(self, name: str, lineno: int) -> str:
        return f"{name}:{lineno}:{self.column}: {self.message}"


def read_lines(fh: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | int]]:
    """``(line number, line without its newline)`` for each line, or
    ``(line number, length in bytes)`` for a line longer than
    ``max_line_bytes`` (its bytes are read past in chunks, never kept)."""
    lineno = 0
    readline = fh.readline
    while True:
        raw = readline(max_line_bytes + 1)
        if not raw:
            return
        lineno += 1
        if raw.endswith(b"\n"):
            yield lineno, raw[:-1]
            continue
        if len(raw) <= max_line_bytes:  # last line, no newline
            yield lineno, raw
            continue
        length = len(raw)
        while True:  # skip the rest of the overlong line
            more = readline(_CHUNK)
            if not more:
                break
            if more.endswith(b"\n"):
                length += len(more) - 1
                break
            length += len(more)
        yield lineno, length


def parse_value(raw: bytes) -> Any:
    """The JSON value on one line (without its newline); :class:`LineError`
    otherwise.  NaN and Infinity are refused (orjson), as is nesting deeper
    than :data:`~kestrel_core.normalize.MAX_DEPTH`."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        _check_depth(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _reword(raw, exc) from None


def parse_object(raw: bytes) -> dict[str, Any]:
    """The JSON object on one line (without its newline); :class:`LineError` otherwise."""
    record = parse_value(raw)
    if record.__class__ is not dict:
        kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
            record.__class__, "null")
        raise LineError(f"expected a JSON object, got {kind}", _first_column(raw))
    return record


def too_long(length: int, max_line_bytes: int = MAX_LINE_BYTES) -> LineError:
    return LineError(f"line too long ({length} bytes; the limit is {max_line_bytes}); skipped", 1)


def _column(raw: bytes, pos: int) -> int:
    return len(raw[:pos].decode("utf-8", "replace")) + 1


def _first_column(raw: bytes) -> int:
    return len(raw) - len(raw.lstrip()) + 1


_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _check_depth(raw: bytes) -> None:
    depth = 0
    for m in _STRING_OR_BRACKET.finditer(raw):
        c = raw[m.start()]
        if c in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise LineError(f"nested deeper than {MAX_DEPTH} levels", _column(raw, m.start()))
        elif c in b"]}":
            depth -= 1


def _reword(raw: bytes, exc: orjson.JSONDecodeError) -> LineError:
    """orjson's (yyjson's) message -> plain words, at the character column."""
    msg = exc.msg
    if "UTF-8" in msg:  # orjson checks the whole buffer first and says position 0
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            byte = raw[bad.start]
            if b"\x00" in raw:
                return LineError(f"binary data, not JSON text (byte 0x{byte:02X} is not UTF-8)",
                                 _column(raw, bad.start))
            return LineError(f"not UTF-8 text (byte 0x{byte:02X})", _column(raw, bad.start))
        return LineError("not UTF-8 text", 1)
    col = exc.colno  # orjson counts characters
    pos = len(raw.decode("utf-8", "replace")[:exc.pos].encode())  # the same place in bytes
    if msg == "unexpected end of data":
        return LineError("truncated JSON value", col)
    if msg == "unexpected control character in string":
        byte = raw[pos] if pos < len(raw) else 0
        if byte == 0 or raw.count(b"\x00"):
            return LineError("binary data, not JSON text (a NUL byte)", _column(raw, raw.find(b"\x00")))
        return LineError(f"control character 0x{byte:02X} inside a string (write it as \\u{byte:04x})", col)
    if msg.startswith("unexpected character, expected a JSON value"):
        rest = raw[pos:pos + 9]
        if b"\x00" in raw:
            return LineError("binary data, not JSON text (a NUL byte)", _column(raw, raw.find(b"\x00")))
        if rest.startswith((b"NaN", b"Infinity", b"-Infinity")):
            return LineError("NaN and Infinity are not JSON numbers", col)
        return LineError("invalid JSON: expected a JSON value", col)
    if msg == "unexpected content after document":
        return LineError("text after the JSON value (one object per line)", col)
    if msg == "number is infinity when parsed as double":
        return LineError("number out of range (beyond a 64-bit float)", col)
    if msg == "no low surrogate in string" or msg == "no high surrogate in string":
        return LineError("a \\u escape is half a surrogate pair", col)
    if msg == "failed to allocate memory":  # yyjson past its own depth limit
        return LineError(f"nested deeper than {MAX_DEPTH} levels", col)
    if msg.startswith("unexpected character, "):  # "expected ':' after key", "expected a string key", ...
        msg = msg[len("unexpected character, "):]
    return LineError(f"invalid JSON: {msg}", col)


def dump_json(value: Any) -> bytes:
    """``value`` as compact JSON (UTF-8), as orjson writes it, and the same for
    what orjson refuses: integers past 64 bits (a plugin source's or a golden
    test's value) and lone surrogates go through the standard library (ASCII
    output, ``\\udXXX`` escapes: valid JSON whatever the string held), and
    objects JSON has no form for are written as their ``str``."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        import json

        return json.dumps(value, default=str, separators=(",", ":")).encode("ascii")
