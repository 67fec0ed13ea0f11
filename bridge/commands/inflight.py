"""Which `ownerlink command` runs are still going, told by a lock file each one holds shared.

At start the daemon answers every allowed command that has no outcome as interrupted: the
daemon that sent it is gone. A command the owner sent with `ownerlink command` is different: its
own process waits for the car and writes the outcome, and it may still be waiting when the
daemon starts (a restart by systemd, an upgrade). Answered by the daemon too, that command would
end twice in the audit log, first `timed_out`, then as it really ended. So each `ownerlink
command` holds this file shared from before its decision record until after its outcome, and the
daemon answers owner commands only while it can hold the file alone: then no such process runs,
and any owner decision still open was left by one that died.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bridge.files import open_lock
from bridge.store import ensure_private_dir

LOCK_FILE = "owner-commands.lock"


def _open(state_dir: Path) -> int:
    ensure_private_dir(state_dir)  # `ownerlink command` may be the first to use it
    return open_lock(state_dir / LOCK_FILE)


@contextlib.contextmanager
def owner_command_running(state_dir: Path) -> Iterator[None]:
    """Held by `ownerlink command` for its whole run. Blocks only while a starting daemon holds
    the file to answer interrupted commands (milliseconds)."""
    fd = _open(state_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def no_owner_command_running(state_dir: Path) -> Iterator[bool]:
    """Yields True while holding the file alone (no `ownerlink command` is running, and none can
    start until the block ends), False when one is running. Never waits."""
    fd = _open(state_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
