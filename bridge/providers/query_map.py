"""FordConnect Query telemetry `metrics` → the normalised VehicleState (pure, no I/O).

Every metric is optional: a missing one, a null, an unparseable number or an enum value this code
has never seen becomes "unknown" (None or the enum's UNKNOWN), never an error.
"""

from __future__ import annotations

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
from bridge.providers.stamps import plausible_upload
from bridge.providers.values import dig, iso_time, lookup, number, text, token

LOCKS = {
    "LOCKED": LockState.LOCKED,
    "DOUBLELOCKED": LockState.LOCKED,
    "UNLOCKED": LockState.UNLOCKED,
}
IGNITION = {
    "OFF": Ignition.OFF,
    "ACCESSORY": Ignition.ACCESSORY,
    "ON": Ignition.RUN,
    "RUN": Ignition.RUN,
    "START": Ignition.START,
}
OPENINGS = {
    "AJAR": OpenState.OPEN,
    "OPEN": OpenState.OPEN,
    "CLOSED": OpenState.CLOSED,
    "FULLYCLOSED": OpenState.CLOSED,
    "FULLYOPEN": OpenState.OPEN,
    "PARTIALLYOPEN": OpenState.OPEN,
}
CHARGE_DISPLAY = {
    "NOTPLUGGEDIN": ChargingState.NOT_PLUGGED,
    "INPROGRESS": ChargingState.CHARGING,
    "COMPLETED": ChargingState.COMPLETE,
    "FAULT": ChargingState.FAULT,
    "STATIONNOTCOMPATIBLE": ChargingState.FAULT,
    # Plugged in but not taking energy right now.
    "SCHEDULED": ChargingState.PLUGGED,
    "PAUSED": ChargingState.PLUGGED,
    "STOPPED": ChargingState.PLUGGED,
    "NOTREADY": ChargingState.PLUGGED,
    "STATIONNOTDETECTED": ChargingState.PLUGGED,
    "DISCHARGING": ChargingState.PLUGGED,
}
PLUG = {"CONNECTED": True, "DISCONNECTED": False}
REMOTE_START = {
    "STARTING": EngineState.RUNNING,
    "RUNNING": EngineState.RUNNING,
    "ACKNOWLEDGE": EngineState.RUNNING,
    "SHUTDOWN": EngineState.STOPPED,
}
ALARM = {"DISARMED": "disarmed", "PREARMED": "prearmed", "ARMED": "armed", "ACTIVATED": "activated"}
TYRE_SYSTEM_WARNING = {"LOWTIREPRESSURE": True, "NORMALOPERATION": False}
TYRE_WARNING = {"LOW": True, "ALERT": True, "NORMAL": False}
# `vehicleWheel` values that name no tyre: the pressure system as a whole, or a wheel the car
# could not place. A reading under them is no tyre's pressure.
NOT_A_WHEEL = frozenset({"SYSTEM", "UNKNOWN_WHEEL", "UNRECOGNIZED"})
POWERTRAINS = {
    "BEV": Powertrain.EV,
    "EV": Powertrain.EV,
    "ELECTRIC": Powertrain.EV,
    "PHEV": Powertrain.HYBRID,
    "HEV": Powertrain.HYBRID,
    "HYBRID": Powertrain.HYBRID,
    "MHEV": Powertrain.HYBRID,
    "ICE": Powertrain.ICE,
    "GAS": Powertrain.ICE,
    "GASOLINE": Powertrain.ICE,
    "DIESEL": Powertrain.ICE,
}
ALL_DOORS = "ALLDOORS"  # folded like values.token


def telemetry_to_state(
    doc: Mapping[str, Any], vehicle_id: str, *, now: datetime | None = None
) -> VehicleState:
    """The normalised state of one telemetry document; `updated_at` is the car's last upload,
    unknown when implausible (before 2000, or more than a day after `now`)."""
    metrics = doc.get("metrics")
    m: Mapping[str, Any] = metrics if isinstance(metrics, Mapping) else {}
    return VehicleState(
        vehicle_id=vehicle_id,
        updated_at=plausible_upload(iso_time(doc.get("updateTime")), now),
        status=_status(m),
        health=_health(m),
        location=_location(m),
    )


def _value(m: Mapping[str, Any], name: str) -> Any:
    return dig(m, name, "value")


def _num(m: Mapping[str, Any], name: str) -> float | None:
    return number(_value(m, name))


def _entries(m: Mapping[str, Any], name: str) -> Iterator[Mapping[str, Any]]:
    """The items of an array metric that are objects (a null or a scalar yields nothing)."""
    items = m.get(name)
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, Mapping))


def _status(m: Mapping[str, Any]) -> Status:
    plugged = lookup(_value(m, "xevPlugChargerStatus"), PLUG, None)
    return Status(
        lock=_lock(m),
        ignition=lookup(_value(m, "ignitionStatus"), IGNITION, Ignition.UNKNOWN),
        engine=_engine(m),
        fuel_level_pct=_num(m, "fuelLevel"),
        battery_level_pct=_num(m, "xevBatteryStateOfCharge"),
        range_km=_first(_num(m, "xevBatteryRange"), _num(m, "fuelRange")),
        odometer_km=_num(m, "odometer"),
        charging=_charging(m, plugged),
        plugged_in=plugged,
        time_to_full_min=_num(m, "xevBatteryTimeToFullCharge"),
        doors=_openings(m, "doorStatus", "vehicleDoor"),
        windows=_openings(m, "windowStatus", "vehicleWindow"),
        hood=lookup(_value(m, "hoodStatus"), OPENINGS, OpenState.UNKNOWN),
        alarm=_alarm(m),
    )


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _lock(m: Mapping[str, Any]) -> LockState:
    """The ALL_DOORS entry is the car's lock state; single doors say nothing about the car."""
    for entry in _entries(m, "doorLockStatus"):
        if token(entry.get("vehicleDoor")) == ALL_DOORS:
            return lookup(entry.get("value"), LOCKS, LockState.UNKNOWN)
    return LockState.UNKNOWN


def _engine(m: Mapping[str, Any]) -> EngineState:
    state = lookup(_value(m, "remoteStartDeviceStatus"), REMOTE_START, EngineState.UNKNOWN)
    if state is not EngineState.UNKNOWN:
        return state
    countdown = _num(m, "remoteStartCountdownTimer")
    if countdown is None:
        return EngineState.UNKNOWN
    return EngineState.RUNNING if countdown > 0 else EngineState.STOPPED


def _charging(m: Mapping[str, Any], plugged: bool | None) -> ChargingState:
    state = lookup(
        _value(m, "xevBatteryChargeDisplayStatus"), CHARGE_DISPLAY, ChargingState.UNKNOWN
    )
    if state is not ChargingState.UNKNOWN or plugged is None:
        return state
    return ChargingState.PLUGGED if plugged else ChargingState.NOT_PLUGGED


def _alarm(m: Mapping[str, Any]) -> str | None:
    raw = _value(m, "alarmStatus")
    return None if raw is None else lookup(raw, ALARM, "unknown")


def _openings(m: Mapping[str, Any], name: str, part_key: str) -> dict[str, OpenState]:
    """Doors or windows by name (`front_left`, `tailgate`…), ALL_DOORS aside."""
    out: dict[str, OpenState] = {}
    for entry in _entries(m, name):
        part = _part_name(entry, part_key)
        if part is not None:
            out[part] = _open_state(entry.get("value"))
    return out


def _part_name(entry: Mapping[str, Any], part_key: str) -> str | None:
    part = text(entry.get(part_key))
    if part is None or token(part) == ALL_DOORS:
        return None
    role = text(entry.get("vehicleOccupantRole"))
    # UNSPECIFIED_FRONT alone cannot tell driver from passenger; the occupant role can.
    if part.startswith("UNSPECIFIED") and role and role not in ("UNKNOWN", "UNRECOGNIZED"):
        part = f"{part}_{role}"
    return part.lower()


def _open_state(value: Any) -> OpenState:
    """A door's `AJAR`/`CLOSED`, or a window's opening range (upper bound 0 → closed)."""
    if isinstance(value, Mapping):
        bounds = value.get("doubleRange") or value.get("intRange")
        upper = number(dig(bounds, "upperBound"))
        if upper is None:
            return OpenState.UNKNOWN
        return OpenState.OPEN if upper > 0 else OpenState.CLOSED
    return lookup(value, OPENINGS, OpenState.UNKNOWN)


def _health(m: Mapping[str, Any]) -> Health:
    return Health(
        tyre_pressures_kpa=_tyres(m),
        tyre_pressure_warning=_tyre_warning(m),
        oil_life_pct=_num(m, "oilLifeRemaining"),
        battery_12v_pct=_num(m, "batteryStateOfCharge"),
        battery_12v_voltage=_num(m, "batteryVoltage"),
    )


def _tyres(m: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for entry in _entries(m, "tirePressure"):
        wheel, kpa = text(entry.get("vehicleWheel")), number(entry.get("value"))
        if wheel is not None and kpa is not None and wheel not in NOT_A_WHEEL:
            out[wheel.lower()] = kpa
    return out


def _tyre_warning(m: Mapping[str, Any]) -> bool | None:
    """Any wheel or the system reporting low pressure is a warning; all normal is none."""
    seen = [
        lookup(e.get("value"), TYRE_SYSTEM_WARNING, None)
        for e in _entries(m, "tirePressureSystemStatus")
    ]
    seen += [lookup(e.get("value"), TYRE_WARNING, None) for e in _entries(m, "tirePressureStatus")]
    known = [w for w in seen if w is not None]
    return any(known) if known else None


def _location(m: Mapping[str, Any]) -> Location | None:
    where = dig(m, "position", "value", "location")
    lat, lon = number(dig(where, "lat")), number(dig(where, "lon"))
    if lat is None or lon is None:
        return None
    return Location(
        latitude=lat,
        longitude=lon,
        altitude_m=number(dig(where, "alt")),
        heading_deg=number(dig(m, "heading", "value", "heading")),
        speed_kmh=_num(m, "speed"),
    )


def garage_to_info(doc: Mapping[str, Any], vehicle_id: str) -> VehicleInfo:
    """A garage entry → VehicleInfo. The VIN in it is deliberately not carried over."""
    year = number(doc.get("modelYear"))
    return VehicleInfo(
        vehicle_id=vehicle_id,
        make=text(doc.get("make")),
        model=text(doc.get("modelName")),
        year=int(year) if year is not None else None,
        nickname=text(doc.get("nickName")),
        powertrain=lookup(doc.get("engineType"), POWERTRAINS, Powertrain.UNKNOWN),
    )


def vehicle_id_of(doc: Mapping[str, Any]) -> str | None:
    """The provider's vehicle id (a UUID) from a garage or telemetry document."""
    return text(doc.get("vehicleId"))
