"""The hash chain itself, pure: canonical form, record hashes, file naming and the chain check.

A record is a flat JSON object with `seq` (1, 2, …), `ts`, `kind`, `prev` (the previous record's
hash; 64 zeros for the first) and `hash`, the SHA-256 of the record's canonical form without
`hash`: keys sorted, no whitespace, ASCII only (so no Unicode normalisation can change the bytes).
Changing, dropping or reordering any record breaks the chain from that point on.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import json.encoder
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GENESIS = "0" * 64
CURRENT_FILE = "audit.jsonl"
ROTATED_PATTERN = re.compile(r"audit\.(\d{6})\.jsonl")
HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers (the record must not contain `hash`)."""
    return _ENCODE(record).encode("ascii")


def _json_dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _fast_dumps() -> Callable[[Mapping[str, Any]], str]:
    """What `_json_dumps` writes, byte for byte, with the C encoder that `json.dumps` builds on
    every call built once: every record is sealed when written and again when verified, and
    building encoders was a fifth of `audit verify`'s time. The arguments are the ones
    `JSONEncoder.iterencode` passes for `_json_dumps`'s options, less the cycle check (a record
    is a flat mapping). Where the C encoder is missing or differs, `json.dumps` itself."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _json_dumps

    def refuse(value: object) -> object:  # as JSONEncoder.default: only JSON's own types
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    try:
        encoder = make(
            None, refuse, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False
        )
    except TypeError:  # another Python's signature
        return _json_dumps

    def dumps(record: Mapping[str, Any]) -> str:
        return "".join(encoder(record, 0))

    sample = {"b": [1, 2.5, None, True], "a": "é\n\u2028", "c": {"z": -1e300, "y": ""}}
    return dumps if dumps(sample) == _json_dumps(sample) else _json_dumps


_ENCODE = _fast_dumps()


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(record: Mapping[str, Any]) -> tuple[bytes, str]:
    """The line to write for `record` (hash appended last, newline-terminated) and its hash."""
    body = canonical(record)
    value = digest(body)
    # Splicing the hash in after the canonical body avoids serialising the record twice.
    return body[:-1] + b',"hash":"' + value.encode("ascii") + b'"}\n', value


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """A line as a record, or None when it is not a JSON object (torn, or garbage)."""
    try:
        # Decoded first: `json.loads` of bytes works out their encoding, which took half its
        # time. A line that is not UTF-8 is no record either (UnicodeDecodeError is a ValueError).
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def rotated_name(number: int) -> str:
    return f"audit.{number:06d}.jsonl"


def rotated_files(directory: Path) -> list[tuple[int, Path]]:
    """Rotated files, oldest first, with their numbers."""
    found = []
    for path in directory.glob("audit.*.jsonl"):
        match = ROTATED_PATTERN.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


DIRECTORY = "audit"  # under the state directory


def head_mark(directory: Path) -> str:
    """`seq:hash` of the last parsable record of the chain in `directory`; "0:" when none."""
    mark = "0:"
    for record in read_records(directory):
        if isinstance(record.get("seq"), int):
            mark = f"{record['seq']}:{record.get('hash', '')}"
    return mark


def chain_files(directory: Path) -> list[Path]:
    """Every file of the log in chain order: rotated files by number, then the current file."""
    files = [path for _, path in rotated_files(directory)]
    current = directory / CURRENT_FILE
    if current.exists():
        files.append(current)
    return files


class Fault(enum.StrEnum):
    """How a record breaks the chain."""

    EDITED = "edited"  # its own hash does not match its content
    UNPARSABLE = "unparsable"  # not a JSON object: overwritten bytes, or a torn line mid-file
    DELETED = "deleted"  # records are missing before it (seq gap)
    REORDERED = "reordered"  # it arrives out of order (seq goes backwards or repeats)
    RELINKED = "relinked"  # seq fits but prev is not the previous record's hash
    TRUNCATED = "truncated"  # the log ends before a head published earlier
    DIVERGED = "diverged"  # the record at a published head has a different hash


@dataclass(frozen=True, slots=True)
class Problem:
    """The first place the chain breaks."""

    fault: Fault
    message: str
    file: str = ""
    line: int = 0
    seq: int | None = None

    def describe(self) -> str:
        record = f"record {self.seq}" if self.seq is not None else ""
        if self.file:
            where = f"{self.file}:{self.line}" + (f" ({record})" if record else "")
        else:  # a fault of the log as a whole (cut short): it ends at this record
            where = f"the end of the log ({record})" if record else "the end of the log"
        return f"{where}: {self.fault}: {self.message}"


@dataclass(slots=True)
class ChainState:
    """What the next record must link to."""

    seq: int = 0
    hash: str = GENESIS

    def check(self, raw: bytes, record: dict[str, Any]) -> tuple[Fault, str] | None:
        """Is `record`, read from the line `raw`, the valid next link? Advances the state when
        it is."""
        fault = self._fault(raw, record)
        if fault is None:
            self.seq, self.hash = record["seq"], record["hash"]
        return fault

    def _fault(self, raw: bytes, record: dict[str, Any]) -> tuple[Fault, str] | None:
        if not is_sealed(raw, record):
            return Fault.EDITED, "the line is not the one its hash seals"
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return Fault.EDITED, "seq is not an integer"
        if seq > self.seq + 1:
            missing = f"{self.seq + 1}" if seq == self.seq + 2 else f"{self.seq + 1}..{seq - 1}"
            return Fault.DELETED, f"record(s) {missing} missing before it"
        if seq <= self.seq:
            return Fault.REORDERED, f"seq {seq} after seq {self.seq}"
        if record.get("prev") != self.hash:
            return Fault.RELINKED, f"prev does not match record {self.seq}'s hash"
        return None


def is_sealed(raw: bytes, record: dict[str, Any]) -> bool:
    """Is `raw` (a line without its newline) exactly what `seal` writes for `record`'s content?

    Comparing bytes, not only the hash of what the line parses to: JSON readers keep the last of
    two equal keys, so `{"app":"ha",…,"app":"nodered",…}` hashes like the sealed record while a
    person, `grep`, or a reader that keeps the first key sees another one. Spaces, escapes and
    key order likewise change a line without changing what it parses to."""
    claimed = record.get("hash")
    if not isinstance(claimed, str) or HEX64.fullmatch(claimed) is None:
        return False
    body = {k: v for k, v in record.items() if k != "hash"}
    try:
        line, _ = seal(body)
    except ValueError:  # NaN or Infinity smuggled in: not something we ever write
        return False
    return line[:-1] == raw


def read_records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every parsable record of the chain, oldest first (a torn last line is skipped), even
    while another process appends and rotates (see `chain_view`)."""
    with chain_view(directory) as (rotated, current):
        for path in rotated:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            yield from _parsed(data)
        if current is not None:
            yield from _parsed(current.read())


@contextlib.contextmanager
def chain_view(directory: Path) -> Iterator[tuple[list[Path], BinaryIO | None]]:
    """The rotated files, oldest first, and a handle on the current file (None when there is
    none): the whole chain as it stood at one moment, for reading while another process
    appends and rotates. The current file is opened before the rotated files are listed, so a
    rotation in between only moves it into that list, where it is recognised by its inode and
    left out (it is read through the handle). Listed first, the file a rotation moved aside
    was never read, and its records were missing."""
    try:
        current: BinaryIO | None = (directory / CURRENT_FILE).open("rb")
    except FileNotFoundError:  # none yet, or it is being rotated: the list holds it
        current = None
    with current or contextlib.nullcontext():
        held = os.fstat(current.fileno()).st_ino if current is not None else None
        rotated = []
        for _, path in rotated_files(directory):
            if held is not None and _inode(path) == held:
                break  # ours, rotated since we opened it; later ones are newer still
            rotated.append(path)
        yield rotated, current


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _parsed(data: bytes) -> Iterator[dict[str, Any]]:
    for raw in lines_of(data):
        record = parse_line(raw)
        if record is not None:
            yield record


def lines_of(data: bytes) -> Iterator[bytes]:
    """`data.splitlines()`, one line at a time. A 10 MB file is some 25,000 lines of a few
    hundred bytes: made all at once, they filled that many megabytes of small-object memory,
    which Python kept after they were freed (the daemon stayed 7 MB larger after a start that
    had read its audit file)."""
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start)
        end = size if end == -1 else end
        line = data[start:end]
        if b"\r" in line:  # a stray carriage return ends a line for splitlines too
            yield from line.splitlines()
        else:
            yield line
        start = end + 1


def lines_newest_first(data: bytes) -> Iterator[bytes]:
    """`reversed(data.splitlines())`, one line at a time (see `lines_of`)."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    while end >= 0 and data:
        start = data.rfind(b"\n", 0, end) + 1
        line = data[start:end]
        if b"\r" in line:
            yield from reversed(line.splitlines())
        else:
            yield line
        end = start - 1


def records_newest_first(directory: Path) -> Iterator[dict[str, Any]]:
    """Every parsable record of the chain, newest first, with one file in memory at a time:
    the whole log, held at once, grows with every month the bridge runs (see `rotate_bytes`)."""
    for path in reversed(chain_files(directory)):
        if not path.exists():
            continue
        for raw in lines_newest_first(path.read_bytes()):
            record = parse_line(raw)
            if record is not None:
                yield record
