"""Per-account rate limits (429 with Retry-After) and suspension (403) for hammering accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.simulator import Limits, ManualClock, SimClock, Simulator, create_app
from tests.simulator.support import MONDAY_0700, QUERY, V1, FakeMonotonic, bearer, v1_headers

LIMITS = Limits(per_minute=3, per_day=10, suspend_after=5)


@pytest.fixture
def limited(clock: ManualClock) -> Simulator:
    return Simulator(vehicles=1, clock=clock, auto_consent=True, admin=True, limits=LIMITS)


@pytest.fixture
async def lclient(limited: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(create_app(limited))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        yield c


async def calls(client: httpx.AsyncClient, token: str, n: int) -> list[httpx.Response]:
    return [await client.get(V1, headers=v1_headers(token)) for _ in range(n)]


async def test_per_minute_limit_answers_429_with_retry_after(
    limited: Simulator, lclient: httpx.AsyncClient
) -> None:
    """The call past the per-minute limit gets 429 with Retry-After until the minute ends."""
    token = limited.grant()["access_token"]
    responses = await calls(lclient, token, 4)
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[-1].headers["Retry-After"] == "60"  # 07:00:00 → the next simulated minute
    assert responses[-1].json()["error"]["code"] == 429


async def test_limit_lifts_when_the_window_opens(
    limited: Simulator, lclient: httpx.AsyncClient, clock: ManualClock
) -> None:
    """After Retry-After has passed, calls succeed again."""
    token = limited.grant()["access_token"]
    await calls(lclient, token, 4)
    clock.advance(60)
    assert (await calls(lclient, token, 1))[0].status_code == 200


async def test_per_day_limit_waits_for_midnight(
    limited: Simulator, lclient: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Past the daily limit the Retry-After points at the next simulated (UTC) midnight."""
    token = limited.grant()["access_token"]
    for _ in range(4):
        await calls(lclient, token, 3)
        clock.advance(60)
    refused = (await calls(lclient, token, 1))[0]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == 17 * 3600 - 4 * 60


async def test_retry_after_is_in_real_seconds() -> None:
    """At 60x speed a 60-simulated-second wait is announced as 1 real second."""
    mono = FakeMonotonic()
    sim = Simulator(
        vehicles=1, clock=SimClock(60.0, MONDAY_0700, monotonic=mono), limits=LIMITS, monotonic=mono
    )
    token = sim.grant()["access_token"]
    transport = httpx.ASGITransport(create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        refused = (await calls(c, token, 4))[-1]
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"


async def test_query_429_has_the_query_shape(
    limited: Simulator, lclient: httpx.AsyncClient
) -> None:
    """The Query API's 429 uses its own error body, with Retry-After."""
    token = limited.grant()["access_token"]
    responses = [await lclient.get(f"{QUERY}/telemetry", headers=bearer(token)) for _ in range(4)]
    assert responses[-1].status_code == 429 and responses[-1].json()["error"] == 429
    assert "Retry-After" in responses[-1].headers


async def test_hammering_a_limited_account_gets_it_suspended(
    limited: Simulator, lclient: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Calls made while limited pile up to a suspension: 403, even after the window opens."""
    token = limited.grant()["access_token"]
    responses = await calls(lclient, token, 3 + LIMITS.suspend_after + 1)
    assert responses[-1].status_code == 403
    clock.advance(120)
    token = limited.grant()["access_token"]  # another account is fine
    assert (await calls(lclient, token, 1))[0].status_code == 200
    accounts = (await lclient.get("/sim/accounts")).json()["accounts"]
    first = accounts[0]
    assert first["suspended"] and first["throttled"] == LIMITS.suspend_after
    assert first["refused_suspended"] == 1


async def test_suspension_outlives_the_minute_window(
    limited: Simulator, lclient: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A suspended account stays refused for a long time (a simulated day by default)."""
    grant = limited.grant(login_hint="owner")
    await calls(lclient, grant["access_token"], 3 + LIMITS.suspend_after)
    clock.advance(3600)
    token = limited.grant(login_hint="owner")["access_token"]  # logging in again does not help
    assert (await calls(lclient, token, 1))[0].status_code == 403
    clock.advance(86400)
    token = limited.grant(login_hint="owner")["access_token"]
    assert (await calls(lclient, token, 1))[0].status_code == 200


async def test_bad_tokens_do_not_count_against_the_account(
    limited: Simulator, lclient: httpx.AsyncClient
) -> None:
    """Requests refused before authentication are not charged to any account."""
    await calls(lclient, "bogus", 10)
    token = limited.grant()["access_token"]
    assert (await calls(lclient, token, 1))[0].status_code == 200
