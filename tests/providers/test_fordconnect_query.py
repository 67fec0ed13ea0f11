"""The FordConnect Query provider on a scripted server: bearer only, garage, telemetry, alerts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.errors import ProviderUnavailable, RateLimited, Unsupported
from bridge.model import LockState, Operation, Powertrain
from bridge.providers.fordconnect_query import FordConnectQueryProvider, alert_headlines
from tests.providers.support import QUERY, Rig, ok, rig

TELEMETRY = json.loads((Path(__file__).parent / "data" / "telemetry_full.json").read_text())
GARAGE = {
    "vin": "1FTFW1E50PFA00001",
    "nickName": "Blue",
    "modelName": "F-150",
    "modelYear": "2021",
    "make": "Ford",
    "engineType": "ICE",
}
ALERTS = {
    "status": 2000,
    "VehicleAlertList": [
        {
            "ActiveAlerts": [
                {"Headline": "Low tyre pressure", "Body": {"whatIsHappening": "x"}},
                {"Headline": "Oil change due"},
                {"FormattedBody": "no headline"},
            ]
        }
    ],
}


def provider(r: Rig, *, read_alerts: bool = False) -> FordConnectQueryProvider:
    return FordConnectQueryProvider(
        "acct", api=r.parts.api, base_url=QUERY, read_alerts=read_alerts
    )


async def test_query_calls_carry_only_the_bearer_token(tmp_path: Path) -> None:
    """Query has no vehicle id in the path and no Application-Id: just the bearer token."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/telemetry", ok(TELEMETRY))
    state = await provider(r).read("whatever")
    request = r.ford.api_requests()[0]
    assert request.url.path == "/fcon-query/v1/telemetry"
    assert "Application-Id" not in request.headers and "api-version" not in request.headers
    assert request.headers["Authorization"] == "Bearer access-seed-secretish"
    assert state.vehicle_id == "whatever" and state.status.lock is LockState.LOCKED
    await r.parts.api.aclose()


async def test_garage_lists_the_one_vehicle_without_its_vin(tmp_path: Path) -> None:
    """The garage answer becomes one VehicleInfo whose id is not derived from the VIN."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/garage", ok(GARAGE))
    [info] = await provider(r).list_vehicles()
    assert (info.model, info.year, info.powertrain) == ("F-150", 2021, Powertrain.ICE)
    assert info.vehicle_id.startswith("q-") and "1FTFW1E50PFA00001" not in repr(info)
    again = await provider(r).list_vehicles()
    assert again[0].vehicle_id == info.vehicle_id  # stable across calls
    await r.parts.api.aclose()


async def test_a_garage_wrapped_in_a_list_is_accepted(tmp_path: Path) -> None:
    """A garage answer shaped `{vehicles: [...]}` is read as well, using its vehicleId."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/garage", ok({"vehicles": [{**GARAGE, "vehicleId": "uuid-1"}]}))
    [info] = await provider(r).list_vehicles()
    assert info.vehicle_id == "uuid-1"
    await r.parts.api.aclose()


async def test_an_empty_garage_is_unavailable(tmp_path: Path) -> None:
    """An empty garage object is a broken answer, not a car with no details."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/garage", ok({}))
    with pytest.raises(ProviderUnavailable):
        await provider(r).list_vehicles()
    await r.parts.api.aclose()


async def test_a_garage_listing_no_vehicle_is_no_vehicle(tmp_path: Path) -> None:
    """`{vehicles: []}` is an answer: the consent covers no car; never a made-up one."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/garage", ok({"vehicles": []}))
    assert await provider(r).list_vehicles() == []
    await r.parts.api.aclose()


async def test_health_alerts_are_read_only_when_asked_for(tmp_path: Path) -> None:
    """read_alerts adds the active alerts' headlines at the price of a second call."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/telemetry", ok(TELEMETRY))
    r.ford.on("GET", "/fcon-query/v1/vehicle-health/alerts", ok(ALERTS))
    assert (await provider(r).read("car")).health.alerts == ()
    assert len(r.ford.api_requests()) == 1
    state = await provider(r, read_alerts=True).read("car")
    assert state.health.alerts == ("Low tyre pressure", "Oil change due")
    assert state.health.oil_life_pct == 72.0  # the telemetry's health fields are kept
    await r.parts.api.aclose()


async def test_a_failed_alerts_call_keeps_the_telemetry_and_the_last_alerts(tmp_path: Path) -> None:
    """A 5xx on the alerts call after a good telemetry call gives the telemetry with the alerts
    last read, instead of throwing away the read the budget already paid for."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/telemetry", ok(TELEMETRY))
    r.ford.on("GET", "/fcon-query/v1/vehicle-health/alerts", ok(ALERTS), ok({}, status=503))
    query = provider(r, read_alerts=True)
    assert (await query.read("car")).health.alerts == ("Low tyre pressure", "Oil change due")
    state = await query.read("car")
    assert state.health.alerts == ("Low tyre pressure", "Oil change due")
    assert state.status.lock is LockState.LOCKED and state.health.oil_life_pct == 72.0
    await r.parts.api.aclose()


async def test_alerts_outside_the_consent_are_not_asked_for_again(tmp_path: Path) -> None:
    """A 403 on the alerts call keeps the telemetry and stops the second call on later reads, so
    a consent without alerts does not cost a refused call on every poll."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/telemetry", ok(TELEMETRY))
    r.ford.on("GET", "/fcon-query/v1/vehicle-health/alerts", ok({"error": "forbidden"}, status=403))
    query = provider(r, read_alerts=True)
    first = await query.read("car")
    assert first.health.alerts == () and first.status.lock is LockState.LOCKED
    await query.read("car")
    paths = [request.url.path for request in r.ford.api_requests()]
    assert paths.count("/fcon-query/v1/vehicle-health/alerts") == 1
    assert paths.count("/fcon-query/v1/telemetry") == 2
    await r.parts.api.aclose()


async def test_a_429_on_the_alerts_call_still_reaches_the_account_guard(tmp_path: Path) -> None:
    """A 429 is about the account, not the alerts: it raises, so the account backs off."""
    r = rig(tmp_path, "fordconnect-query")
    r.ford.on("GET", "/fcon-query/v1/telemetry", ok(TELEMETRY))
    r.ford.on(
        "GET", "/fcon-query/v1/vehicle-health/alerts", ok({}, status=429, **{"Retry-After": "60"})
    )
    with pytest.raises(RateLimited):
        await provider(r, read_alerts=True).read("car")
    await r.parts.api.aclose()


def test_alert_documents_of_the_wrong_shape_give_no_alerts() -> None:
    """Null, object-instead-of-list and missing alert lists yield no headlines, not errors."""
    assert alert_headlines({}) == ()
    assert alert_headlines({"VehicleAlertList": {"ActiveAlerts": []}}) == ()
    assert alert_headlines({"VehicleAlertList": [{"ActiveAlerts": None}, None]}) == ()


async def test_query_has_no_commands(tmp_path: Path) -> None:
    """execute raises Unsupported without any request."""
    r = rig(tmp_path, "fordconnect-query")
    with pytest.raises(Unsupported):
        await provider(r).execute("car", Operation.LOCK)
    assert r.ford.requests == []
    await r.parts.api.aclose()
