"""Fixtures for the web tests: the app built on fakes, an httpx client, a logged-in owner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.support import BASE_URL, Harness, build_harness, login


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """The web app on fakes with default settings and the owner password set."""
    h = build_harness(tmp_path / "state")
    yield h
    h.store.close()


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for(harness: Harness) -> AsyncIterator[ClientFactory]:
    """Makes httpx clients on the app in-process, each from a chosen peer address."""
    clients: list[httpx.AsyncClient] = []

    def make(ip: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=harness.app, client=(ip, 40000))
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(client_for: ClientFactory) -> httpx.AsyncClient:
    """An anonymous client from 127.0.0.1."""
    return client_for()


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client logged in as the owner."""
    response = await login(client)
    assert response.status_code == 303, response.text
    return client
