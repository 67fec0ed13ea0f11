"""A child process for the audit tests: hold the log open and append at a steady pace, as the
daemon does, until stdin closes; then print how long each append took.

`python -m tests.audit.paced_writer DIR ROTATE_BYTES PAUSE_S`: prints `ready` once the log is
open, then at the end one JSON list of `[start, end]` CLOCK_MONOTONIC times (one clock for
every process on the machine, so the parent can line them up with its own): when each append
began, and that plus how long it waited for the audit lock. Only the lock's wait: the rest of an
append is this process's own speed, which a busy machine stretches whenever it deschedules it.
"""

from __future__ import annotations

import fcntl
import json
import select
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bridge import logs
from bridge.audit.log import AuditLog


def main() -> None:
    logs.configure("warning", "json", stream=sys.stderr)
    directory, rotate_bytes, pause_s = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    # No fsync: an append's time is then the wait for the audit lock and one write, not the disk.
    waited = [0.0]

    def timed_flock(fd: int, operation: int) -> None:
        began = time.monotonic()
        fcntl.flock(fd, operation)
        if operation & fcntl.LOCK_EX:
            waited[0] += time.monotonic() - began

    log = AuditLog(
        directory,
        clock=lambda: datetime.now(UTC),
        rotate_bytes=rotate_bytes,
        fsync=lambda _fd: None,
        flock=timed_flock,
    )
    log.open()
    print("ready", flush=True)
    appends: list[tuple[float, float]] = []
    # Waiting on stdin is the pause between appends, and its end the signal to stop.
    while not select.select([sys.stdin], [], [], pause_s)[0]:
        start, waited[0] = time.monotonic(), 0.0
        log.append("command.decision", id=f"c{len(appends)}", app="ha", decision="allowed")
        appends.append((start, start + waited[0]))
    log.close()
    print(json.dumps(appends), flush=True)


if __name__ == "__main__":
    main()
