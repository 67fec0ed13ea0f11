"""systemd notifications over a real datagram socket, and the watchdog's interval."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from bridge import sdnotify
from tests.support.systemd import drain


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # another process watched
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_the_watchdog_interval_is_half_of_what_systemd_allows(
    environ: dict[str, str], expected: float | None
) -> None:
    assert sdnotify.watchdog_interval(environ, pid=4242) == expected


async def test_the_watchdog_is_fed_until_the_task_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What systemd receives on its socket: `WATCHDOG=1` again and again, nothing once
    cancelled (a wedged loop would stop it the same way, and systemd restarts the daemon)."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        feeding = asyncio.ensure_future(sdnotify.feed_watchdog(0.02))
        received: list[bytes] = []
        async with asyncio.timeout(10):  # three pings, however slowly this machine runs today
            while len(received) < 3:
                await asyncio.sleep(0.01)
                received += drain(systemd)
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        received += drain(systemd)
        assert set(received) == {b"WATCHDOG=1"}
        await asyncio.sleep(0.06)
        with pytest.raises(BlockingIOError):
            systemd.recv(64)
    assert os.environ["NOTIFY_SOCKET"] == path
