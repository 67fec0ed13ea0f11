"""FordConnect Query response bodies (telemetry, garage, health alerts), from the last upload.

Metric names and shapes follow the published FordConnect Query OpenAPI description. The car
uploads a full snapshot each time, so every metric carries the upload's time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.simulator.fleet import Vehicle
from bridge.simulator.geo import compass
from bridge.simulator.state import (
    DOORS,
    WHEELS,
    WINDOWS,
    CarState,
    alarm_armed,
    charge_display,
    remote_start_seconds_left,
    tyre_warning,
)

PLACARD_KPA = 240.0
LOW_12V_PCT = 50.0
OIL_DUE_PCT = 15.0
_SIDES = {
    "FRONT_LEFT": "DRIVER",
    "REAR_LEFT": "DRIVER",
    "FRONT_RIGHT": "PASSENGER",
    "REAR_RIGHT": "PASSENGER",
    "TAILGATE": "UNKNOWN",
}


def iso(t: datetime) -> str:
    """Query's timestamps: ISO 8601, UTC, milliseconds, `Z`."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _metric(stamp: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"updateTime": stamp, "value": value, "tags": {}, **extra}


def telemetry(v: Vehicle, s: CarState) -> dict[str, Any]:
    stamp = iso(s.time)
    metrics = {**_body(s, stamp), **_health(s, stamp), **_locks(s, stamp), **_place(v, s, stamp)}
    metrics.update(_electric(v, s, stamp) if v.spec.electric else _combustion(s, stamp))
    return {"updateTime": stamp, "vehicleId": v.query_id, "vin": v.vin, "metrics": metrics}


def _body(s: CarState, stamp: str) -> dict[str, Any]:
    return {
        "odometer": _metric(stamp, round(s.odometer, 1)),
        "ignitionStatus": _metric(stamp, "ON" if s.ignition else "OFF"),
        "alarmStatus": _metric(stamp, "ARMED" if alarm_armed(s) else "DISARMED"),
        "remoteStartCountdownTimer": _metric(stamp, round(remote_start_seconds_left(s))),
        "hoodStatus": _metric(stamp, "CLOSED"),
        "doorStatus": [
            _metric(
                stamp,
                "AJAR" if d in s.doors_open else "CLOSED",
                vehicleDoor=d,
                vehicleSide=_SIDES[d],
            )
            for d in DOORS
        ],
        "windowStatus": [
            _metric(stamp, _window_range(s, w), vehicleWindow=w, vehicleSide=_SIDES[w])
            for w in WINDOWS
        ],
    }


def _window_range(s: CarState, window: str) -> dict[str, Any]:
    opened = round(s.window_open, 1) if window == "FRONT_LEFT" else 0.0
    return {"doubleRange": {"lowerBound": opened, "upperBound": opened}}


def _health(s: CarState, stamp: str) -> dict[str, Any]:
    system = "LOW_TIRE_PRESSURE" if tyre_warning(s) else "NORMAL_OPERATION"
    return {
        "batteryStateOfCharge": _metric(
            stamp, round(s.battery_12v, 1), vehicleBattery="PRIMARY_BATTERY"
        ),
        "batteryVoltage": _metric(
            stamp, round(11.9 + 0.008 * s.battery_12v, 2), vehicleBattery="PRIMARY_BATTERY"
        ),
        "tirePressure": [
            _metric(
                stamp,
                round(p, 1),
                vehicleWheel=w,
                wheelPlacardFront=PLACARD_KPA,
                wheelPlacardRear=PLACARD_KPA,
            )
            for w, p in zip(WHEELS, s.tyres, strict=True)
        ],
        "tirePressureSystemStatus": [_metric(stamp, system, vehicleWheel="SYSTEM")],
    }


def _locks(s: CarState, stamp: str) -> dict[str, Any]:
    value = "LOCKED" if s.locked else "UNLOCKED"
    doors = ["ALL_DOORS", *DOORS]
    return {"doorLockStatus": [_metric(stamp, value, vehicleDoor=d) for d in doors]}


def _place(v: Vehicle, s: CarState, stamp: str) -> dict[str, Any]:
    where = {
        "lat": round(s.position.lat, 6),
        "lon": round(s.position.lon, 6),
        "alt": round(v.spec.altitude_m, 1),
    }
    return {
        "position": _metric(
            stamp, {"location": where, "gpsDimension": "DIM_3D", "gpsCoordinateMethod": "ACTUAL"}
        ),
        "heading": _metric(
            stamp,
            {
                "heading": round(s.heading, 1),
                "uncertainty": 5.0,
                "detectionType": "HEADING_RAW_GNSS",
            },
        ),
        "speed": _metric(stamp, round(s.speed, 1)),
        "compassDirection": _metric(stamp, compass(s.heading)),
    }


def _electric(v: Vehicle, s: CarState, stamp: str) -> dict[str, Any]:
    plug = "CONNECTED" if s.plugged else "DISCONNECTED"
    return {
        "xevBatteryStateOfCharge": _metric(stamp, round(s.energy, 1)),
        "xevBatteryRange": _metric(stamp, s.range_km),
        "xevPlugChargerStatus": _metric(stamp, plug),
        "xevBatteryChargeDisplayStatus": _metric(
            stamp, charge_display(s, v.spec), xevChargerPowerType="AC"
        ),
        "xevBatteryTimeToFullCharge": _metric(stamp, s.minutes_to_full or 0.0),
    }


def _combustion(s: CarState, stamp: str) -> dict[str, Any]:
    return {
        "fuelLevel": _metric(stamp, round(s.energy, 1)),
        "fuelRange": _metric(stamp, s.range_km),
        "oilLifeRemaining": _metric(stamp, round(s.oil_life or 0.0, 1)),
    }


def garage(v: Vehicle) -> dict[str, Any]:
    spec = v.spec
    return {
        "vin": v.vin,
        "nickName": spec.nickname,
        "vehicleType": f"{spec.year} {spec.model_name}",
        "color": spec.color,
        "modelName": spec.model_name,
        "modelCode": spec.model_code,
        "modelYear": str(spec.year),
        "tcuEnabled": 1,
        "make": "Ford",
        "ngSdnManaged": 1,
        "vehicleAuthorizationIndicator": 1,
        "engineType": "BEV" if spec.electric else "ICE",
    }


def _alert(headline: str, happening: str, todo: str, code: str, severity: int) -> dict[str, Any]:
    return {
        "Headline": headline,
        "Body": {"whatIsHappening": happening, "whatShouldIdo": todo},
        "FormattedBody": f"{happening} {todo}",
        "Metadata": {
            "categoryName": "Vehicle Health",
            "wilCode": code,
            "severity": severity,
            "displaySequence": 1,
        },
    }


def _low_12v(s: CarState) -> bool:
    return s.battery_12v < LOW_12V_PCT


def _oil_due(s: CarState) -> bool:
    return s.oil_life is not None and s.oil_life < OIL_DUE_PCT


# Each alert appears while its condition holds in the last upload.
_ALERTS: tuple[tuple[Callable[[CarState], bool], dict[str, Any]], ...] = (
    (
        tyre_warning,
        _alert(
            "Low tyre pressure",
            "A tyre is below its recommended pressure.",
            "Check and inflate the tyres.",
            "TPMS_LOW",
            2,
        ),
    ),
    (
        _low_12v,
        _alert(
            "12V battery low",
            "The 12 V battery charge is low.",
            "Drive the vehicle or charge the 12 V battery.",
            "BATT_LOW",
            2,
        ),
    ),
    (
        _oil_due,
        _alert(
            "Oil change due", "Engine oil life is low.", "Schedule an oil change.", "OIL_LIFE", 1
        ),
    ),
)


def active_alerts(s: CarState) -> list[dict[str, Any]]:
    return [alert for check, alert in _ALERTS if check(s)]


def health_alerts(v: Vehicle, s: CarState) -> dict[str, Any]:
    entry = {
        "ActiveAlerts": active_alerts(s),
        "ActivityId": v.query_id,
        "EventTimeStamp": iso(s.time),
        "StatusCode": 2000,
        "StatusDesc": "Success",
        "Vin": v.vin,
    }
    return {"message": "Success", "status": 2000, "version": "1.0", "VehicleAlertList": [entry]}


def query_error(status: int, message: str, path: str, now: datetime, trace: int) -> dict[str, Any]:
    trace_id = f"00000000-0000-4000-8000-{trace:012x}"
    return {
        "timestamp": iso(now),
        "error": status,
        "message": message,
        "traceId": trace_id,
        "path": path,
    }
