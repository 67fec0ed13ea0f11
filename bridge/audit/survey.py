"""Checking the audit log without its lock, so that opening it beside a running writer keeps
that writer waiting only for what was appended meanwhile, not for the whole file's check.

Records are only ever appended: what another process does meanwhile adds lines at the end, or
rotates (renames) the current file and starts a new one. So the records found intact here are
still intact under the lock unless the files were moved on, which `Survey.holds` tells (the
current file's inode, the rotated files' names and inodes). Nothing here decides that a line is
torn or tampered with: the first line that does not check out ends the survey, and it and
everything after it are left to the check under the lock, the only one that may repair or
refuse (a line that looks torn here may be another process's append in progress).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from bridge.audit.chain import CURRENT_FILE, ChainState, is_sealed, parse_line, rotated_files
from bridge.audit.tail import read_tail
from bridge.errors import AuditTampered

Listing = tuple[tuple[str, int], ...]  # the rotated files, oldest first: (name, inode)
# Looks at the log, each after a rotation moved the current file aside while it was being looked
# at; one comes per audit.rotate_bytes of records, so more in a row are not a race.
ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class Survey:
    """The log as checked without the lock: its rotated files, the current file's inode (None
    when there was none), and the first `checked` bytes of it, `lines` whole records that
    chain on from the rotated files up to `state`, the first and last of them `ends`."""

    rotated: Listing
    inode: int | None
    checked: int
    lines: int
    state: ChainState
    ends: tuple[bytes, bytes] = (b"", b"")

    def holds(self, directory: Path) -> bool:
        """Are the files as surveyed, but for lines appended to the current file? Call it
        under the lock: no other writer can then move them on before they are read."""
        try:
            current: os.stat_result | None = (directory / CURRENT_FILE).stat()
        except FileNotFoundError:
            current = None
        if (current.st_ino if current is not None else None) != self.inode:
            return False  # rotated meanwhile (or created after a crash mid-rotation)
        if current is not None and current.st_size < self.checked:
            return False  # never by an append: let the check under the lock judge the file
        return listing(directory) == self.rotated and self._same_ends(directory / CURRENT_FILE)

    def _same_ends(self, path: Path) -> bool:
        """Are the first and last records checked still there, byte for byte? Two short reads:
        records rewritten in place at either end since the look (the newest ones, most likely)
        are then seen, and judged by a look that stops at them."""
        first, last = self.ends
        if not self.checked:
            return True
        try:
            with path.open("rb") as handle:
                head = handle.read(len(first))
                handle.seek(self.checked - len(last))
                return head == first and handle.read(len(last)) == last
        except OSError:
            return False  # the look after this one, or the check under the lock, says why


def survey(directory: Path) -> Survey | None:
    """Check the log in `directory` as far as it can be without the lock. None when that
    check must be done under the lock instead: the rotated files did not join, a file could not
    be read (the check under the lock says why), or rotations kept overtaking the look."""
    for _ in range(ATTEMPTS):
        try:
            found = _survey_once(directory)
        except (AuditTampered, OSError):
            return None
        if found is not None:
            return found
    return None


def _survey_once(directory: Path) -> Survey | None:
    """One look; None when the current file was rotated between being opened and the rotated
    files being listed (read as it was, it would link on from a file listed after it)."""
    try:
        handle = (directory / CURRENT_FILE).open("rb")
    except FileNotFoundError:  # none yet, or a crash between a rotation's two steps
        handle = None
    with handle or contextlib.nullcontext():
        inode = os.fstat(handle.fileno()).st_ino if handle is not None else None
        rotated = listing(directory)
        if inode is not None and any(held == inode for _, held in rotated):
            return None
        state = link_rotated([directory / name for name, _ in rotated])
        data = handle.read() if handle is not None else b""
    checked, lines = _intact_prefix(data, state)
    first = data[: data.find(b"\n") + 1] if checked else b""
    last = data[data.rfind(b"\n", 0, checked - 1) + 1 : checked] if checked else b""
    return Survey(rotated, inode, checked, lines, state, (first, last))


def _intact_prefix(data: bytes, state: ChainState) -> tuple[int, int]:
    """(bytes, records) at the start of `data` that are whole records chaining on from `state`,
    which is advanced past them. Only newline-ended lines count (an append may be half-read);
    a line holding a carriage return ends it too, since the check under the lock splits lines
    with `bytes.splitlines`, which breaks there as well, and must number them the same."""
    checked = lines = 0
    while (end := data.find(b"\n", checked)) != -1:
        raw = data[checked:end]
        record = parse_line(raw) if b"\r" not in raw else None
        if record is None or state.check(raw, record) is not None:
            break
        checked, lines = end + 1, lines + 1
    return checked, lines


def listing(directory: Path) -> Listing:
    """The rotated files' names and inodes, oldest first: a file swapped for another under
    the same name has another inode."""
    found = []
    for _, path in rotated_files(directory):
        try:
            found.append((path.name, path.stat().st_ino))
        except FileNotFoundError:
            found.append((path.name, -1))
    return tuple(found)


def link_rotated(paths: list[Path]) -> ChainState:
    """The chain state at the end of the rotated files `paths` (or the genesis state), checked
    where they join: each file's first record must be sealed and link on from the last record of
    the file before it, and each file's last record must be sealed. A rotated file deleted,
    renumbered, swapped or cut short is tampering, as damage in the current file is. (This
    reads two lines a file, so it stays quick however long the log grows; edits inside a
    rotated file are for `ownerlink audit verify`, which reads every record.)"""
    state = ChainState()
    for path in paths:
        first, last = _first_line(path), read_tail(path)
        if last.torn or not last.last:
            raise AuditTampered(f"{path.name}: the last record is unreadable")
        record = parse_line(first)
        if record is None:
            raise AuditTampered(f"{path.name}:1: unparsable record")
        fault = state.check(first, record)
        if fault is not None:
            raise AuditTampered(f"{path.name}:1: {fault[0]}: {fault[1]}")
        record = parse_line(last.last)
        seq = record.get("seq") if record is not None else None
        if (
            record is None
            or not is_sealed(last.last, record)
            or not isinstance(seq, int)
            or seq < state.seq
        ):
            raise AuditTampered(f"{path.name}: the last record is not the one its hash seals")
        state = ChainState(seq=seq, hash=str(record["hash"]))
    return state


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline().rstrip(b"\n")
