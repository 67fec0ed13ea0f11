"""The `/sim/` admin ground truth: off by default, loopback only, and what each endpoint says."""

from __future__ import annotations

import httpx

from bridge.simulator import ManualClock, Simulator, create_app
from tests.simulator.support import MONDAY_0700, QUERY, V1, FakeMonotonic, bearer, v1_headers


async def test_admin_endpoints_are_off_by_default() -> None:
    """Without admin=True there is no /sim/ at all."""
    sim = Simulator(vehicles=1, clock=ManualClock(MONDAY_0700))
    transport = httpx.ASGITransport(create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        for path in ("/sim/vehicles", "/sim/accounts", "/sim/time"):
            assert (await c.get(path)).status_code == 404
        assert (await c.post("/sim/tokens/expire")).status_code == 404


async def test_admin_refuses_non_loopback_clients(sim: Simulator) -> None:
    """A client that is not on loopback gets 403 from every admin endpoint."""
    transport = httpx.ASGITransport(create_app(sim), client=("192.0.2.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        assert (await c.get("/sim/vehicles")).status_code == 403
        assert (await c.post("/sim/clock", json={"advance": 60})).status_code == 403


async def test_sim_vehicles_shows_truth_upload_and_executed(
    sim: Simulator, client: httpx.AsyncClient, mono: FakeMonotonic
) -> None:
    """Each vehicle: ids, VIN, profile, mode, true state, last upload and executed commands."""
    token = sim.grant(vehicle="all")["access_token"]
    vid = sim.vehicles[0].vehicle_id
    await client.post(f"{V1}/{vid}/lock", headers=v1_headers(token))
    body = (await client.get("/sim/vehicles")).json()
    assert body["now"] == MONDAY_0700.isoformat() and len(body["vehicles"]) == 3
    first = body["vehicles"][0]
    assert first["vehicle_id"] == vid and first["vin"] == sim.vehicles[0].vin
    assert first["profile"] == "commuter_ev" and first["mode"] in {"parked", "sleeping"}
    assert first["truth"]["locked"] is True and 0 <= first["truth"]["soc_pct"] <= 100
    assert first["last_upload"] == {"time": MONDAY_0700.isoformat(), "reason": "locked"}
    assert [(e["command"], e["account_id"], e["outcome"]) for e in first["executed"]] == [
        ("lock", "acct-1", "COMPLETED")
    ]
    assert "fuel_pct" in body["vehicles"][1]["truth"]


async def test_a_refused_command_is_not_in_executed(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """The ground truth proves a 406-refused command never reached the car."""
    token = sim.grant(vehicle="all")["access_token"]
    ice = sim.vehicles[1].vehicle_id
    assert (
        await client.post(f"{V1}/{ice}/startCharge", headers=v1_headers(token))
    ).status_code == (406)
    vehicles = (await client.get("/sim/vehicles")).json()["vehicles"]
    assert vehicles[1]["executed"] == []


async def test_sim_accounts_counts_calls(sim: Simulator, client: httpx.AsyncClient) -> None:
    """Accounts list their vehicles, calls made, 429s served and suspension."""
    token = sim.grant(login_hint="me")["access_token"]
    for _ in range(3):
        await client.get(f"{QUERY}/telemetry", headers=bearer(token))
    [account] = (await client.get("/sim/accounts")).json()["accounts"]
    assert account["account_id"] == "acct-1" and account["login_hint"] == "me"
    assert account["vehicle_ids"] == [sim.vehicles[0].vehicle_id]
    assert (account["calls"], account["throttled"], account["suspended"]) == (3, 0, False)


async def test_sim_faults_sets_and_reports_rates(client: httpx.AsyncClient) -> None:
    """POST /sim/faults takes a spec; GET shows the rates; a bad spec is a 400."""
    response = await client.post("/sim/faults", json={"spec": "5xx=0.25,drop=0.1"})
    assert response.json()["rates"] == {"5xx": 0.25, "drop": 0.1}
    assert (await client.get("/sim/faults")).json()["rates"] == {"5xx": 0.25, "drop": 0.1}
    assert (await client.post("/sim/faults", json={"spec": "nope=1"})).status_code == 400
    assert (await client.post("/sim/faults", json={"spec": ""})).json()["rates"] == {}


async def test_sim_clock_jumps_forward_only(client: httpx.AsyncClient) -> None:
    """POST /sim/clock advances or jumps to a time; backwards is refused."""
    body = (await client.post("/sim/clock", json={"advance": 3600})).json()
    assert body["now"] == "2025-06-02T08:00:00+00:00" and body["speed"] == 1.0
    body = (await client.post("/sim/clock", json={"to": "2025-06-02T12:00:00+00:00"})).json()
    assert body["now"] == "2025-06-02T12:00:00+00:00"
    assert (await client.post("/sim/clock", json={"advance": -1})).status_code == 400
    assert (await client.post("/sim/clock", json={})).status_code == 400
    assert (await client.get("/sim/time")).json()["now"] == "2025-06-02T12:00:00+00:00"


async def test_sim_tokens_expire_kills_every_access_token(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """POST /sim/tokens/expire invalidates all access tokens; refresh tokens still work."""
    grant = sim.grant()
    assert (await client.post("/sim/tokens/expire")).json() == {"expired": 1}
    assert (await client.get(V1, headers=v1_headers(grant["access_token"]))).status_code == 401
    form = {
        "grant_type": "refresh_token",
        "refresh_token": grant["refresh_token"],
        "client_id": "ownerlink-sim",
        "client_secret": "sim-secret",
    }
    assert (await client.post("/oauth/token", data=form)).status_code == 200
