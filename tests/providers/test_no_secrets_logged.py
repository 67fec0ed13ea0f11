"""A whole login → refresh → 401 → read → revoked cycle logs what happened and no secret at all."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bridge import logs
from bridge.errors import ReauthRequired
from bridge.providers.oauth import parse_redirect
from bridge.providers.tokens import TokenStore
from tests.providers.simulated import asgi, connect, consent, make_sim, sim_account, sim_settings
from tests.providers.support import FakeClock


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("debug", "json", stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_the_token_lifecycle_never_logs_a_secret(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    """Tokens, the code, the verifier and the client secret never reach a log line or an error."""
    sim = make_sim()
    transport = asgi(sim)
    clock = FakeClock(1_750_000_000.0)
    account = connect(
        sim_settings(tmp_path, {"home": sim_account("http://sim.test")}),
        "home",
        transport,
        clock=clock,
    )
    secrets: set[str] = {"sim-secret"}
    login, redirect = await consent(account.config, transport, vehicle="all")
    code = parse_redirect(redirect, expected_state=login.state)
    secrets |= {code, login.code_verifier or ""}
    await account.parts.tokens.complete_login(login, code)

    def remember_tokens() -> None:
        stored = TokenStore(tmp_path).load("home")
        assert stored is not None
        secrets.update(t for t in (stored.access_token, stored.refresh_token) if t)

    remember_tokens()
    vehicle = sim.vehicles[0].vehicle_id
    clock.now += 1200  # refresh ahead of expiry, with rotation
    await account.parts.provider.read(vehicle)
    remember_tokens()
    sim.expire_tokens()  # 401 mid-session → refresh → retry
    await account.parts.provider.read(vehicle)
    remember_tokens()
    stored = TokenStore(tmp_path).load("home")
    assert stored is not None and stored.refresh_token is not None
    elsewhere = await account.parts.oauth.refresh(stored.refresh_token)  # rotated away from us
    secrets.update(t for t in (elsewhere.access_token, elsewhere.refresh_token) if t)
    clock.now += 1200
    with pytest.raises(ReauthRequired) as caught:
        await account.parts.provider.read(vehicle)
    await account.parts.provider.aclose()

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert "provider.login_stored" in events and "provider.token_refused" in events
    assert events.count("provider.token_refreshed") == 2 and "provider.relogin_needed" in events
    everything = log_stream.getvalue() + str(caught.value) + repr(account.alerts.alerts)
    leaked = [s for s in secrets if s and s in everything]
    assert leaked == []
    # Stronger than "redacted in the end": nothing secret was handed to the logger at all.
    assert logs.REDACTED not in log_stream.getvalue()
