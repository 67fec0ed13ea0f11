"""Closed-form state between a car's events: parked, driving a route, or charging.

`project(base, motion, spec, at)` gives the true state at `at` from the state at the last event,
so nothing is integrated step by step and the answer never depends on who asked when.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bridge.simulator.geo import Route
from bridge.simulator.state import CarSpec, CarState

DRIVE_UPLOAD_EVERY_S = 60.0  # …or every kilometre, whichever comes first
CHARGE_UPLOAD_STEP_PCT = 10.0
DRAIN_12V_PCT_PER_DAY = 0.4
CHARGE_12V_PCT_PER_MIN = 0.05
OIL_KM_PER_PCT = 150.0  # 15,000 km between oil changes
FLAT_TYRE_KPA = 150.0
FLAT_12V_PCT = 30.0


@dataclass(frozen=True, slots=True)
class Still:
    """Parked (possibly with the engine remote-started)."""


@dataclass(frozen=True, slots=True)
class Drive:
    """On `route` at `speed_kmh`; `covered_km` at the base time; uploads tick from `since`."""

    route: Route
    speed_kmh: float
    covered_km: float
    since: datetime

    @property
    def upload_every_s(self) -> float:
        return min(DRIVE_UPLOAD_EVERY_S, 3600.0 / self.speed_kmh)


@dataclass(frozen=True, slots=True)
class Charge:
    rate_pct_per_hour: float
    target: float


Motion = Still | Drive | Charge


def range_km(spec: CarSpec, energy: float) -> float:
    return round(energy / 100.0 * spec.full_range_km, 1)


def _seconds(base: CarState, at: datetime) -> float:
    return max(0.0, (at - base.time).total_seconds())


def covered_km(base: CarState, drive: Drive, at: datetime) -> float:
    """Distance along the route at `at` (the route's end once arrived)."""
    hours = _seconds(base, at) / 3600.0
    return min(drive.route.length_km, drive.covered_km + drive.speed_kmh * hours)


def project(base: CarState, motion: Motion, spec: CarSpec, at: datetime) -> CarState:
    """The true state at `at`, no earlier than `base.time`, given no event in between."""
    dt = _seconds(base, at)
    days = dt / 86400.0
    leaks = spec.tyre_leak_kpa_per_day
    fl, fr, rl, rr = (
        max(FLAT_TYRE_KPA, p - leak * days) for p, leak in zip(base.tyres, leaks, strict=True)
    )
    state = replace(base, time=at, tyres=(fl, fr, rl, rr))
    if isinstance(motion, Drive):
        return _drive(state, motion, spec, base, at)
    if isinstance(motion, Charge):
        return _charge(state, motion, spec, dt)
    drained = base.battery_12v - DRAIN_12V_PCT_PER_DAY * days
    return replace(state, battery_12v=max(FLAT_12V_PCT, drained))


def _charged_12v(level: float, dt: float) -> float:
    # The DC-DC converter tops the 12 V battery up while driving or charging.
    return min(100.0, level + CHARGE_12V_PCT_PER_MIN * dt / 60.0)


def _drive(s: CarState, m: Drive, spec: CarSpec, base: CarState, at: datetime) -> CarState:
    covered = covered_km(base, m, at)
    km = covered - m.covered_km
    position, heading = m.route.at(covered)
    energy = max(0.0, s.energy - km * spec.use_pct_per_km)
    oil = None if s.oil_life is None else max(0.0, s.oil_life - km / OIL_KM_PER_PCT)
    return replace(
        s,
        position=position,
        heading=heading,
        odometer=s.odometer + km,
        energy=energy,
        range_km=range_km(spec, energy),
        oil_life=oil,
        battery_12v=_charged_12v(s.battery_12v, _seconds(base, at)),
    )


def _charge(s: CarState, m: Charge, spec: CarSpec, dt: float) -> CarState:
    energy = min(m.target, s.energy + m.rate_pct_per_hour * dt / 3600.0)
    to_full = (m.target - energy) / m.rate_pct_per_hour * 60.0
    return replace(
        s,
        energy=energy,
        range_km=range_km(spec, energy),
        minutes_to_full=round(to_full, 1),
        battery_12v=_charged_12v(s.battery_12v, dt),
    )


def last_tick(base: CarState, motion: Motion, spec: CarSpec, now: datetime) -> datetime | None:
    """The latest periodic upload in (base.time, now], if the motion makes any."""
    if isinstance(motion, Drive):
        every = motion.upload_every_s
        ticks = math.floor((now - motion.since).total_seconds() / every)
        tick = motion.since + timedelta(seconds=ticks * every)
        return tick if ticks >= 1 and tick > base.time else None
    if isinstance(motion, Charge):
        reached = project(base, motion, spec, now).energy
        step = math.floor(reached / CHARGE_UPLOAD_STEP_PCT) * CHARGE_UPLOAD_STEP_PCT
        if step <= base.energy:
            return None
        tick = base.time + timedelta(hours=(step - base.energy) / motion.rate_pct_per_hour)
        return min(tick, now)  # rounding must never put an upload in the future
    return None
