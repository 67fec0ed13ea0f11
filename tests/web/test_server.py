"""WebServer: uvicorn on the daemon's event loop, over a real socket, started and stopped."""

from __future__ import annotations

import socket
from pathlib import Path

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
