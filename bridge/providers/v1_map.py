"""FordConnect v1 vehicle documents → VehicleInfo and VehicleState (pure, no I/O).

Units are normalised on the way in: distances km, levels %, tyre pressures kPa, voltages V.
Missing or unrecognised fields are "unknown", never errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from bridge.model import (
    ChargingState,
    EngineState,
    Health,
    Ignition,
    Location,
    LockState,
    OpenState,
    Powertrain,
    Status,
    VehicleInfo,
    VehicleState,
)
from bridge.providers.query_map import IGNITION, LOCKS, OPENINGS, POWERTRAINS
from bridge.providers.stamps import plausible_upload
from bridge.providers.values import dig, flag, lookup, number, text, token, v1_time

PSI_TO_KPA = 6.894757
MAKES = {"F": "Ford", "L": "Lincoln"}
REMOTE_START = {
    "ENGINERUNNING": EngineState.RUNNING,
    "RUNNING": EngineState.RUNNING,
    "ENGINESTOPPED": EngineState.STOPPED,
    "STOPPED": EngineState.STOPPED,
}
CHARGING = {
    "CHARGING": ChargingState.CHARGING,
    "CHARGINGAC": ChargingState.CHARGING,
    "CHARGINGDC": ChargingState.CHARGING,
    "INPROGRESS": ChargingState.CHARGING,
    "CHARGECOMPLETE": ChargingState.COMPLETE,
    "CHARGECOMPLETED": ChargingState.COMPLETE,
    "COMPLETE": ChargingState.COMPLETE,
    "COMPLETED": ChargingState.COMPLETE,
    # NotReady: plugged in or not, the car will not charge now; plugStatus tells which.
    "NOTREADY": ChargingState.PLUGGED,
    "CHARGETARGETREACHED": ChargingState.COMPLETE,
    "EVSEPAUSED": ChargingState.PLUGGED,
    "CHARGESCHEDULED": ChargingState.PLUGGED,
    "SCHEDULED": ChargingState.PLUGGED,
    "CHARGEPAUSED": ChargingState.PLUGGED,
    "PAUSED": ChargingState.PLUGGED,
    "CHARGESTOPPED": ChargingState.PLUGGED,
    "STOPPED": ChargingState.PLUGGED,
    "PLUGGEDIN": ChargingState.PLUGGED,
    "EVSENOTDETECTED": ChargingState.PLUGGED,
    "NOTPLUGGEDIN": ChargingState.NOT_PLUGGED,
    "NOTPLUGGED": ChargingState.NOT_PLUGGED,
    "UNPLUGGED": ChargingState.NOT_PLUGGED,
    "FAULT": ChargingState.FAULT,
    "CHARGEFAULT": ChargingState.FAULT,
    "FAULTDETECTED": ChargingState.FAULT,
}
ALARM = {
    "SET": "armed",
    "NOTSET": "disarmed",
    "ARMED": "armed",
    "DISARMED": "disarmed",
    "PREARMED": "prearmed",
    "ACTIVATED": "activated",
    "TRIGGERED": "activated",
}
# v1 gives the heading as a compass word; the model wants degrees.
COMPASS = {
    "NORTH": 0.0,
    "NORTHEAST": 45.0,
    "EAST": 90.0,
    "SOUTHEAST": 135.0,
    "SOUTH": 180.0,
    "SOUTHWEST": 225.0,
    "WEST": 270.0,
    "NORTHWEST": 315.0,
}


def list_entry_to_info(doc: Mapping[str, Any]) -> VehicleInfo | None:
    """One entry of the vehicle list (or a vehicle document) → VehicleInfo; None without an id."""
    vehicle_id = text(doc.get("vehicleId"))
    if vehicle_id is None:
        return None
    year = number(doc.get("modelYear"))
    make = text(doc.get("make"))
    return VehicleInfo(
        vehicle_id=vehicle_id,
        make=MAKES.get(make, make) if make else None,
        model=text(doc.get("modelName")),
        year=int(year) if year is not None else None,
        nickname=text(doc.get("nickName")),
        powertrain=lookup(doc.get("engineType"), POWERTRAINS, Powertrain.UNKNOWN),
    )


def vehicle_to_state(
    vehicle: Mapping[str, Any], vehicle_id: str, *, now: datetime | None = None
) -> VehicleState:
    """The `vehicle` object of `GET /{id}` → VehicleState; `lastUpdated` is UTC, and unknown
    when implausible (before 2000, or more than a day after `now`)."""
    details = vehicle.get("vehicleDetails")
    status = vehicle.get("vehicleStatus")
    d: Mapping[str, Any] = details if isinstance(details, Mapping) else {}
    s: Mapping[str, Any] = status if isinstance(status, Mapping) else {}
    electric = lookup(vehicle.get("engineType"), POWERTRAINS, Powertrain.UNKNOWN)
    return VehicleState(
        vehicle_id=vehicle_id,
        updated_at=plausible_upload(v1_time(vehicle.get("lastUpdated")), now),
        status=_status(d, s, electric),
        health=_health(d, s),
        location=_location(vehicle.get("vehicleLocation")),
        info=list_entry_to_info({**vehicle, "vehicleId": vehicle_id}),
    )


def _status(d: Mapping[str, Any], s: Mapping[str, Any], powertrain: Powertrain) -> Status:
    battery = number(dig(d, "batteryChargeLevel", "value"))
    plugged = flag(dig(s, "plugStatus", "value"))
    return Status(
        lock=_lock(s),
        ignition=lookup(dig(s, "ignitionStatus", "value"), IGNITION, Ignition.UNKNOWN),
        engine=_engine(s),
        fuel_level_pct=number(dig(d, "fuelLevel", "value")),
        battery_level_pct=battery,
        range_km=_range(d, powertrain),
        odometer_km=number(d.get("odometer")),
        charging=_charging(s, plugged),
        plugged_in=plugged,
        time_to_full_min=number(dig(s, "chargingStatus", "timeToFullCharge")),
        doors=_doors(s),
        windows=_windows(s),
        hood=lookup(dig(s, "hoodStatus", "value"), OPENINGS, OpenState.UNKNOWN),
        alarm=_alarm(s),
    )


def _lock(s: Mapping[str, Any]) -> LockState:
    raw = s.get("lockStatus")
    return lookup(dig(raw, "value") if isinstance(raw, Mapping) else raw, LOCKS, LockState.UNKNOWN)


def _engine(s: Mapping[str, Any]) -> EngineState:
    return lookup(dig(s, "remoteStartStatus", "status"), REMOTE_START, EngineState.UNKNOWN)


def _range(d: Mapping[str, Any], powertrain: Powertrain) -> float | None:
    """An EV's range is the battery's; otherwise the fuel's, falling back to whichever is known."""
    battery = number(dig(d, "batteryChargeLevel", "distanceToEmpty"))
    fuel = number(dig(d, "fuelLevel", "distanceToEmpty"))
    if powertrain is Powertrain.EV:
        return battery
    return fuel if fuel else battery


def _charging(s: Mapping[str, Any], plugged: bool | None) -> ChargingState:
    """The charging word, corrected by the plug: unplugged is never "plugged", whatever it says."""
    state = lookup(dig(s, "chargingStatus", "value"), CHARGING, ChargingState.UNKNOWN)
    if plugged is False and state in (ChargingState.PLUGGED, ChargingState.UNKNOWN):
        return ChargingState.NOT_PLUGGED
    if plugged is True and state is ChargingState.UNKNOWN:
        return ChargingState.PLUGGED
    return state


def _alarm(s: Mapping[str, Any]) -> str | None:
    """v1 says SET/NOTSET; spelled like Query's armed/disarmed so both providers agree."""
    raw = s.get("alarm")
    value = dig(raw, "value") if isinstance(raw, Mapping) else raw
    return None if value is None else lookup(value, ALARM, "unknown")


def _entries(s: Mapping[str, Any], name: str) -> Iterator[Mapping[str, Any]]:
    items = s.get(name)
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, Mapping))


def _doors(s: Mapping[str, Any]) -> dict[str, OpenState]:
    out: dict[str, OpenState] = {}
    for entry in _entries(s, "doorStatus"):
        name = _part(entry, "vehicleDoor")
        if name is not None:
            out[name] = lookup(entry.get("value"), OPENINGS, OpenState.UNKNOWN)
    return out


def _windows(s: Mapping[str, Any]) -> dict[str, OpenState]:
    out: dict[str, OpenState] = {}
    for entry in _entries(s, "windowStatus"):
        name = _part(entry, "vehicleWindow")
        if name is not None:
            out[name] = lookup(entry.get("value"), OPENINGS, OpenState.UNKNOWN)
    return out


def _part(entry: Mapping[str, Any], key: str) -> str | None:
    """`UNSPECIFIED_FRONT` + DRIVER → `front_driver`: v1 names rows and seats, not corners, and
    which corner the driver sits at depends on the market."""
    part = text(entry.get(key))
    if part is None or token(part) == "ALLDOORS":
        return None
    role = text(entry.get("vehicleOccupantRole"))
    if part.upper().startswith("UNSPECIFIED_"):
        part = part[len("UNSPECIFIED_") :]
        if role and role.upper() in ("DRIVER", "PASSENGER"):
            part = f"{part}_{role}"
    return part.lower()


def _health(d: Mapping[str, Any], s: Mapping[str, Any]) -> Health:
    return Health(
        tyre_pressures_kpa=_tyres(s),
        tyre_pressure_warning=flag(s.get("tirePressureWarning")),
        oil_life_pct=number(dig(d, "oilLife", "value")),
        battery_12v_pct=number(dig(s, "battery", "stateOfCharge")),
        battery_12v_voltage=number(dig(s, "battery", "voltage")),
    )


def _tyres(s: Mapping[str, Any]) -> dict[str, float]:
    """Pressures by wheel in kPa; a `unit` of psi (or PSI-sized numbers marked so) is converted."""
    out: dict[str, float] = {}
    for entry in _entries(s, "tirePressure"):
        wheel, value = text(entry.get("vehicleWheel")), number(entry.get("value"))
        if wheel is None or value is None:
            continue
        unit = (text(entry.get("unit")) or "kPa").lower()
        kpa = round(value * PSI_TO_KPA, 1) if unit == "psi" else value
        if math.isfinite(kpa):  # a psi figure near float's limit converts to infinity
            out[wheel.lower()] = kpa
    return out


def _location(raw: Any) -> Location | None:
    lat, lon = number(dig(raw, "latitude")), number(dig(raw, "longitude"))
    if lat is None or lon is None:
        return None
    return Location(
        latitude=lat,
        longitude=lon,
        heading_deg=lookup(dig(raw, "direction"), COMPASS, None),
        speed_kmh=number(dig(raw, "speed")),
    )
