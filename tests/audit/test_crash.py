"""kill -9 while appending, over and over: the log always reopens, repairs and verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.audit.read import RecordFilter, last_records
from bridge.audit.verify import verify
from tests.audit.helpers import open_log

ROOT = Path(__file__).resolve().parents[2]


def kill_while_appending(directory: Path, rng: random.Random) -> int:
    """Run the writer, SIGKILL it after a random number of acknowledged records; return the last."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.crash_writer", str(directory)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    target = rng.randrange(1, 60)
    last = 0
    for _ in range(target):
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    assert last > 0, f"the writer acknowledged nothing: {stderr}"
    return last


def tear_tail(directory: Path, rng: random.Random) -> None:
    """What a power cut mid-write can leave: part of a record and no newline."""
    with (directory / "audit.jsonl").open("ab") as handle:
        handle.write(b'{"seq":' + b"9" * rng.randrange(0, 40))


def crash_many_times(directory: Path, times: int) -> None:
    rng = random.Random(1234)
    acknowledged = tears = 0
    for _ in range(times):
        acknowledged = max(acknowledged, kill_while_appending(directory, rng))
        if rng.random() < 0.3:
            tear_tail(directory, rng)
            tears += 1
        report = verify(directory)
        assert report.ok, report.summary()
        # Every record the writer was told was durable is still there.
        assert report.head[0] >= acknowledged
    log = open_log(directory, rotate_bytes=4096)
    log.append("after.crashes")
    report = verify(directory)
    assert report.ok, report.summary()
    assert len(list(directory.glob("audit.0*.jsonl"))) > 0  # rotations happened along the way
    repairs = last_records(directory, 10**6, RecordFilter(kind="audit.repaired"))
    assert tears > 0 and len(repairs) == tears  # each torn tail was repaired, and said so


def test_thirty_kills_leave_a_verifiable_log(tmp_path: Path) -> None:
    """30 SIGKILLs mid-append/rotation, some torn tails: reopen repairs, verify passes, no loss."""
    crash_many_times(tmp_path / "audit", 30)


@pytest.mark.soak
def test_a_hundred_kills_leave_a_verifiable_log(tmp_path: Path) -> None:
    """The long version: 100 SIGKILLs."""
    crash_many_times(tmp_path / "audit", 100)
