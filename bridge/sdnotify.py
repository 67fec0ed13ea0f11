"""systemd readiness notification (sd_notify) over $NOTIFY_SOCKET, without a dependency, and
the watchdog: with `WatchdogSec=` in the unit, systemd restarts a daemon that stops saying
`WATCHDOG=1` in time (a wedged event loop looks alive to everything else for months)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping


def notify(state: str) -> bool:
    """Send e.g. `READY=1` or `STOPPING=1`; a no-op (False) when not started by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True


def watchdog_interval(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """How often to tell systemd we are alive (half its `WatchdogSec`), or None when it does not
    watch this process (no `WATCHDOG_USEC`, or `WATCHDOG_PID` names another process)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000


async def feed_watchdog(interval_s: float, send: Callable[[str], bool] = notify) -> None:
    """Say `WATCHDOG=1` every `interval_s` for as long as the event loop runs this task."""
    while True:
        send("WATCHDOG=1")
        await asyncio.sleep(interval_s)
