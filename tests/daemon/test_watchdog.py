"""The daemon under systemd: READY=1 once online, WATCHDOG=1 while its event loop runs,
STOPPING=1 on the way out, all on a real notify socket."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bridge.daemon import Daemon
from bridge.demo.run import login
from bridge.simulator import Simulator
from tests.conftest import BrokerAddress
from tests.daemon.test_run import _until, settings_for, sim
from tests.support.systemd import drain

__all__ = ["sim"]  # a fixture, used by name


async def test_the_daemon_tells_systemd_it_is_ready_alive_and_stopping(
    tmp_path: Path,
    sim: tuple[Simulator, str],
    broker: BrokerAddress,
    base_topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "100000")  # WatchdogSec=0.1s: a ping every 50 ms
        running = Daemon(settings)
        task = asyncio.create_task(running.run())
        received: list[bytes] = []
        await _until(lambda: received.extend(drain(systemd)) or received.count(b"WATCHDOG=1") >= 3)
        running.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        received += drain(systemd)
    assert received[0] == b"READY=1" and received[-1] == b"STOPPING=1"
    assert set(received[1:-1]) == {b"WATCHDOG=1"}
