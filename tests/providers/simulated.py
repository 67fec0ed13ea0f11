"""Wiring providers to the built-in simulator, in process (ASGITransport) or over real sockets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bridge.config import AccountConfig, CommandsConfig, Settings
from bridge.events import CollectingAlerts
from bridge.providers.factory import AccountParts, build_account
from bridge.providers.oauth import LoginRequest, parse_redirect, start_login
from bridge.simulator import ManualClock, Simulator, Timings, create_app
from tests.providers.support import RecordingGate

# A Wednesday noon: the commuter EV (vehicle 0) sleeps unplugged at home, the ICE (1) is parked.
NOON = datetime(2025, 6, 11, 12, 0, tzinfo=UTC)
SIM_CLIENT = {"client_id": "ownerlink-sim", "client_secret": "sim-secret"}
V1_PATH = "/api/fordconnect/vehicles/v1"
QUERY_PATH = "/fcon-query/v1"
REDIRECT = "http://127.0.0.1:8742/callback"


def make_sim(**overrides: Any) -> Simulator:
    """Three cars (EV, ICE, EV) on a stopped clock, auto-consent, commands answered in 50 ms."""
    options: dict[str, Any] = {
        "vehicles": 3,
        "seed": 1,
        "clock": ManualClock(NOON),
        "auto_consent": True,
        "admin": True,
        "timings": Timings(command_delay_s=0.05),
    }
    return Simulator(**{**options, **overrides})


def sim_account(base: str, provider: str = "fordconnect", **overrides: Any) -> AccountConfig:
    """An account configured against the simulator at `base`."""
    path = V1_PATH if provider == "fordconnect" else QUERY_PATH
    config: dict[str, Any] = {
        "provider": provider,
        **SIM_CLIENT,
        "application_id": "sim-app-id" if provider == "fordconnect" else None,
        "authorize_url": f"{base}/oauth/authorize",
        "token_url": f"{base}/oauth/token",
        "api_base_url": base + path,
        "redirect_uri": REDIRECT,
    }
    return AccountConfig(**{**config, **overrides})


def sim_settings(state_dir: Path, accounts: dict[str, AccountConfig]) -> Settings:
    """Settings whose command polling suits a simulator answering in 50 ms."""
    commands = CommandsConfig(status_poll_interval_s=0.02, timeout_s=5)
    return Settings(state_dir=state_dir, accounts=accounts, commands=commands)


@dataclass
class SimAccount:
    parts: AccountParts
    gate: RecordingGate
    alerts: CollectingAlerts
    config: AccountConfig


def connect(
    settings: Settings, name: str, transport: httpx.AsyncBaseTransport | None, **kw: Any
) -> SimAccount:
    gate, alerts = RecordingGate(), CollectingAlerts()
    parts = build_account(settings, name, gate=gate, alerts=alerts, transport=transport, **kw)
    return SimAccount(parts, gate, alerts, settings.accounts[name])


async def consent(
    config: AccountConfig,
    transport: httpx.AsyncBaseTransport | None,
    *,
    vehicle: str | None = None,
    login_hint: str | None = None,
    login: LoginRequest | None = None,
) -> tuple[LoginRequest, str]:
    """Open the authorise URL as the owner's browser would; return the login and the redirect."""
    login = login or start_login(config, time.time())
    extra = {k: v for k, v in (("vehicle", vehicle), ("login_hint", login_hint)) if v}
    url = f"{login.url}&{urlencode(extra)}" if extra else login.url
    async with httpx.AsyncClient(transport=transport) as browser:
        answer = await browser.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return login, answer.headers["location"]


async def log_in(
    account: SimAccount,
    transport: httpx.AsyncBaseTransport | None,
    *,
    vehicle: str | None = None,
    login_hint: str | None = None,
) -> None:
    """A whole owner login: consent, check the redirect, exchange the code, store the tokens."""
    login, redirect = await consent(
        account.config, transport, vehicle=vehicle, login_hint=login_hint
    )
    code = parse_redirect(redirect, expected_state=login.state)
    await account.parts.tokens.complete_login(login, code)


def asgi(sim: Simulator) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(sim))
