"""Daily plans per driver profile: when the car leaves, where it goes, when charging may start.

A plan is drawn from a Random seeded by (fleet seed, vehicle, date), so a day's plan never
depends on when anyone looked at the car.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from random import Random

from bridge.simulator.geo import Point, offset, street_route
from bridge.simulator.state import CarSpec, Profile

SATURDAY = 5


@dataclass(frozen=True, slots=True)
class Trip:
    """One drive to `dest`; `window_open` is how far (%) the driver's window is down."""

    dest: Point
    purpose: str
    speed_kmh: float
    plug_on_arrival: bool = False
    window_open: float = 0.0


@dataclass(frozen=True, slots=True)
class DayPlan:
    departures: tuple[tuple[datetime, Trip], ...]
    charge_window: datetime | None


Departures = list[tuple[datetime, Trip]]


def plan_day(spec: CarSpec, day: date, rng: Random) -> DayPlan:
    """The plan for `day` (the simulated world keeps UTC as its local time)."""
    midnight = datetime.combine(day, time(0), tzinfo=UTC)
    return _PLANNERS[spec.profile](spec, midnight, rng)


def _hours(h: float) -> timedelta:
    return timedelta(hours=h)


def _trip(spec: CarSpec, dest: Point, purpose: str, rng: Random, *, plug: bool = False) -> Trip:
    # One trip in five has the driver's window down for some fresh air.
    window = rng.uniform(10.0, 40.0) if rng.random() < 0.2 else 0.0
    speed = spec.speed_kmh * rng.uniform(0.85, 1.15)
    return Trip(dest, purpose, speed, plug_on_arrival=plug, window_open=window)


def _errand(
    spec: CarSpec, at: datetime, rng: Random, *, km: tuple[float, float], dwell_min: tuple[int, int]
) -> Departures:
    """Out to a random place around home, a stay, and back home (plugging in if electric)."""
    bearing = math.radians(rng.uniform(0.0, 360.0))
    distance = rng.uniform(*km)
    dest = offset(
        spec.home, north_km=distance * math.cos(bearing), east_km=distance * math.sin(bearing)
    )
    out = _trip(spec, dest, "errand", rng)
    drive = timedelta(hours=street_route(spec.home, dest).length_km / out.speed_kmh)
    back_at = at + drive + timedelta(minutes=rng.randint(*dwell_min) + 2)
    back = _trip(spec, spec.home, "home", rng, plug=spec.electric)
    return [(at, out), (back_at, back)]


def _commuter_ev(spec: CarSpec, midnight: datetime, rng: Random) -> DayPlan:
    """Weekdays to work around 08:00 and home around 17:30; a Saturday errand; charges at night."""
    departures: Departures = []
    weekday = midnight.weekday()
    if weekday < SATURDAY:
        leave = _hours(8 + (spec.depart_shift_min + rng.uniform(-10, 10)) / 60)
        back = _hours(17.5 + (spec.return_shift_min + rng.uniform(-15, 15)) / 60)
        departures.append((midnight + leave, _trip(spec, spec.work, "work", rng)))
        departures.append((midnight + back, _trip(spec, spec.home, "home", rng, plug=True)))
    elif weekday == SATURDAY and rng.random() < 0.6:
        at = midnight + _hours(rng.uniform(10, 15))
        departures += _errand(spec, at, rng, km=(3, 12), dwell_min=(20, 90))
    return DayPlan(tuple(departures), midnight + _hours(spec.charge_hour))


def _weekend_ice(spec: CarSpec, midnight: datetime, rng: Random) -> DayPlan:
    """Parked for days; a short outing on most weekend days and now and then on a weekday."""
    chance = 0.7 if midnight.weekday() >= SATURDAY else 0.15
    if rng.random() >= chance:
        return DayPlan((), None)
    at = midnight + _hours(rng.uniform(9.5, 14))
    return DayPlan(tuple(_errand(spec, at, rng, km=(5, 20), dwell_min=(60, 150))), None)


def _overnight_ev(spec: CarSpec, midnight: datetime, rng: Random) -> DayPlan:
    """One to three short errands in the daytime; plugged in at home, charges off-peak."""
    departures: Departures = []
    at = midnight + _hours(9.5 + spec.depart_shift_min / 60 + rng.uniform(0, 1.5))
    for _ in range(rng.randint(1, 3)):
        legs = _errand(spec, at, rng, km=(2, 10), dwell_min=(15, 60))
        departures += legs
        at = legs[-1][0] + timedelta(minutes=rng.randint(60, 150))
    return DayPlan(tuple(departures), midnight + _hours(spec.charge_hour))


_PLANNERS: dict[Profile, Callable[[CarSpec, datetime, Random], DayPlan]] = {
    Profile.COMMUTER_EV: _commuter_ev,
    Profile.WEEKEND_ICE: _weekend_ice,
    Profile.OVERNIGHT_EV: _overnight_ev,
}
