"""Query telemetry → VehicleState: a full document, and missing, null, string and unknown values."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.model import (
    ChargingState,
    EngineState,
    Health,
    Ignition,
    LockState,
    OpenState,
    Powertrain,
    Status,
    to_document,
)
from bridge.providers.query_map import garage_to_info, telemetry_to_state

FULL = Path(__file__).parent / "data" / "telemetry_full.json"


@pytest.fixture
def full() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FULL.read_text())
    return doc


def test_the_full_document_maps_every_concept(full: dict[str, Any]) -> None:
    """Every metric Ownerlink uses lands in its normalised field, in km, %, kPa and V."""
    state = telemetry_to_state(full, "car")
    assert state.updated_at == datetime(2025, 8, 15, 21, 53, 6, 419000, tzinfo=UTC)
    s = state.status
    assert (s.lock, s.ignition, s.engine) == (LockState.LOCKED, Ignition.OFF, EngineState.STOPPED)
    assert (s.fuel_level_pct, s.battery_level_pct, s.range_km) == (64.0, 81.0, 310.0)
    assert s.odometer_km == 12345.6
    assert (s.charging, s.plugged_in, s.time_to_full_min) == (ChargingState.CHARGING, True, 95.0)
    assert s.doors == {
        "front_left": OpenState.CLOSED,
        "front_right": OpenState.OPEN,
        "tailgate": OpenState.CLOSED,
    }
    assert s.windows == {"front_left": OpenState.CLOSED, "rear_right": OpenState.OPEN}
    assert (s.hood, s.alarm) == (OpenState.CLOSED, "armed")
    h = state.health
    assert h.tyre_pressures_kpa == {
        "front_left": 240.0,
        "front_right": 238.5,
        "rear_left": 241.0,
        "rear_right": 199.5,
    }
    assert h.tyre_pressure_warning is True  # REAR_RIGHT reports LOW
    assert (h.oil_life_pct, h.battery_12v_pct, h.battery_12v_voltage) == (72.0, 87.5, 12.6)
    loc = state.location
    assert loc is not None
    assert (loc.latitude, loc.longitude, loc.altitude_m) == (42.30123, -83.20456, 190.5)
    assert (loc.heading_deg, loc.speed_kmh) == (87.5, 0.0)


def test_the_all_doors_entry_is_the_cars_lock_state(full: dict[str, Any]) -> None:
    """An unlocked single door does not make a car whose ALL_DOORS entry says LOCKED unlocked."""
    entries = full["metrics"]["doorLockStatus"]
    assert {e["vehicleDoor"]: e["value"] for e in entries} == {
        "ALL_DOORS": "LOCKED",
        "FRONT_LEFT": "UNLOCKED",
    }
    assert telemetry_to_state(full, "car").status.lock is LockState.LOCKED
    full["metrics"]["doorLockStatus"] = entries[1:]
    assert telemetry_to_state(full, "car").status.lock is LockState.UNKNOWN


def test_the_vin_never_reaches_the_state(full: dict[str, Any]) -> None:
    """The document's VIN appears nowhere in the normalised state."""
    assert full["vin"] not in json.dumps(to_document(telemetry_to_state(full, "car")))


def test_no_metrics_at_all_is_an_all_unknown_state() -> None:
    """A document with no metrics maps to unknowns, not an error."""
    state = telemetry_to_state({"updateTime": "2025-08-15T21:53:06Z"}, "car")
    assert state.status == Status()
    assert state.health == Health()
    assert state.location is None
    assert state.updated_at == datetime(2025, 8, 15, 21, 53, 6, tzinfo=UTC)


@pytest.mark.parametrize("stamp", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_a_time_outside_the_utc_range_is_unknown(full: dict[str, Any], stamp: str) -> None:
    """A timestamp whose offset moves it past year 9999 or before year 1 in UTC is unknown."""
    full["updateTime"] = stamp
    state = telemetry_to_state(full, "car")
    assert state.updated_at is None and state.status.fuel_level_pct is not None


SEEN_AT = datetime(2025, 8, 15, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("update_time", "expected"),
    [
        ("2025-08-15T21:53:06Z", datetime(2025, 8, 15, 21, 53, 6, tzinfo=UTC)),
        ("2025-08-16T20:00:00Z", datetime(2025, 8, 16, 20, 0, tzinfo=UTC)),  # clocks disagree
        ("2025-08-17T22:00:00Z", None),  # two days ahead of ours
        ("9999-12-31T23:56:00Z", None),
        ("1970-01-01T00:00:00Z", None),  # an unset clock
        ("0001-01-01T00:00:00Z", None),
    ],
)
def test_an_implausible_update_time_is_unknown(update_time: str, expected: datetime | None) -> None:
    """An upload stamp before 2000 or more than a day ahead of `now` becomes unknown, not state
    the poller would plan from; one a little ahead (clocks disagree) is kept."""
    doc = {"updateTime": update_time, "metrics": {}}
    assert telemetry_to_state(doc, "car", now=SEEN_AT).updated_at == expected


# Metric → the normalised fields that must go unknown without it (and nothing else may change).
DEPENDS = {
    "fuelLevel": {"status.fuel_level_pct"},
    "xevBatteryStateOfCharge": {"status.battery_level_pct"},
    "xevBatteryRange": {"status.range_km"},  # falls back to fuelRange: changes, stays known
    "odometer": {"status.odometer_km"},
    "doorLockStatus": {"status.lock"},
    "ignitionStatus": {"status.ignition"},
    "position": {"location"},
    "tirePressure": {"health.tyre_pressures_kpa"},
    "xevPlugChargerStatus": {"status.plugged_in"},
    "xevBatteryChargeDisplayStatus": {"status.charging"},  # falls back to the plug: PLUGGED
    "windowStatus": {"status.windows"},
    "alarmStatus": {"status.alarm"},
    "heading": {"location.heading_deg"},
    "batteryVoltage": {"health.battery_12v_voltage"},
    "oilLifeRemaining": {"health.oil_life_pct"},
}


def _flat(doc: dict[str, Any]) -> dict[str, Any]:
    out = {f"status.{k}": v for k, v in doc["status"].items()}
    out |= {f"health.{k}": v for k, v in doc["health"].items()}
    out |= {f"location.{k}": v for k, v in (doc["location"] or {}).items()}
    out["location"] = doc["location"] is not None
    return out


@pytest.mark.parametrize("name", sorted(DEPENDS))
def test_each_missing_metric_is_unknown_and_the_rest_still_map(
    full: dict[str, Any], name: str
) -> None:
    """Dropping one metric changes only the fields that depend on it; everything else maps."""
    before = _flat(to_document(telemetry_to_state(full, "car")))
    del full["metrics"][name]
    after = _flat(to_document(telemetry_to_state(full, "car")))
    changed = {k for k in before if before[k] != after.get(k)}
    if name == "position":
        changed = {k for k in changed if not k.startswith("location.")}
    assert changed == DEPENDS[name]


def test_nulls_everywhere_are_unknown(full: dict[str, Any]) -> None:
    """Null values, null metrics and null arrays map to unknown rather than raising."""
    metrics = full["metrics"]
    for name in list(metrics):
        if isinstance(metrics[name], dict):
            metrics[name]["value"] = None
        else:
            metrics[name] = None
    state = telemetry_to_state(full, "car")
    assert state.status == Status()
    assert state.health == Health()
    assert state.location is None


def test_null_metrics_object_and_null_time_are_unknown() -> None:
    """`metrics: null` and `updateTime: null` are unknown, not errors."""
    state = telemetry_to_state({"updateTime": None, "metrics": None}, "car")
    assert state.updated_at is None and state.status == Status()


def test_numbers_sent_as_strings_are_accepted(full: dict[str, Any]) -> None:
    """ "64.0", " 12345.6 " and "42.30123" are read as the numbers they spell."""
    m = full["metrics"]
    m["fuelLevel"]["value"] = "64.0"
    m["odometer"]["value"] = " 12345.6 "
    m["position"]["value"]["location"] = {"lat": "42.30123", "lon": "-83.20456", "alt": "190.5"}
    m["tirePressure"][0]["value"] = "240"
    state = telemetry_to_state(full, "car")
    assert state.status.fuel_level_pct == 64.0
    assert state.status.odometer_km == 12345.6
    assert state.location is not None and state.location.latitude == 42.30123
    assert state.health.tyre_pressures_kpa["front_left"] == 240.0


HUGE = pytest.param(10**400, id="10**400")  # a JSON integer float() cannot hold


@pytest.mark.parametrize("garbage", ["n/a", "", "NaN", "inf", True, [], {}, HUGE, "1e400"])
def test_unparseable_numbers_are_unknown(full: dict[str, Any], garbage: Any) -> None:
    """Strings that are not numbers, booleans, containers and numbers too large for a float are
    unknown numbers."""
    full["metrics"]["fuelLevel"]["value"] = garbage
    assert telemetry_to_state(full, "car").status.fuel_level_pct is None


def test_unknown_enum_values_are_unknown(full: dict[str, Any]) -> None:
    """Enum values this code has never seen (or UNRECOGNIZED) map to the model's UNKNOWN."""
    m = full["metrics"]
    m["doorLockStatus"][0]["value"] = "HALF_LOCKED_2031"
    m["ignitionStatus"]["value"] = "UNRECOGNIZED"
    m["xevBatteryChargeDisplayStatus"]["value"] = "QUANTUM_CHARGING"
    m["xevPlugChargerStatus"]["value"] = "UNKNOWN"
    m["hoodStatus"]["value"] = "LEVITATING"
    m["doorStatus"][1]["value"] = "SIDEWAYS"
    m["alarmStatus"]["value"] = "CONFUSED"
    m["remoteStartDeviceStatus"]["value"] = "UNRECOGNIZED"
    m["remoteStartCountdownTimer"]["value"] = None
    m["tirePressureStatus"] = [{"value": "WOBBLY", "vehicleWheel": "REAR_RIGHT"}]
    m["tirePressureSystemStatus"] = [{"value": "SENSOR_FAULT", "vehicleWheel": "SYSTEM"}]
    s = telemetry_to_state(full, "car").status
    assert s.lock is LockState.UNKNOWN and s.ignition is Ignition.UNKNOWN
    assert s.charging is ChargingState.UNKNOWN and s.plugged_in is None
    assert s.hood is OpenState.UNKNOWN and s.doors["front_right"] is OpenState.UNKNOWN
    assert s.alarm == "unknown" and s.engine is EngineState.UNKNOWN
    assert telemetry_to_state(full, "car").health.tyre_pressure_warning is None


def test_enum_spellings_vary_in_case_and_separators(full: dict[str, Any]) -> None:
    """`Locked`, `double_locked` and `In Progress` are the values they obviously are."""
    m = full["metrics"]
    m["doorLockStatus"][0]["value"] = "double_locked"
    m["xevBatteryChargeDisplayStatus"]["value"] = "In Progress"
    s = telemetry_to_state(full, "car").status
    assert s.lock is LockState.LOCKED and s.charging is ChargingState.CHARGING


def test_a_combustion_car_has_no_xev_metrics(full: dict[str, Any]) -> None:
    """Without xev* metrics the range is the fuel range and charging stays unknown."""
    for name in [n for n in full["metrics"] if n.startswith("xev")]:
        del full["metrics"][name]
    s = telemetry_to_state(full, "car").status
    assert (s.range_km, s.battery_level_pct) == (402.5, None)
    assert (s.charging, s.plugged_in) == (ChargingState.UNKNOWN, None)


def test_plug_status_fills_in_when_the_charge_display_is_missing(full: dict[str, Any]) -> None:
    """With only the plug metric, a connected car is `plugged` and a disconnected one not."""
    del full["metrics"]["xevBatteryChargeDisplayStatus"]
    assert telemetry_to_state(full, "car").status.charging is ChargingState.PLUGGED
    full["metrics"]["xevPlugChargerStatus"]["value"] = "DISCONNECTED"
    assert telemetry_to_state(full, "car").status.charging is ChargingState.NOT_PLUGGED


def test_a_running_remote_start_countdown_means_the_engine_runs(full: dict[str, Any]) -> None:
    """Without a device status, a countdown above zero means the engine was remote-started."""
    del full["metrics"]["remoteStartDeviceStatus"]
    full["metrics"]["remoteStartCountdownTimer"]["value"] = 540
    assert telemetry_to_state(full, "car").status.engine is EngineState.RUNNING


def test_array_metrics_tolerate_junk_items(full: dict[str, Any]) -> None:
    """Arrays holding nulls, strings or entries without a wheel/door are skipped, not fatal."""
    full["metrics"]["tirePressure"] = [
        None,
        "x",
        {"value": 230},
        {"vehicleWheel": "REAR_LEFT"},
        {"value": 231, "vehicleWheel": "FRONT_LEFT"},
    ]
    full["metrics"]["doorStatus"] = "CLOSED"
    state = telemetry_to_state(full, "car")
    assert state.health.tyre_pressures_kpa == {"front_left": 231.0}
    assert state.status.doors == {}


def test_readings_that_name_no_tyre_are_no_tyre_pressure(full: dict[str, Any]) -> None:
    """The OpenAPI enum also has SYSTEM, UNKNOWN_WHEEL and UNRECOGNIZED: no tyre of the car."""
    full["metrics"]["tirePressure"] = [
        {"value": 230, "vehicleWheel": wheel}
        for wheel in ("SYSTEM", "UNKNOWN_WHEEL", "UNRECOGNIZED")
    ] + [{"value": 231, "vehicleWheel": "REAR_LEFT_INNER"}]
    state = telemetry_to_state(full, "car")
    assert state.health.tyre_pressures_kpa == {"rear_left_inner": 231.0}


def test_garage_maps_to_vehicle_info_without_the_vin() -> None:
    """The garage entry gives make, model, year, nickname and powertrain; never the VIN."""
    garage = {
        "vin": "1FTFW1E50PFA00001",
        "nickName": "Sparky",
        "modelName": "Mustang Mach-E",
        "modelYear": "2023",
        "make": "Ford",
        "engineType": "BEV",
    }
    info = garage_to_info(garage, "q-1")
    assert (info.vehicle_id, info.make, info.model, info.year) == (
        "q-1",
        "Ford",
        "Mustang Mach-E",
        2023,
    )
    assert (info.nickname, info.powertrain) == ("Sparky", Powertrain.EV)
    assert "1FTFW1E50PFA00001" not in repr(info)


def test_full_document_copy_is_untouched_by_mapping(full: dict[str, Any]) -> None:
    """Mapping is pure: the input document is not modified."""
    before = copy.deepcopy(full)
    telemetry_to_state(full, "car")
    assert full == before
