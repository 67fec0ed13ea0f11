"""Helpers for provider tests: settings, a fake clock, a scripted Ford for httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from bridge.config import AccountConfig, Settings
from bridge.events import CollectingAlerts
from bridge.providers.base import CallKind
from bridge.providers.factory import AccountParts, build_account
from bridge.providers.tokens import StoredTokens, TokenStore

BASE = "https://ford.test"
V1 = f"{BASE}/api/fordconnect/vehicles/v1"
QUERY = f"{BASE}/fcon-query/v1"
TOKEN_URL = f"{BASE}/oauth/token"
AUTHORIZE_URL = f"{BASE}/oauth/authorize"
VEHICLE = "0123456789abcdef0123456789abcdef"


class FakeClock:
    """Epoch seconds that only move when a test (or `sleep`) moves them."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingGate:
    """A CallGate that records every charge (and can refuse with an injected exception)."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, CallKind]] = []
        self.records: list[int | None] = []  # the audit record each charge named, if any
        self.refuse: Exception | None = None

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.charges.append((account, kind))
        self.records.append(record)

    def kinds(self) -> list[CallKind]:
        return [kind for _, kind in self.charges]


Responder = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeFord:
    """A scripted server: per-route queues of responses (the last one repeats), a token endpoint
    that mints numbered tokens, and a log of every request."""

    routes: dict[tuple[str, str], list[httpx.Response | Responder]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    issued: int = 0
    expires_in: float | str = 1200
    rotate: bool = True
    token_error: httpx.Response | Responder | None = None

    def on(self, method: str, path: str, *answers: httpx.Response | Responder) -> None:
        self.routes[(method, path)] = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/oauth/token":
            return self._token(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": {"code": 4002, "title": "Not Found"}})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    def _token(self, request: httpx.Request) -> httpx.Response:
        if callable(self.token_error):
            return self.token_error(request)
        if self.token_error is not None:
            return self.token_error
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.issued += 1
        body: dict[str, Any] = {
            "access_token": f"access-{self.issued:04d}-secretish",
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token_expires_in": 7_776_000,
        }
        if self.rotate or form.get("grant_type") == "authorization_code":
            body["refresh_token"] = f"refresh-{self.issued:04d}-secretish"
        return httpx.Response(200, json=body)

    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/oauth/token"]

    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/oauth/token"]


def ok(body: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def account_config(provider: str = "fordconnect", **overrides: Any) -> AccountConfig:
    base = {
        "provider": provider,
        "client_id": "client-abc",
        "client_secret": "client-secret-xyz",
        "application_id": "app-id-123" if provider == "fordconnect" else None,
        "authorize_url": AUTHORIZE_URL,
        "token_url": TOKEN_URL,
        "api_base_url": V1 if provider == "fordconnect" else QUERY,
    }
    return AccountConfig(**{**base, **overrides})


def settings_for(state_dir: Path, accounts: dict[str, AccountConfig], **extra: Any) -> Settings:
    return Settings(state_dir=state_dir, accounts=accounts, **extra)


def seed_tokens(
    state_dir: Path,
    account: str,
    *,
    access: str = "access-seed-secretish",
    refresh: str | None = "refresh-seed-secretish",
    expires_at: float,
    obtained_at: float = 0.0,
) -> None:
    """Write a token file as if the owner had logged in."""
    TokenStore(state_dir).save(
        account, StoredTokens(access, refresh, expires_at, obtained_at=obtained_at)
    )


@dataclass
class Rig:
    """One account wired to a FakeFord: the parts, the fake, the gate, alerts and clock."""

    parts: AccountParts
    ford: FakeFord
    gate: RecordingGate
    alerts: CollectingAlerts
    clock: FakeClock
    state_dir: Path


def rig(
    state_dir: Path,
    provider: str = "fordconnect",
    *,
    logged_in: bool = True,
    account: str = "acct",
    **config: Any,
) -> Rig:
    """An account against a FakeFord, logged in with a token valid for 20 minutes by default."""
    ford, gate, alerts, clock = FakeFord(), RecordingGate(), CollectingAlerts(), FakeClock()
    settings = settings_for(state_dir, {account: account_config(provider, **config)})
    if logged_in:
        seed_tokens(state_dir, account, expires_at=clock.now + 1200)
    parts = build_account(
        settings,
        account,
        gate=gate,
        alerts=alerts,
        transport=httpx.MockTransport(ford),
        clock=clock,
    )
    return Rig(parts, ford, gate, alerts, clock, state_dir)


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
