"""Helpers for audit tests: a log on a temporary directory with a fake clock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.audit.log import AuditLog


class TickingClock:
    """Each call is one millisecond later than the last: distinct, ordered timestamps."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def open_log(directory: Path, *, rotate_bytes: int = 1 << 20, **kw: Any) -> AuditLog:
    log = AuditLog(directory, clock=TickingClock(), rotate_bytes=rotate_bytes, **kw)
    log.open()
    return log


def fill(directory: Path, count: int, **kw: Any) -> AuditLog:
    """A log with `count` command-like records."""
    log = open_log(directory, **kw)
    for n in range(count):
        log.append(
            "command.decision",
            id=f"c{n}",
            app="ha",
            vehicle="car",
            command="lock",
            action="LOCK",
            decision="allowed",
            reason="ok",
        )
    return log


def lines(directory: Path, name: str = "audit.jsonl") -> list[bytes]:
    return (directory / name).read_bytes().splitlines(keepends=True)


def write_lines(directory: Path, content: list[bytes], name: str = "audit.jsonl") -> None:
    (directory / name).write_bytes(b"".join(content))


def records(directory: Path, name: str = "audit.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(directory, name)]


def run_unprivileged(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`ownerlink ARGV` in a child process that file permissions apply to. Root reads anything
    through CAP_DAC_OVERRIDE, so as root the child runs without any capability (setpriv);
    without setpriv such a test cannot fail for real, so it is skipped."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is not installed to drop CAP_DAC_OVERRIDE")
        prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "bridge", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1 with a single `error: …` line on stderr containing every fragment: no traceback."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
