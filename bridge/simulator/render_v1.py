"""FordConnect v1 response bodies, built from a car's last upload."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import JSONResponse

from bridge.simulator.fleet import Vehicle
from bridge.simulator.geo import compass
from bridge.simulator.state import (
    DOORS,
    CarState,
    Mode,
    alarm_armed,
    charge_display,
    engine_running,
    mode_of,
    remote_start_seconds_left,
    tyre_warning,
)

KM_PER_MILE = 1.609344
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    406: "Not Acceptable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# v1 names doors by row and occupant rather than by corner.
_V1_DOORS = {
    "FRONT_LEFT": ("UNSPECIFIED_FRONT", "DRIVER"),
    "FRONT_RIGHT": ("UNSPECIFIED_FRONT", "PASSENGER"),
    "REAR_LEFT": ("UNSPECIFIED_REAR", "DRIVER"),
    "REAR_RIGHT": ("UNSPECIFIED_REAR", "PASSENGER"),
    "TAILGATE": ("TAILGATE", "PASSENGER"),
}
_V1_CHARGING = {
    "NOT_PLUGGED_IN": "NotReady",
    "IN_PROGRESS": "ChargingAC",
    "COMPLETED": "ChargeTargetReached",
    "STOPPED": "EvsePaused",
    "SCHEDULED": "ChargeScheduled",
}


def v1_time(t: datetime) -> str:
    """v1's `MM-DD-YYYY HH:MM:SS` timestamps (UTC)."""
    return t.strftime("%m-%d-%Y %H:%M:%S")


def v1_error(status: int, code: int, details: str) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "title": TITLES.get(status, "Error"),
            "details": details,
            "statusCode": status,
        },
        "status": "FAILED",
        "commandStatus": "FAILED",
    }
    return JSONResponse(body, status_code=status)


def identity(v: Vehicle) -> dict[str, Any]:
    spec = v.spec
    return {
        "vehicleId": v.vehicle_id,
        "make": "F",
        "modelName": spec.model_name,
        "modelYear": str(spec.year),
        "color": spec.color,
        "nickName": spec.nickname,
        "engineType": "EV" if spec.electric else "ICE",
    }


def list_entry(v: Vehicle) -> dict[str, Any]:
    return {
        **identity(v),
        "modemEnabled": True,
        "vehicleAuthorizationIndicator": 1,
        "serviceCompatible": True,
    }


def location(s: CarState) -> dict[str, Any]:
    direction = compass(s.heading).title().replace("east", "East").replace("west", "West")
    return {
        "longitude": f"{s.position.lon:.6f}",
        "latitude": f"{s.position.lat:.6f}",
        "speed": round(s.speed, 1),
        "direction": direction,
        "timeStamp": v1_time(s.time),
    }


def vehicle_info(v: Vehicle, s: CarState) -> dict[str, Any]:
    stamp = v1_time(s.time)
    return {
        "status": "SUCCESS",
        "vehicle": {
            **identity(v),
            "lastUpdated": stamp,
            "vehicleDetails": _details(v, s, stamp),
            "vehicleStatus": _status(v, s),
            "vehicleLocation": location(s),
        },
    }


def _details(v: Vehicle, s: CarState, stamp: str) -> dict[str, Any]:
    ev = v.spec.electric
    level = round(s.energy, 1)
    return {
        "fuelLevel": {"value": None if ev else level, "distanceToEmpty": 0.0 if ev else s.range_km},
        "batteryChargeLevel": {
            "value": level if ev else None,
            "distanceToEmpty": s.range_km if ev else 0.0,
            "timestamp": stamp,
        },
        "mileage": round(s.odometer / KM_PER_MILE, 1),
        "odometer": round(s.odometer, 1),
    }


def _status(v: Vehicle, s: CarState) -> dict[str, Any]:
    running = engine_running(s)
    out: dict[str, Any] = {
        "tirePressureWarning": tyre_warning(s),
        "deepSleepInProgress": mode_of(s) is Mode.SLEEPING,
        "firmwareUpgradeInProgress": False,
        "remoteStartStatus": {
            "status": "ENGINE_RUNNING" if running else "ENGINE_STOPPED",
            "duration": round(remote_start_seconds_left(s) / 60),
        },
        "ignitionStatus": {"value": "RUN" if s.ignition else "OFF"},
        "lockStatus": {"value": "LOCKED" if s.locked else "UNLOCKED"},
        "alarm": {"value": "SET" if alarm_armed(s) else "NOTSET"},
        "doorStatus": [
            {
                "vehicleDoor": door,
                "value": "AJAR" if corner in s.doors_open else "CLOSED",
                "vehicleOccupantRole": role,
            }
            for corner, (door, role) in ((c, _V1_DOORS[c]) for c in DOORS)
        ],
    }
    if v.spec.electric:
        out["chargingStatus"] = {"value": _V1_CHARGING[charge_display(s, v.spec)]}
        out["plugStatus"] = {"value": s.plugged}
    return out


def refresh_status(s: CarState) -> dict[str, Any]:
    """The `vehiclestatus` a completed status refresh carries."""
    return {
        "lockStatus": {"value": "LOCKED" if s.locked else "UNLOCKED"},
        "alarm": {"value": "SET" if alarm_armed(s) else "NOTSET"},
    }
