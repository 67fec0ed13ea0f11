"""Opening the audit log beside a writer: checked without the lock, then briefly under it.

`ownerlink command` or `ownerlink apps …` opens the log while the daemon appends to it. The bulk
of the current file is checked without the audit lock; under it, only what was appended since
(and the torn-tail repair). These tests change the files between the two, through an injected
`flock` that acts just before the lock is taken, or with a real second process appending.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.audit.chain import GENESIS, chain_files, seal
from bridge.audit.log import OPEN_ATTEMPTS, AuditLog
from bridge.audit.verify import verify
from bridge.errors import AuditTampered
from tests.audit.helpers import TickingClock, fill, lines, open_log, records, write_lines

ROOT = Path(__file__).resolve().parents[2]
ROTATE = 8 << 20  # a large log: one just under this size takes a noticeable time to check
NEAR_ROTATION = ROTATE - (512 << 10)


class BeforeLock:
    """fcntl.flock, calling `act` just before each of the first `times` exclusive locks:
    whatever it does happens after the look without the lock and before the lock."""

    def __init__(self, act: Callable[[], object], *, times: int = 1) -> None:
        self.act = act
        self.times = times
        self.taken = 0

    def __call__(self, fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX:
            self.taken += 1
            if self.taken <= self.times:
                self.act()
        fcntl.flock(fd, operation)


class TimedLock:
    """fcntl.flock, recording how long each exclusive lock was held."""

    def __init__(self) -> None:
        self.held: list[float] = []
        self._since = 0.0

    def __call__(self, fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_UN:
            self.held.append(time.monotonic() - self._since)
        fcntl.flock(fd, operation)
        if operation == fcntl.LOCK_EX:
            self._since = time.monotonic()


def write_chain(directory: Path, size: int) -> int:
    """A current file of about `size` bytes of chained, command-like records, written at once
    (appending them one by one would take most of a minute) and fsync'd, as the daemon's are.
    Returns how many records it holds."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    out, total, prev = [], 0, GENESIS
    while total < size:
        seq = len(out) + 1
        line, prev = seal(
            {
                "kind": "command.decision",
                "seq": seq,
                "ts": f"2025-03-01T12:00:00.{seq % 1000:03d}+00:00",
                "prev": prev,
                "id": f"c{seq}",
                "app": "ha",
                "vehicle": "car",
                "decision": "allowed",
                "reason": "ok",
                "pad": "x" * 200,
            }
        )
        out.append(line)
        total += len(line)
    with (directory / "audit.jsonl").open("wb") as handle:
        handle.write(b"".join(out))
        os.fsync(handle.fileno())
    return len(out)


def _append_one(log: AuditLog, n: int) -> None:
    log.append("command.decision", id=f"next{n}", app="ha", decision="allowed", reason="ok")


def _stop(writer: subprocess.Popen[str]) -> list[tuple[float, float]]:
    """Close the paced writer's stdin (its signal to stop) and read back its appends' times."""
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    return [(begin, end) for begin, end in json.loads(out)]


def _paced_writer(directory: Path, rotate_bytes: int, pause_s: float) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.audit.paced_writer",
            str(directory),
            str(rotate_bytes),
            str(pause_s),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    ready = writer.stdout.readline().strip()
    if ready != "ready":
        writer.kill()
        _, err = writer.communicate(timeout=60)
        pytest.fail(f"the paced writer did not start: {err}")
    return writer


def test_opening_beside_a_writer_holds_its_appends_only_briefly(tmp_path: Path) -> None:
    """A command run beside the daemon opens a log near its rotation size: the daemon's
    appends (a command's decision record, fsync'd before the command goes out) waited for the
    whole file's check under the lock. Now the lock is held for a small part of the open, and
    the other process's appends wait no longer than that, side by side with the full check."""
    directory = tmp_path / "audit"
    write_chain(directory, NEAR_ROTATION)
    writer = _paced_writer(directory, ROTATE, 0.005)
    lock = TimedLock()
    try:
        opening = AuditLog(directory, clock=TickingClock(), rotate_bytes=ROTATE, flock=lock)
        start = time.monotonic()
        opening.open()
        open_s = time.monotonic() - start
        _append_one(opening, 0)
        opening.close()
    finally:
        appends = _stop(writer)
    end = start + open_s
    # Each append's wait for the lock (the writer times its flock calls, nothing else).
    waits = [done - began for began, done in appends if done > start and began < end]
    assert lock.held[0] < open_s / 5, f"lock held {lock.held[0]:.3f} s of a {open_s:.3f} s open"
    assert max(waits) < open_s / 4, f"an append waited {max(waits):.3f} s of {open_s:.3f} s"
    assert len(waits) >= 5  # the writer went on appending while the file was checked
    report = verify(directory)
    assert report.ok, report.summary()


def test_records_appended_between_the_look_and_the_lock_are_checked_and_chained_on(
    tmp_path: Path,
) -> None:
    """What another process appends after the look without the lock is checked under it, and
    the log opens on the newest record, not on the one the look ended at."""
    fill(tmp_path, 20).close()
    other = open_log(tmp_path)
    log = open_log(tmp_path, flock=BeforeLock(lambda: [_append_one(other, n) for n in range(3)]))
    assert log.head == other.head and log.head[0] == 23
    assert log.append("next")["seq"] == 24
    log.close()
    other.close()
    assert verify(tmp_path).ok


def test_a_bad_record_appended_between_the_look_and_the_lock_is_tampering(tmp_path: Path) -> None:
    """A line added after the look that does not chain on is found under the lock, and named by
    its line in the whole file."""
    fill(tmp_path, 20).close()
    foreign = open_log(tmp_path / "other")  # a chain of its own: record 21 links to its 20
    for n in range(21):
        foreign.append("command.decision", id=f"x{n}", app="intruder", decision="allowed")
    foreign.close()
    bad = lines(tmp_path / "other")[20]

    def add_bad() -> None:
        write_lines(tmp_path, [*lines(tmp_path), bad])

    with pytest.raises(AuditTampered, match=r"audit\.jsonl:21: relinked"):
        open_log(tmp_path, flock=BeforeLock(add_bad))


@pytest.mark.parametrize("line", [1, 20])
def test_a_record_rewritten_in_place_between_the_look_and_the_lock_is_tampering(
    tmp_path: Path, line: int
) -> None:
    """The first record and the last one the look checked are read again under the lock: one of
    them rewritten in place meanwhile (same length, so the file looks only appended to) sends
    the open back to look again, and that look stops at it for the lock's check to refuse."""
    fill(tmp_path, 20).close()

    def rewrite() -> None:
        content = lines(tmp_path)
        content[line - 1] = content[line - 1].replace(b'"ha"', b'"hb"')
        write_lines(tmp_path, content)

    with pytest.raises(AuditTampered, match=rf"audit\.jsonl:{line}: edited"):
        open_log(tmp_path, flock=BeforeLock(rewrite))


@pytest.mark.parametrize(
    ("damage", "line"),
    [
        ("edit", 1),
        ("edit", 1500),
        ("edit", "last"),  # parses, but its hash fails: never taken for a torn write
        ("delete", 1),
        ("delete", 1500),
        ("garbage", 1),
        ("garbage", 1500),
    ],
)
def test_damage_in_a_large_file_is_tampering_at_open(
    tmp_path: Path, damage: str, line: int | str
) -> None:
    """The look without the lock stops at the first bad line and leaves it to the check under
    the lock, which refuses it as before and names the same line of the whole file."""
    count = write_chain(tmp_path, 1 << 20)
    number = count if line == "last" else int(line)
    content = lines(tmp_path)
    if damage == "edit":
        content[number - 1] = content[number - 1].replace(b'"ha"', b'"hb"')
    elif damage == "delete":
        del content[number - 1]
    else:
        content[number - 1] = b"garbage\n"
    write_lines(tmp_path, content)
    with pytest.raises(AuditTampered, match=rf"audit\.jsonl:{number}: "):
        open_log(tmp_path)


def test_a_torn_tail_of_a_large_file_is_cut_under_the_lock_and_recorded(tmp_path: Path) -> None:
    """The torn tail a crash mid-write left is cut off under the lock, at the right offset."""
    count = write_chain(tmp_path, 1 << 20)
    intact = (tmp_path / "audit.jsonl").stat().st_size
    with (tmp_path / "audit.jsonl").open("ab") as handle:
        handle.write(b'{"seq":' + str(count + 1).encode() + b',"ts":"20')
    log = open_log(tmp_path)
    repair = records(tmp_path)[-1]
    assert repair["kind"] == "audit.repaired" and repair["offset"] == intact
    assert repair["seq"] == count + 1 and log.head[0] == count + 1
    log.close()
    assert verify(tmp_path).ok


def test_a_line_half_written_during_the_look_is_never_cut(tmp_path: Path) -> None:
    """Another process's append may be half-way into the file when the look reads it: that is
    no torn tail, and only the check under the lock, where no append is under way, may cut
    one. The line, finished before the lock, is kept and chained on."""
    fill(tmp_path, 21).close()
    content = lines(tmp_path)
    last = content[-1]
    write_lines(tmp_path, [*content[:-1], last[:40]])

    def finish() -> None:
        with (tmp_path / "audit.jsonl").open("ab") as handle:
            handle.write(last[40:])

    log = open_log(tmp_path, flock=BeforeLock(finish))
    assert [r["kind"] for r in records(tmp_path)].count("audit.repaired") == 0
    assert log.head[0] == 21 and lines(tmp_path)[-1] == last
    log.close()


def test_a_torn_tail_another_process_repairs_meanwhile_is_repaired_once(tmp_path: Path) -> None:
    """The daemon and a command starting together on a log with a torn tail: the look leaves
    it, the other process cuts it and says so, and this one finds its repair record in the
    bytes appended since, checks it and chains on."""
    fill(tmp_path, 5).close()
    write_lines(tmp_path, [*lines(tmp_path), b"\x00\x00\x00\x00\n"])
    log = open_log(tmp_path, flock=BeforeLock(lambda: open_log(tmp_path).close()))
    kinds = [r["kind"] for r in records(tmp_path)]
    assert kinds.count("audit.repaired") == 1 and log.head[0] == 6
    log.append("next")
    log.close()
    assert verify(tmp_path).ok


def _rotate_once(directory: Path) -> None:
    """Another process appends until it rotates the log once."""
    other = open_log(directory, rotate_bytes=4096)
    before = len(chain_files(directory))
    while len(chain_files(directory)) == before:
        _append_one(other, 0)
    other.close()


def test_a_rotation_between_the_look_and_the_lock_is_looked_at_again(tmp_path: Path) -> None:
    """The file looked at was moved aside and a new one started: what the look found no longer
    describes the current file, so the log is looked at again before it is opened."""
    fill(tmp_path, 30, rotate_bytes=4096).close()
    before = list(tmp_path.glob("audit.0*.jsonl"))
    flock = BeforeLock(lambda: _rotate_once(tmp_path))
    log = open_log(tmp_path, rotate_bytes=4096, flock=flock)
    assert flock.taken == 2  # the lock, let go of after the rotation was seen, then again
    assert len(list(tmp_path.glob("audit.0*.jsonl"))) == len(before) + 1
    assert log.head == (records(tmp_path)[-1]["seq"], records(tmp_path)[-1]["hash"])
    log.append("next")
    log.close()
    assert verify(tmp_path).ok


def test_rotations_overtaking_every_look_end_in_one_check_under_the_lock(tmp_path: Path) -> None:
    """Rotated again before each lock: the last attempt checks everything under the lock."""
    fill(tmp_path, 30, rotate_bytes=4096).close()
    flock = BeforeLock(lambda: _rotate_once(tmp_path), times=OPEN_ATTEMPTS)
    log = open_log(tmp_path, rotate_bytes=4096, flock=flock)
    assert flock.taken == OPEN_ATTEMPTS
    assert log.head[0] == records(tmp_path)[-1]["seq"]
    log.append("next")
    log.close()
    assert verify(tmp_path).ok


def test_opening_while_another_process_appends_and_rotates_fast(tmp_path: Path) -> None:
    """A real writer rotating every few milliseconds while the log is opened over and over:
    each open chains on, whatever rotation overtook its look, and the log verifies."""
    directory = tmp_path / "audit"
    fill(directory, 10, rotate_bytes=16384).close()
    writer = _paced_writer(directory, 16384, 0)
    opened = 0
    try:
        # Until it has rotated often; a writer that died (its error is then reported) stops it.
        while writer.poll() is None and (
            opened < 20 or len(list(directory.glob("audit.0*.jsonl"))) < 10
        ):
            log = open_log(directory, rotate_bytes=16384)
            _append_one(log, opened)
            log.close()
            opened += 1
    finally:
        appends = _stop(writer)
    report = verify(directory)
    assert report.ok, report.summary()
    assert report.records == 10 + opened + len(appends)
