"""Helpers for the simulator tests: the OAuth dance, v1 headers, a steerable monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from bridge.simulator import pkce_challenge

MONDAY_0700 = datetime(2025, 6, 2, 7, 0, tzinfo=UTC)
V1 = "/api/fordconnect/vehicles/v1"
QUERY = "/fcon-query/v1"
REDIRECT = "http://127.0.0.1:9/callback"
CLIENT = {"client_id": "ownerlink-sim", "client_secret": "sim-secret"}
VERIFIER = "a-verifier-long-enough-for-rfc-7636-0123456789abcdef"


class FakeMonotonic:
    """Real-time protocol timings (codes, command delays) under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def authorize_params(**extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": CLIENT["client_id"],
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return dict(httpx.URL(response.headers["location"]).params)


async def get_code(client: httpx.AsyncClient, **extra: str) -> str:
    response = await client.get("/oauth/authorize", params=authorize_params(**extra))
    return redirect_params(response)["code"]


async def exchange(client: httpx.AsyncClient, code: str, **extra: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        **CLIENT,
        **extra,
    }
    return await client.post("/oauth/token", data=form)


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, **CLIENT}
    return await client.post("/oauth/token", data=form)


async def login(client: httpx.AsyncClient, **extra: str) -> dict[str, Any]:
    """Authorise (auto-consent) and exchange the code: the token response."""
    response = await exchange(client, await get_code(client, **extra))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def v1_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Application-Id": "sim-app-id",
        "api-version": "2020-06-01",
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
