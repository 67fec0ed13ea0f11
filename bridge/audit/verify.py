"""Verify the whole audit log, across rotated files, and optionally against a published head.

Read-only: a torn last line (a crash mid-write the daemon has not yet repaired) is reported as a
note, not as tampering. Without a head, deleting records at the very end cannot be seen; with the
head the daemon published to the broker (`<base>/bridge/audit_head`), it can. The log may be
written and rotated meanwhile (see `verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.audit.chain import HEX64, ChainState, Fault, Problem, chain_files, parse_line

Progress = Callable[[int, int], None]  # (bytes checked, total bytes)
PROGRESS_EVERY = 2000  # lines between progress callbacks
# Readings of the log, each from a fresh listing, while rotations overtake them: one comes per
# audit.rotate_bytes of records, so three readings overtaken in a row are not a race.
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Head:
    """A published audit head: the seq and hash of the last record at the time."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """`SEQ:HASH`, as `ownerlink audit verify --head` takes it."""
        seq, sep, value = text.partition(":")
        value = value.lower()
        if not sep or not (seq.isascii() and seq.isdigit()) or HEX64.fullmatch(value) is None:
            raise ValueError("expected SEQ:HASH, e.g. 1234:9f86d0…(64 hex digits)")
        if int(seq) < 1:
            # Records count from 1: a "head 0" would match any log, so it would prove nothing.
            raise ValueError(f"SEQ must be 1 or more (records count from 1), not {seq}")
        return cls(int(seq), value)


@dataclass(slots=True)
class Report:
    """What verification found. `problem` is the first break, or None when intact."""

    records: int = 0
    files: int = 0
    head: tuple[int, str] = (0, "")
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"audit log BROKEN at {self.problem.describe()}"
        seq, value = self.head
        text = f"audit log intact: {self.records} records in {self.files} file(s), head {seq}"
        text += f":{value}" if value else ""
        return "; ".join([text, *self.notes])


@dataclass(frozen=True, slots=True)
class _Line:
    file: Path
    number: int
    raw: bytes
    last: bool  # the last line of the last file: the only place a torn write may be


def verify(
    directory: Path, *, head: Head | None = None, progress: Progress | None = None
) -> Report:
    """Check every record's hash and link, in order, across all files of the log.

    It reads while the daemon writes, and a rotation meanwhile moves the current file it listed
    aside (for a moment leaving none) before it gets to it: the new current file then seems to
    skip the records in between. So a problem found while the listing changed underneath is
    looked for again from a fresh listing; a log that only grew is never reported broken."""
    for _ in range(ATTEMPTS - 1):
        files = chain_files(directory)
        try:
            report = _verify_files(files, head, progress)
        except FileNotFoundError:
            continue  # listed, then renamed by a rotation before it was read
        if report.ok or chain_files(directory) == files:
            return report
    return _verify_files(chain_files(directory), head, progress)


def _verify_files(files: list[Path], head: Head | None, progress: Progress | None) -> Report:
    report = Report(files=len(files))
    state = ChainState()
    for line in _lines(files, progress):
        problem = _check_line(line, state, files, report)
        if problem is None and head is not None:
            problem = _check_head_record(line, state, head)
        if problem is not None:
            report.problem = problem
            return report
    report.head = (state.seq, state.hash if state.seq else "")
    report.problem = _check_truncation(state, head, report)
    return report


def _check_line(
    line: _Line, state: ChainState, files: list[Path], report: Report
) -> Problem | None:
    record = parse_line(line.raw)
    if record is None:
        if line.last:
            report.notes.append(f"torn last line in {line.file.name} (repaired at next start)")
            return None
        return _problem(line, Fault.UNPARSABLE, "not a JSON record", None)
    expected = state.seq + 1
    fault = state.check(line.raw, record)
    if fault is None:
        report.records += 1
        return None
    kind, message = fault
    if kind is Fault.DELETED and _appears_later(files, line, expected):
        kind, message = Fault.REORDERED, f"record {expected} appears later in the log"
    return _problem(line, kind, message, record.get("seq"))


def _check_head_record(line: _Line, state: ChainState, head: Head) -> Problem | None:
    if state.seq == head.seq and state.hash != head.hash:
        message = "its hash differs from the published head (records were rewritten)"
        return _problem(line, Fault.DIVERGED, message, state.seq)
    return None


def _check_truncation(state: ChainState, head: Head | None, report: Report) -> Problem | None:
    if head is None:
        return None
    if state.seq < head.seq:
        message = f"the log ends at record {state.seq} but the published head is record {head.seq}"
        return Problem(Fault.TRUNCATED, message, seq=state.seq)
    report.notes.append(f"contains the published head {head.seq}")
    return None


def _appears_later(files: list[Path], after: _Line, seq: int) -> bool:
    """Is record `seq` somewhere after `after`? Tells a swap from a deletion (failure path only)."""
    passed = False
    for line in _lines(files, None):
        if passed:
            record = parse_line(line.raw)
            if record is not None and record.get("seq") == seq:
                return True
        passed = passed or (line.file == after.file and line.number == after.number)
    return False


def _problem(line: _Line, fault: Fault, message: str, seq: Any) -> Problem:
    return Problem(
        fault,
        message,
        file=line.file.name,
        line=line.number,
        seq=seq if isinstance(seq, int) else None,
    )


def _lines(files: list[Path], progress: Progress | None) -> Iterator[_Line]:
    total = sum(path.stat().st_size for path in files)
    done = seen = 0
    for position, path in enumerate(files):
        data = path.read_bytes()
        raws = data.split(b"\n")
        if raws and raws[-1] == b"":
            raws.pop()  # the file ends with a newline, as every complete file does
        final_file = position == len(files) - 1
        for number, raw in enumerate(raws, start=1):
            done, seen = done + len(raw) + 1, seen + 1
            if progress is not None and seen % PROGRESS_EVERY == 0:
                progress(done, total)
            yield _Line(path, number, raw, last=final_file and number == len(raws))
    if progress is not None:
        progress(total, total)
