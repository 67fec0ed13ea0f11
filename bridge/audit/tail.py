"""Reading the end of an audit file: where the intact records stop and what the last one is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bridge.audit.chain import parse_line

CHUNK = 8192


@dataclass(frozen=True, slots=True)
class Tail:
    """`keep` bytes of whole records, then `torn` bytes of a broken last line; `last` is the
    last whole record's line (empty when there is none)."""

    keep: int
    torn: bytes
    last: bytes


def split_torn_tail(data: bytes) -> tuple[bytes, bytes]:
    """(intact part, torn tail): the tail is an unterminated or unparsable last line."""
    if not data:
        return data, b""
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        return data[:cut], data[cut:]
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    if parse_line(data[cut:]) is None:
        return data[:cut], data[cut:]
    return data, b""


def read_tail(path: Path) -> Tail:
    """The tail of `path`, read backwards from the end (files can be large)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return Tail(0, b"", b"")
    with handle:
        end = handle.seek(0, os.SEEK_END)
        start, data = end, b""
        # Three newlines in view means at least two whole lines after the first (partial) one:
        # enough to judge the last line and still know the record before it.
        while start > 0 and data.count(b"\n") < 3:
            start = max(0, start - CHUNK)
            handle.seek(start)
            data = handle.read(end - start)
    if start > 0:
        cut = data.index(b"\n") + 1
        start, data = start + cut, data[cut:]
    keep, torn = split_torn_tail(data)
    last = keep.rstrip(b"\n").rpartition(b"\n")[2]
    return Tail(start + len(keep), torn, last)
