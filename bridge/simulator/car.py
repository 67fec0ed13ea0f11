"""A car's day, simulated lazily: discrete events, and closed-form motion between them.

The true state is materialised only at events (departures, arrivals, charging milestones,
commands); in between it is computed from the last event (see `motion`), so the state at an
instant never depends on when or how often anyone asked, and an idle fleet costs no CPU. The car
uploads only on events (ignition, doors and locks, plug and charging, commands) plus about every
minute or kilometre while driving and every 10 % of charge; the API serves that last upload,
never the truth. Pure: time comes in as an argument; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from random import Random

from bridge.simulator.geo import distance_km, street_route
from bridge.simulator.motion import (
    Charge,
    Drive,
    Motion,
    Still,
    covered_km,
    last_tick,
    project,
    range_km,
)
from bridge.simulator.profiles import Trip, plan_day
from bridge.simulator.state import (
    REMOTE_START_LENGTH,
    REMOTE_STARTS_PER_DRIVE,
    CarSpec,
    CarState,
)

DOOR_TO_IGNITION = timedelta(seconds=45)
ARRIVAL_TO_LOCK = timedelta(seconds=60)
ARRIVAL_TO_PLUG = timedelta(seconds=120)
WAKE_COST_12V_PCT = 0.2  # every modem wake-up (status refresh, location, wake) costs the 12 V
LOW_CHARGE_PCT = 20.0  # below this a plugged-in car charges at once, off-peak or not


class Outcome(enum.StrEnum):
    """How the car answered a command it received."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class _Kind(enum.Enum):
    PLAN_DAY = enum.auto()
    DEPART = enum.auto()
    IGNITION_ON = enum.auto()
    ARRIVE = enum.auto()
    LOCK_UP = enum.auto()
    PLUG_IN = enum.auto()
    CHARGE_WINDOW = enum.auto()
    CHARGE_DONE = enum.auto()
    ENGINE_OFF = enum.auto()


@dataclass(frozen=True, slots=True)
class _Event:
    kind: _Kind
    trip: Trip | None = None
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Upload:
    time: datetime
    reason: str


class Car:
    """One simulated car. Call with non-decreasing times; everything is computed on demand."""

    def __init__(self, *, spec: CarSpec, initial: CarState, seed_key: str) -> None:
        self.spec = spec
        self._seed_key = seed_key
        self._base = initial
        self._motion: Motion = Still()
        self._queue: list[tuple[datetime, int, _Event]] = []
        self._seq = 0
        # Stale CHARGE_DONE / ENGINE_OFF events are recognised by an outdated generation.
        self._charge_generation = 0
        self._engine_generation = 0
        self._upload = initial
        self.uploads: deque[Upload] = deque([Upload(initial.time, "initial")], maxlen=256)
        self._push(initial.time, _Event(_Kind.PLAN_DAY))
        if spec.electric:
            self._push(initial.time, _Event(_Kind.CHARGE_WINDOW))

    # -- reading -------------------------------------------------------------------------

    def truth(self, now: datetime) -> CarState:
        """The car's real state at `now` (what the admin endpoints show)."""
        self.advance(now)
        return project(self._base, self._motion, self.spec, now)

    def served(self, now: datetime) -> CarState:
        """The car's last upload as of `now`: what the API serves. Its `time` is the upload time."""
        self.advance(now)
        tick = last_tick(self._base, self._motion, self.spec, now)
        return self._upload if tick is None else project(self._base, self._motion, self.spec, tick)

    def last_upload(self, now: datetime) -> Upload:
        """When and why the car last uploaded, as of `now`."""
        self.advance(now)
        tick = last_tick(self._base, self._motion, self.spec, now)
        if tick is None:
            return self.uploads[-1]
        return Upload(tick, "driving" if isinstance(self._motion, Drive) else "charging")

    def advance(self, now: datetime) -> None:
        """Process every event due by `now`."""
        while self._queue and self._queue[0][0] <= now:
            at, _, event = heapq.heappop(self._queue)
            self._materialise(at)
            self._HANDLERS[event.kind](self, at, event)

    # -- commands (each at `now`; the car first catches up) ---------------------------------

    def can_remote_start(self, now: datetime) -> bool:
        """False once the remote-start allowance is used up: the car must be driven first."""
        return self.truth(now).remote_starts_left > 0

    def lock(self, now: datetime) -> Outcome:
        return self._set_locked(now, locked=True)

    def unlock(self, now: datetime) -> Outcome:
        return self._set_locked(now, locked=False)

    def start_engine(self, now: datetime) -> Outcome:
        s = self._intervene(now)
        if s.ignition or s.remote_starts_left <= 0:
            return Outcome.FAILED
        self._engine_generation += 1
        until = now + REMOTE_START_LENGTH
        self._base = replace(
            s, engine_until=until, last_activity=now, remote_starts_left=s.remote_starts_left - 1
        )
        self._push(until, _Event(_Kind.ENGINE_OFF, generation=self._engine_generation))
        self._record_upload("remote start")
        return Outcome.COMPLETED

    def stop_engine(self, now: datetime) -> Outcome:
        s = self._intervene(now)
        self._base = replace(s, engine_until=None, last_activity=now)
        self._record_upload("remote stop")
        return Outcome.COMPLETED

    def start_charge(self, now: datetime) -> Outcome:
        s = self._intervene(now)
        if not s.plugged or s.ignition or s.energy >= 99.9:
            return Outcome.FAILED
        if not s.charging:
            target = self.spec.charge_target if s.energy < self.spec.charge_target else 100.0
            self._start_charging(now, target)
        return Outcome.COMPLETED

    def stop_charge(self, now: datetime) -> Outcome:
        s = self._intervene(now)
        if not s.plugged:
            return Outcome.FAILED
        if s.charging:
            self._stop_charging(now, "charging stopped", by_owner=True)
        return Outcome.COMPLETED

    def refresh(self, now: datetime) -> Outcome:
        """A status refresh or location request: wakes the modem and forces an upload."""
        self._wake_up(now)
        self._record_upload("status refresh")
        return Outcome.COMPLETED

    def wake(self, now: datetime) -> Outcome:
        self._wake_up(now)
        return Outcome.COMPLETED

    def horn_lights(self, now: datetime) -> Outcome:
        self._base = replace(self._intervene(now), last_activity=now)
        return Outcome.COMPLETED

    def _set_locked(self, now: datetime, *, locked: bool) -> Outcome:
        s = self._intervene(now)
        if not locked and s.ignition:
            return Outcome.FAILED  # no unlocking a moving car from the cloud
        self._base = replace(s, locked=locked, last_activity=now)
        self._record_upload("locked" if locked else "unlocked")
        return Outcome.COMPLETED

    def _wake_up(self, now: datetime) -> None:
        s = self._intervene(now)
        self._base = replace(
            s, last_activity=now, battery_12v=max(30.0, s.battery_12v - WAKE_COST_12V_PCT)
        )

    # -- the event machinery ----------------------------------------------------------------

    def _push(self, at: datetime, event: _Event) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, event))

    def _materialise(self, at: datetime) -> None:
        """Make `at` the new base: keep the latest periodic upload, re-anchor the motion."""
        tick = last_tick(self._base, self._motion, self.spec, at)
        if tick is not None:
            self._upload = project(self._base, self._motion, self.spec, tick)
            reason = "driving" if isinstance(self._motion, Drive) else "charging"
            self.uploads.append(Upload(tick, reason))
        state = project(self._base, self._motion, self.spec, at)
        if isinstance(self._motion, Drive):
            covered = covered_km(self._base, self._motion, at)
            self._motion = replace(self._motion, covered_km=covered)
        self._base = state

    def _intervene(self, now: datetime) -> CarState:
        self.advance(now)
        self._materialise(now)
        return self._base

    def _record_upload(self, reason: str) -> None:
        self._upload = self._base
        self.uploads.append(Upload(self._base.time, reason))

    # -- charging -------------------------------------------------------------------------

    def _start_charging(self, at: datetime, target: float) -> None:
        s = self._base
        rate = self.spec.charge_pct_per_hour
        self._charge_generation += 1
        done = at + timedelta(hours=(target - s.energy) / rate)
        self._base = replace(
            s,
            charging=True,
            charge_stopped=False,
            last_activity=at,
            minutes_to_full=round((target - s.energy) / rate * 60.0, 1),
        )
        self._motion = Charge(rate, target)
        self._push(done, _Event(_Kind.CHARGE_DONE, generation=self._charge_generation))
        self._record_upload("charging started")

    def _stop_charging(self, at: datetime, reason: str, *, by_owner: bool) -> None:
        self._charge_generation += 1
        self._base = replace(
            self._base,
            charging=False,
            charge_stopped=by_owner,
            minutes_to_full=None,
            last_activity=at,
        )
        self._motion = Still()
        self._record_upload(reason)

    def _plug_in(self, at: datetime) -> None:
        s = self._base
        self._base = replace(s, plugged=True, charge_stopped=False, last_activity=at)
        self._record_upload("plugged in")
        # Off-peak runs from the profile's evening hour to 06:00.
        off_peak = at.hour >= self.spec.charge_hour or at.hour < 6
        if s.energy < self.spec.charge_target and (off_peak or s.energy < LOW_CHARGE_PCT):
            self._start_charging(at, self.spec.charge_target)

    # -- planned events ---------------------------------------------------------------------

    def _on_plan_day(self, at: datetime, _: _Event) -> None:
        day = at.date()
        plan = plan_day(self.spec, day, Random(f"{self._seed_key}:{day.isoformat()}"))
        for when, trip in plan.departures:
            self._push(when, _Event(_Kind.DEPART, trip))
        if plan.charge_window is not None:
            self._push(plan.charge_window, _Event(_Kind.CHARGE_WINDOW))
        self._push(at + timedelta(days=1), _Event(_Kind.PLAN_DAY))

    def _on_depart(self, at: datetime, event: _Event) -> None:
        s, trip = self._base, event.trip
        assert trip is not None
        if s.ignition or distance_km(s.position, trip.dest) < 0.05:
            return  # still out on the previous leg, or already there: the driver skips it
        if self._too_low_to_go(trip, s):
            self._stay_home_and_charge(at)
            return
        if s.charging:
            self._stop_charging(at, "unplugged", by_owner=False)
        self._base = replace(
            self._base,
            locked=False,
            plugged=False,
            charge_stopped=False,
            doors_open=frozenset({"FRONT_LEFT"}),
            last_activity=at,
        )
        self._record_upload("door opened")
        self._push(at + DOOR_TO_IGNITION, _Event(_Kind.IGNITION_ON, trip))

    def _too_low_to_go(self, trip: Trip, s: CarState) -> bool:
        # An electric car's owner skips an outing the battery cannot comfortably cover; the way
        # home is always driven.
        if not self.spec.electric or trip.purpose == "home":
            return False
        need = street_route(s.position, trip.dest).length_km * self.spec.use_pct_per_km * 2
        return s.energy < need + 10.0

    def _stay_home_and_charge(self, at: datetime) -> None:
        s = self._base
        if not s.plugged and distance_km(s.position, self.spec.home) < 0.1:
            self._plug_in(at)
        elif s.plugged and not s.charging:
            self._start_charging(at, self.spec.charge_target)

    def _on_ignition_on(self, at: datetime, event: _Event) -> None:
        trip = event.trip
        assert trip is not None
        route = street_route(self._base.position, trip.dest)
        _, heading = route.at(0.0)
        self._base = replace(
            self._base,
            doors_open=frozenset(),
            ignition=True,
            engine_until=None,
            remote_starts_left=REMOTE_STARTS_PER_DRIVE,
            speed=trip.speed_kmh,
            heading=heading,
            window_open=trip.window_open,
            last_activity=at,
        )
        self._motion = Drive(route, trip.speed_kmh, 0.0, at)
        self._record_upload("ignition on")
        arrives = at + timedelta(hours=route.length_km / trip.speed_kmh)
        self._push(arrives, _Event(_Kind.ARRIVE, trip))

    def _on_arrive(self, at: datetime, event: _Event) -> None:
        trip = event.trip
        assert trip is not None
        energy = self._base.energy
        if not self.spec.electric and energy < 15.0:
            energy = 100.0  # the driver filled up on the way
        self._base = replace(
            self._base,
            ignition=False,
            speed=0.0,
            position=trip.dest,
            doors_open=frozenset({"FRONT_LEFT"}),
            window_open=0.0,
            energy=energy,
            range_km=range_km(self.spec, energy),
            last_activity=at,
        )
        self._motion = Still()
        self._record_upload("ignition off")
        self._push(at + ARRIVAL_TO_LOCK, _Event(_Kind.LOCK_UP))
        if trip.plug_on_arrival and self.spec.electric:
            self._push(at + ARRIVAL_TO_PLUG, _Event(_Kind.PLUG_IN))

    def _on_lock_up(self, at: datetime, _: _Event) -> None:
        if self._base.ignition:
            return
        # The car locks itself once the doors are shut at the end of a trip.
        self._base = replace(self._base, doors_open=frozenset(), locked=True, last_activity=at)
        self._record_upload("doors closed, locked")

    def _on_plug_in(self, at: datetime, _: _Event) -> None:
        if not (self._base.ignition or self._base.plugged):
            self._plug_in(at)

    def _on_charge_window(self, at: datetime, _: _Event) -> None:
        s = self._base
        if s.plugged and not s.charging and s.energy < self.spec.charge_target - 0.5:
            self._start_charging(at, self.spec.charge_target)

    def _on_charge_done(self, at: datetime, event: _Event) -> None:
        if event.generation != self._charge_generation or not isinstance(self._motion, Charge):
            return  # charging was stopped or restarted since this was scheduled
        target = self._motion.target
        self._base = replace(self._base, energy=target, range_km=range_km(self.spec, target))
        self._stop_charging(at, "charging complete", by_owner=False)

    def _on_engine_off(self, at: datetime, event: _Event) -> None:
        if event.generation != self._engine_generation or self._base.engine_until is None:
            return
        self._base = replace(self._base, engine_until=None)
        self._record_upload("remote start ended")

    _HANDLERS = {
        _Kind.PLAN_DAY: _on_plan_day,
        _Kind.DEPART: _on_depart,
        _Kind.IGNITION_ON: _on_ignition_on,
        _Kind.ARRIVE: _on_arrive,
        _Kind.LOCK_UP: _on_lock_up,
        _Kind.PLUG_IN: _on_plug_in,
        _Kind.CHARGE_WINDOW: _on_charge_window,
        _Kind.CHARGE_DONE: _on_charge_done,
        _Kind.ENGINE_OFF: _on_engine_off,
    }
