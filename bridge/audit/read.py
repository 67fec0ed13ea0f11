"""The audit log for people: the last N matching records, new ones as they come, one line each."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bridge.audit.chain import (
    CURRENT_FILE,
    chain_files,
    chain_view,
    lines_of,
    parse_line,
    records_newest_first,
    rotated_files,
)
from bridge.audit.tail import read_tail

# Shown first, in this order, by `format_record`; the rest follow as key=value.
LEAD_KEYS = ("app", "vehicle", "command", "action", "decision", "status", "reason")
HIDDEN_KEYS = frozenset({"seq", "ts", "kind", "prev", "hash"})


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records to show. `kind` matches exactly or as a dotted prefix (`command`)."""

    app: str | None = None
    vehicle: str | None = None
    kind: str | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.app is not None and record.get("app") != self.app:
            return False
        if self.vehicle is not None and record.get("vehicle") != self.vehicle:
            return False
        kind = str(record.get("kind", ""))
        return self.kind is None or kind == self.kind or kind.startswith(self.kind + ".")


def last_records(directory: Path, count: int, wanted: RecordFilter) -> list[dict[str, Any]]:
    """The last `count` matching records, oldest first, reading files newest first."""
    found: list[dict[str, Any]] = []
    if count <= 0:
        return found
    for record in records_newest_first(directory):
        if wanted.matches(record):
            found.append(record)
            if len(found) >= count:
                break
    return found[::-1]


class NewestSeq:
    """Records passed on as they are read, noting the newest seq among them (`newest`, `start`
    until one is newer): how far a pass over the log got, for a caller that remembers it."""

    def __init__(self, records: Iterable[Mapping[str, Any]], start: int) -> None:
        self.records = records
        self.newest = start

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for record in self.records:
            seq = record.get("seq")
            if isinstance(seq, int) and seq > self.newest:
                self.newest = seq
            yield record


def records_after(directory: Path, after_seq: int) -> Iterator[dict[str, Any]]:
    """The records with a seq above `after_seq`, oldest first, opening only the files that
    can hold them (each file's first record says where it starts). Another process may rotate
    the log meanwhile: the files are taken as one moment's view (`chain_view`), or a rotation
    after they were listed hid the records of the file moved aside."""
    with chain_view(directory) as (rotated, current):
        data = current.read() if current is not None else b""
        first = _first_seq_of(data)
        start = len(rotated)
        while start > 0 and (first is None or first > after_seq):
            start -= 1
            first = _first_seq(rotated[start])
        for path in rotated[start:]:
            yield from _after(path.read_bytes(), after_seq)
        yield from _after(data, after_seq)


def _after(data: bytes, after_seq: int) -> Iterator[dict[str, Any]]:
    for raw in lines_of(data):
        record = parse_line(raw)
        seq = record.get("seq") if record is not None else None
        if record is not None and isinstance(seq, int) and seq > after_seq:
            yield record


def _first_seq_of(data: bytes) -> int | None:
    record = parse_line(data.split(b"\n", 1)[0])
    seq = record.get("seq") if record is not None else None
    return seq if isinstance(seq, int) else None


def _first_seq(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return _first_seq_of(handle.readline())
    except OSError:
        return None


def last_seq(directory: Path) -> int:
    """The seq of the last whole record of the log (0 when it has none)."""
    for path in reversed(chain_files(directory)):
        record = parse_line(read_tail(path).last)
        if record is not None and isinstance(record.get("seq"), int):
            return int(record["seq"])
    return 0


def follow(
    directory: Path,
    wanted: RecordFilter,
    *,
    after_seq: int | None = None,
    poll_s: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[dict[str, Any]]:
    """Records appended from now on (or, with `after_seq`, every record after that one), across
    rotations, until `keep_going()` is false.

    A rotation is noticed between polls, and by then the writer may have added to the old file
    after our last read, or rotated more than once: the old file is read to its end, then every
    file rotated after it, before the new current file is read from its start."""
    path = directory / CURRENT_FILE
    seen = after_seq if after_seq is not None else -1
    if after_seq is None:
        handle, backlog = _open_at_end(path), []
    else:
        handle = _open_at_start(path)
        backlog = _rotated_since(directory, after_seq, handle)
    pending = b""
    try:
        while keep_going():
            chunk = handle.read() if handle is not None else b""
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for record in _records([*backlog, *complete]):
                seen, fresh = _advance(seen, record)
                if fresh and wanted.matches(record):
                    yield record
            backlog = []
            if chunk:
                continue
            if _rotated(handle, path):
                handle, backlog = _after_rotation(directory, handle, pending)
                pending = b""
                continue
            time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()


def _advance(seen: int, record: dict[str, Any]) -> tuple[int, bool]:
    """(the newest seq passed, whether `record` comes after it): nothing is shown twice."""
    seq = record.get("seq")
    if not isinstance(seq, int) or seen < 0:
        return (seq if isinstance(seq, int) else seen), True
    return max(seen, seq), seq > seen


def _rotated_since(directory: Path, after_seq: int, current: BinaryIO | None) -> list[bytes]:
    """The lines of rotated files that may hold records after `after_seq` (a rotation between
    reading the last records and starting to follow), oldest first; not the one `current` has
    open, should it have been rotated meanwhile."""
    skip = None
    if current is not None:
        first = parse_line(current.readline().rstrip(b"\n"))
        current.seek(0)
        if (
            first is not None
            and isinstance(first.get("seq"), int)
            and first["seq"] <= after_seq + 1
        ):
            return []  # the current file starts early enough: no rotation to catch up with
        skip = os.fstat(current.fileno()).st_ino
    found: list[bytes] = []
    for _, file in reversed(rotated_files(directory)):
        if _inode(file) == skip:
            continue
        lines = file.read_bytes().split(b"\n")
        found[:0] = lines
        first = next((r for r in _records(lines[:1])), None)
        if first is None or not isinstance(first.get("seq"), int) or first["seq"] <= after_seq:
            break
    return found


def _records(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        record = parse_line(raw)
        if record is not None:
            yield record


def _after_rotation(
    directory: Path, old: BinaryIO | None, pending: bytes
) -> tuple[BinaryIO | None, list[bytes]]:
    """The new current file (open at its start) and the lines written since our last read that
    are not in it: the rest of the old file, and the whole of any file rotated after it."""
    path = directory / CURRENT_FILE
    if old is None:  # the log did not exist when we started: nothing came before this file
        return _open_at_start(path), []
    missed = (pending + old.read()).split(b"\n")
    ours = os.fstat(old.fileno()).st_ino
    old.close()
    new = _open_at_start(path)
    current = os.fstat(new.fileno()).st_ino if new is not None else None
    rotated = [file for _, file in rotated_files(directory)]
    inodes = [_inode(file) for file in rotated]
    if ours in inodes:  # rotated, not deleted or replaced: files moved aside after it follow
        after = inodes.index(ours) + 1
        for file, inode in zip(rotated[after:], inodes[after:], strict=True):
            if inode == current:
                break  # the file we just opened was rotated too: read through `new`
            missed += file.read_bytes().split(b"\n")
    return new, missed


def format_record(record: dict[str, Any]) -> str:
    """`ts #seq kind app=… vehicle=… …` on one line."""
    parts = [str(record.get("ts", "?")), f"#{record.get('seq', '?')}", str(record.get("kind", "?"))]
    keys = [k for k in LEAD_KEYS if k in record]
    keys += sorted(k for k in record if k not in HIDDEN_KEYS and k not in LEAD_KEYS)
    parts += [f"{key}={_show(record[key])}" for key in keys if record[key] not in (None, "")]
    return " ".join(parts)


def _show(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text.isprintable()) else text


def _open_at_end(path: Path) -> BinaryIO | None:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    handle.seek(0, os.SEEK_END)
    return handle


def _rotated(handle: BinaryIO | None, path: Path) -> bool:
    """Has `path` been replaced by a new file since `handle` was opened (or did it appear)?"""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if handle is None:
        return True
    mine = os.fstat(handle.fileno())
    return (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino)


def _open_at_start(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None
