"""Helpers for audit tests: a log on a temporary directory with a fake clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
