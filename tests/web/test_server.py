"""WebServer: uvicorn on the daemon's event loop, over a real socket, started and stopped."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import WebConfig
from bridge.errors import ConfigError, PortInUse
from bridge.web.server import WebServer
from tests.web.support import build_harness


async def test_server_serves_the_app_and_stops_cleanly(tmp_path: Path) -> None:
    """start() returns once the port answers; stop() flushes and closes it."""
    harness = build_harness(tmp_path / "s")
    server = WebServer(harness.app, WebConfig(port=0))
    await server.start()
    port = server.port
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.get("/login")
            assert response.status_code == 200
            assert "server" not in response.headers
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/")
    harness.store.close()


async def test_port_in_use_is_port_in_use_and_a_foreign_address_a_config_error(
    tmp_path: Path,
) -> None:
    """A taken port fails start() with PortInUse (exit 1: it may pass, so systemd tries again),
    an address that is not this machine's with ConfigError naming the keys (exit 2); never
    uvicorn's sys.exit."""
    harness = build_harness(tmp_path / "s")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}: another program is using it"):
            await WebServer(harness.app, WebConfig(port=port)).start()
    foreign = WebConfig.model_construct(host="192.0.2.1", port=0)  # TEST-NET-1: never ours
    with pytest.raises(ConfigError, match=r"web\.host / web\.port: cannot listen"):
        await WebServer(harness.app, foreign).start()
    harness.store.close()


async def test_half_configured_tls_is_a_config_error(tmp_path: Path) -> None:
    """A certificate without its key (or the reverse) is refused before binding (loading the
    config refuses it first; this is the server's own guard for a config built otherwise)."""
    harness = build_harness(tmp_path / "s")
    config = WebConfig.model_construct(port=0, tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ConfigError, match=r"tls_key"):
        await WebServer(harness.app, config).start()
    harness.store.close()


async def test_stop_cancels_a_request_still_running_after_the_grace_period(
    tmp_path: Path,
) -> None:
    """A request that would run for ever (a REST command waiting on the car) is cancelled once
    the grace period is over, so the daemon's stop ends within systemd's timeout."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def never_answers(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    server = WebServer(never_answers, WebConfig(port=0), graceful_stop_s=0.2)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        request = asyncio.create_task(client.get("/"))
        await started.wait()
        async with asyncio.timeout(5):
            await server.stop()
        assert cancelled.is_set()
        await asyncio.gather(request, return_exceptions=True)  # a 500 or a dropped connection


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
