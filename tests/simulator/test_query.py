"""FordConnect Query routes: telemetry for the token's vehicle, garage, alerts, error shape."""

from __future__ import annotations

import re

import httpx

from bridge.simulator import ManualClock, Simulator, create_app
from tests.simulator.support import QUERY, V1, FakeMonotonic, bearer, login, v1_headers

COMMON = {
    "odometer",
    "batteryStateOfCharge",
    "batteryVoltage",
    "tirePressure",
    "tirePressureSystemStatus",
    "doorLockStatus",
    "doorStatus",
    "windowStatus",
    "hoodStatus",
    "ignitionStatus",
    "position",
    "heading",
    "speed",
    "compassDirection",
    "alarmStatus",
    "remoteStartCountdownTimer",
}
ELECTRIC = {
    "xevBatteryStateOfCharge",
    "xevBatteryRange",
    "xevPlugChargerStatus",
    "xevBatteryChargeDisplayStatus",
    "xevBatteryTimeToFullCharge",
}
COMBUSTION = {"fuelLevel", "fuelRange", "oilLifeRemaining"}
ERROR_KEYS = {"timestamp", "error", "message", "traceId", "path"}


async def telemetry_for(client: httpx.AsyncClient, vehicle_id: str) -> dict:
    token = (await login(client, vehicle=vehicle_id))["access_token"]
    response = await client.get(f"{QUERY}/telemetry", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def assert_metric(metric: dict, update_time: str) -> None:
    assert metric["updateTime"] == update_time and "value" in metric and "tags" in metric


async def test_ev_telemetry_has_the_schema_metrics(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """An EV's telemetry has every common and xev metric, each {updateTime, value, tags}."""
    vehicle = sim.vehicles[0]
    body = await telemetry_for(client, vehicle.vehicle_id)
    assert set(body) == {"updateTime", "vehicleId", "vin", "metrics"}
    assert body["vin"] == vehicle.vin and len(body["vin"]) == 17
    assert re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", body["vehicleId"])
    metrics = body["metrics"]
    assert set(metrics) >= COMMON | ELECTRIC and not COMBUSTION & set(metrics)
    for name in COMMON | ELECTRIC:
        for metric in metrics[name] if isinstance(metrics[name], list) else [metrics[name]]:
            assert_metric(metric, body["updateTime"])


async def test_combustion_telemetry_omits_xev(sim: Simulator, client: httpx.AsyncClient) -> None:
    """A combustion car reports fuel and oil life and no xev* metric."""
    metrics = (await telemetry_for(client, sim.vehicles[1].vehicle_id))["metrics"]
    assert set(metrics) >= COMBUSTION
    assert not [m for m in metrics if m.startswith("xev")]


async def test_nested_metric_shapes(sim: Simulator, client: httpx.AsyncClient) -> None:
    """Position, heading, tyres and locks have the schema's nested shapes."""
    metrics = (await telemetry_for(client, sim.vehicles[0].vehicle_id))["metrics"]
    assert set(metrics["position"]["value"]["location"]) == {"lat", "lon", "alt"}
    assert "heading" in metrics["heading"]["value"]
    wheels = {t["vehicleWheel"] for t in metrics["tirePressure"]}
    assert wheels == {"FRONT_LEFT", "FRONT_RIGHT", "REAR_LEFT", "REAR_RIGHT"}
    all_doors = [d for d in metrics["doorLockStatus"] if d["vehicleDoor"] == "ALL_DOORS"]
    assert len(all_doors) == 1 and all_doors[0]["value"] in {"LOCKED", "UNLOCKED"}
    assert "doubleRange" in metrics["windowStatus"][0]["value"]


async def test_telemetry_is_for_the_vehicle_bound_to_the_token(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """No id in the path: the consent's vehicle decides whose telemetry comes back."""
    for vehicle in sim.vehicles:
        assert (await telemetry_for(client, vehicle.vehicle_id))["vin"] == vehicle.vin


async def test_telemetry_serves_the_last_upload_not_the_truth(
    sim: Simulator, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A parked car's updateTime stays put while its 12 V battery quietly drains."""
    vehicle = sim.vehicles[1]  # weekend_ice: parked all Monday
    first = await telemetry_for(client, vehicle.vehicle_id)
    clock.advance(4 * 3600)
    second = await telemetry_for(client, vehicle.vehicle_id)
    assert first["updateTime"] == second["updateTime"]
    assert first["metrics"] == second["metrics"]
    assert vehicle.car.truth(sim.now()).battery_12v < vehicle.car.served(sim.now()).battery_12v


async def test_status_refresh_moves_query_update_time(
    sim: Simulator, client: httpx.AsyncClient, mono: FakeMonotonic
) -> None:
    """A v1 status refresh forces an upload that the Query API then serves."""
    vehicle = sim.vehicles[1]
    token = (await login(client, vehicle=vehicle.vehicle_id))["access_token"]
    before = (await client.get(f"{QUERY}/telemetry", headers=bearer(token))).json()
    await client.post(f"{V1}/{vehicle.vehicle_id}/status", headers=v1_headers(token))
    after = (await client.get(f"{QUERY}/telemetry", headers=bearer(token))).json()
    assert before["updateTime"] < after["updateTime"] == "2025-06-02T07:00:00.000Z"


async def test_garage_describes_the_vehicle(sim: Simulator, client: httpx.AsyncClient) -> None:
    """GET garage gives the bound vehicle's VIN, model and engine type."""
    vehicle = sim.vehicles[0]
    token = (await login(client, vehicle=vehicle.vehicle_id))["access_token"]
    body = (await client.get(f"{QUERY}/garage", headers=bearer(token))).json()
    assert body["vin"] == vehicle.vin and body["engineType"] == "BEV"
    assert {"modelName", "modelYear", "make", "color", "vehicleType", "tcuEnabled"} <= set(body)


async def test_health_alerts_report_a_slow_puncture(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """A car with a leaking tyre eventually shows a low-tyre alert (after an upload)."""
    sim = Simulator(vehicles=12, clock=clock, auto_consent=True)
    leaky = next(v for v in sim.vehicles if any(v.spec.tyre_leak_kpa_per_day))
    clock.advance(30 * 86400)
    token = sim.grant(vehicle=leaky.vehicle_id)["access_token"]
    transport = httpx.ASGITransport(create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        await c.post(f"{V1}/{leaky.vehicle_id}/status", headers=v1_headers(token))
        body = (await c.get(f"{QUERY}/vehicle-health/alerts", headers=bearer(token))).json()
    alerts = body["VehicleAlertList"][0]["ActiveAlerts"]
    assert body["status"] == 2000 and body["VehicleAlertList"][0]["Vin"] == leaky.vin
    assert any(a["Metadata"]["wilCode"] == "TPMS_LOW" for a in alerts)


async def test_query_errors_have_the_query_shape(client: httpx.AsyncClient) -> None:
    """An invalid token gets 401 {timestamp, error, message, traceId, path}."""
    response = await client.get(f"{QUERY}/telemetry", headers=bearer("nope"))
    assert response.status_code == 401
    body = response.json()
    assert set(body) == ERROR_KEYS and body["error"] == 401
    assert body["path"] == f"{QUERY}/telemetry"


async def test_unknown_query_path_is_404(client: httpx.AsyncClient) -> None:
    """Paths the simulator does not serve answer 404 in the Query error shape."""
    token = (await login(client))["access_token"]
    response = await client.get(f"{QUERY}/wallbox", headers=bearer(token))
    assert response.status_code == 404 and set(response.json()) == ERROR_KEYS
