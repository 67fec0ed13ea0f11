"""A child process for the audit tests: open the log (repairing it) and append, until killed or
for a given number of records.

Prints each acknowledged seq on stdout, so the parent knows what must survive the kill.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime
from pathlib import Path

from bridge import logs
from bridge.audit.log import AuditLog


def main() -> None:
    logs.configure("warning", "json", stream=sys.stderr)  # stdout carries the acknowledged seqs
    directory = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else None  # None: until killed
    log = AuditLog(directory, clock=lambda: datetime.now(UTC), rotate_bytes=4096)
    log.open()
    rng = random.Random()
    written = 0
    while count is None or written < count:
        record = log.append("crash.test", pad="x" * rng.randrange(0, 300), n=rng.random())
        written += 1
        sys.stdout.write(f"{record['seq']}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
