"""Fault injection: the spec, each fault kind, before/after the handler, and reproducibility."""

from __future__ import annotations

import json

import httpx
import pytest

from bridge.simulator import (
    FaultKind,
    ManualClock,
    SimulatedDrop,
    Simulator,
    Timings,
    create_app,
    parse_fault_spec,
    serve_in_thread,
)
from tests.simulator.support import CLIENT, MONDAY_0700, QUERY, V1, bearer, v1_headers


def test_fault_spec_parses_every_kind() -> None:
    """The --faults spec maps each kind to its rate."""
    spec = "5xx=0.1,timeout=0.05,slow=0.1,drop=0.02,expire=0.01,malformed=0.02,429=0.05"
    rates = parse_fault_spec(spec)
    assert rates[FaultKind.SERVER_ERROR] == 0.1 and rates[FaultKind.RATE_LIMIT] == 0.05
    assert len(rates) == 7 and parse_fault_spec("") == {}


@pytest.mark.parametrize("spec", ["boom=0.1", "5xx", "5xx=2", "5xx=0.6,drop=0.6", "slow=abc"])
def test_bad_fault_specs_are_refused(spec: str) -> None:
    """Unknown kinds, missing or out-of-range rates, and totals over 1 raise ValueError."""
    with pytest.raises(ValueError, match="fault"):
        parse_fault_spec(spec)


async def test_5xx_fault_answers_a_server_error(sim: Simulator, client: httpx.AsyncClient) -> None:
    """5xx=1: every API call gets 500/502/503 in the surface's error shape."""
    token = sim.grant()["access_token"]
    sim.set_faults("5xx=1")
    v1 = await client.get(V1, headers=v1_headers(token))
    query = await client.get(f"{QUERY}/telemetry", headers=bearer(token))
    assert v1.status_code in {500, 502, 503} and v1.json()["status"] == "FAILED"
    assert query.status_code in {500, 502, 503} and query.json()["error"] == query.status_code


async def test_a_command_hit_by_a_5xx_never_reaches_the_car(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """Faults before the handler stop the call before the service: nothing is executed."""
    token = sim.grant()["access_token"]
    sim.set_faults("5xx=1")
    vid = sim.vehicles[0].vehicle_id
    assert (await client.post(f"{V1}/{vid}/unlock", headers=v1_headers(token))).status_code >= 500
    assert sim.vehicles[0].executed == []


async def test_429_fault_has_retry_after_and_is_not_charged(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """429=1: a throttling burst with Retry-After; it does not count as the account's 429."""
    token = sim.grant()["access_token"]
    sim.set_faults("429=1")
    response = await client.get(V1, headers=v1_headers(token))
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert all(m.throttled == 0 for m in sim.limiter.meters.values())


async def test_expire_fault_kills_the_token(sim: Simulator, client: httpx.AsyncClient) -> None:
    """expire=1: the presented access token is invalidated for good."""
    token = sim.grant()["access_token"]
    sim.set_faults("expire=1")
    assert (await client.get(V1, headers=v1_headers(token))).status_code == 401
    sim.set_faults("")
    response = await client.get(V1, headers=v1_headers(token))
    assert response.status_code == 401 and response.json() == {"error": "invalid_token"}


async def test_malformed_fault_answers_non_json(sim: Simulator, client: httpx.AsyncClient) -> None:
    """malformed=1: a 200 whose body is not JSON."""
    token = sim.grant()["access_token"]
    sim.set_faults("malformed=1")
    response = await client.get(V1, headers=v1_headers(token))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_slow_fault_delays_a_good_answer(sim: Simulator, client: httpx.AsyncClient) -> None:
    """slow=1: the answer is right but arrives after the configured delay."""
    token = sim.grant()["access_token"]
    sim.set_faults("slow=1")
    response = await client.get(V1, headers=v1_headers(token))
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= sim.timings.slow_delay_s


async def test_drop_fault_in_process_raises(sim: Simulator, client: httpx.AsyncClient) -> None:
    """drop=1 in-process: the transport raises SimulatedDrop (a ConnectionResetError)."""
    token = sim.grant()["access_token"]
    sim.set_faults("drop=1")
    with pytest.raises(SimulatedDrop):
        await client.get(V1, headers=v1_headers(token))


def socket_sim(faults: str) -> Simulator:
    return Simulator(
        vehicles=1,
        clock=ManualClock(MONDAY_0700),
        faults=faults,
        timings=Timings(timeout_delay_s=0.6),
    )


def test_drop_fault_over_sockets_breaks_the_connection() -> None:
    """drop=1 over a real socket: the client sees a broken response, yet the command ran."""
    sim = socket_sim("drop=1")
    token, vid = sim.grant()["access_token"], sim.vehicles[0].vehicle_id
    with serve_in_thread(sim) as base, httpx.Client(base_url=base) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"{V1}/{vid}/unlock", headers=v1_headers(token))
    assert [e.command for e in sim.vehicles[0].executed] == ["unlock"]


def test_timeout_fault_outlasts_the_client_timeout() -> None:
    """timeout=1 over a real socket: the answer comes later than a short client timeout."""
    sim = socket_sim("timeout=1")
    token = sim.grant()["access_token"]
    with serve_in_thread(sim) as base, httpx.Client(base_url=base, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(V1, headers=v1_headers(token))


async def test_token_endpoint_suffers_transport_faults_only(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """The token endpoint can fail with 5xx, but injected 429s and expiries do not apply to it."""
    refresh = sim.grant()["refresh_token"]
    sim.set_faults("429=1")
    form = {"grant_type": "refresh_token", "refresh_token": refresh, **CLIENT}
    ok = await client.post("/oauth/token", data=form)
    assert ok.status_code == 200
    sim.set_faults("5xx=1")
    form["refresh_token"] = ok.json()["refresh_token"]
    failed = await client.post("/oauth/token", data=form)
    assert failed.status_code >= 500 and failed.json()["error"] == "server_error"


async def test_faults_are_reproducible_for_a_seed() -> None:
    """The same seed and spec fault the same requests."""

    async def statuses(seed: int) -> list[int]:
        sim = Simulator(
            vehicles=1, seed=seed, clock=ManualClock(MONDAY_0700), faults="5xx=0.3,malformed=0.3"
        )
        token = sim.grant()["access_token"]
        transport = httpx.ASGITransport(create_app(sim))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
            responses = [await c.get(V1, headers=v1_headers(token)) for _ in range(25)]
        return [r.status_code if r.text.startswith("{") else -1 for r in responses]

    first = await statuses(3)
    assert first == await statuses(3)
    assert len(set(first)) > 1
