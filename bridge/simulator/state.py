"""What a simulated car is (its spec) and what it is doing at one instant (its state)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.simulator.geo import Point

WHEELS = ("FRONT_LEFT", "FRONT_RIGHT", "REAR_LEFT", "REAR_RIGHT")
DOORS = ("FRONT_LEFT", "FRONT_RIGHT", "REAR_LEFT", "REAR_RIGHT", "TAILGATE")
WINDOWS = ("FRONT_LEFT", "FRONT_RIGHT", "REAR_LEFT", "REAR_RIGHT")
# A parked car's modem dozes off after half an hour without anything happening.
SLEEP_AFTER = timedelta(minutes=30)
LOW_TYRE_KPA = 200.0
REMOTE_START_LENGTH = timedelta(minutes=15)
REMOTE_STARTS_PER_DRIVE = 2


class Mode(enum.StrEnum):
    DRIVING = "driving"
    PARKED = "parked"
    CHARGING = "charging"
    SLEEPING = "sleeping"


class Profile(enum.StrEnum):
    """Whose day the car lives: assigned round-robin across the fleet."""

    COMMUTER_EV = "commuter_ev"
    WEEKEND_ICE = "weekend_ice"
    OVERNIGHT_EV = "overnight_ev"


@dataclass(frozen=True, slots=True)
class CarSpec:
    """Static facts about one car and its owner's habits (per-vehicle offsets from the seed)."""

    profile: Profile
    model_name: str
    model_code: str
    year: int
    color: str
    nickname: str
    electric: bool
    full_range_km: float
    use_pct_per_km: float  # state of charge or fuel level used per km
    charge_pct_per_hour: float
    charge_target: float
    charge_hour: int  # the hour the overnight (off-peak) charging window opens
    home: Point
    work: Point
    altitude_m: float
    speed_kmh: float
    depart_shift_min: float
    return_shift_min: float
    tyre_leak_kpa_per_day: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class CarState:
    """The car's true state at `time`. `energy` is the HV state of charge or the fuel level (%)."""

    time: datetime
    position: Point
    heading: float
    speed: float
    odometer: float
    energy: float
    range_km: float
    battery_12v: float
    tyres: tuple[float, float, float, float]
    oil_life: float | None
    last_activity: datetime
    doors_open: frozenset[str] = frozenset()
    window_open: float = 0.0
    locked: bool = True
    ignition: bool = False
    plugged: bool = False
    charging: bool = False
    charge_stopped: bool = False
    minutes_to_full: float | None = None
    engine_until: datetime | None = None
    remote_starts_left: int = REMOTE_STARTS_PER_DRIVE


def engine_running(state: CarState) -> bool:
    return state.engine_until is not None and state.time < state.engine_until


def remote_start_seconds_left(state: CarState) -> float:
    if state.engine_until is None:
        return 0.0
    return max(0.0, (state.engine_until - state.time).total_seconds())


def mode_of(state: CarState) -> Mode:
    if state.ignition:
        return Mode.DRIVING
    if state.charging:
        return Mode.CHARGING
    if not engine_running(state) and state.time - state.last_activity >= SLEEP_AFTER:
        return Mode.SLEEPING
    return Mode.PARKED


def charge_display(state: CarState, spec: CarSpec) -> str:
    """The FordConnect Query `xevBatteryChargeDisplayStatus` value for this state."""
    if not state.plugged:
        return "NOT_PLUGGED_IN"
    if state.charging:
        return "IN_PROGRESS"
    if state.charge_stopped:
        return "STOPPED"
    return "COMPLETED" if state.energy >= spec.charge_target - 0.5 else "SCHEDULED"


def alarm_armed(state: CarState) -> bool:
    return state.locked and not state.ignition


def tyre_warning(state: CarState) -> bool:
    return min(state.tyres) < LOW_TYRE_KPA
