"""When to poll a vehicle next: a pure function of what we know about it and the budget left.

No clock, no I/O: `observe` folds a read into the vehicle's `PollInput`, `next_poll` turns that,
the budget and the configuration into a `PollPlan`. docs/polling.md explains the reasoning.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bridge.config import PollingConfig
from bridge.model import ChargingState, EngineState, Ignition, VehicleState
from bridge.polling.budget import BudgetUsage, WindowUsage
from bridge.polling.cadence import Cadence, align, learn, overdue
from bridge.polling.prior import ActivityPrior


class Mode(enum.StrEnum):
    """Why the next poll is when it is; published in the budget document."""

    DRIVING = "driving"
    CHARGING = "charging"
    PARKED = "parked"
    SLEEPING = "sleeping"
    CONFIRMING = "confirming"  # a command was sent: one read soon to see its effect
    BACKING_OFF = "backing_off"  # 429 or failures: waiting out Retry-After or the breaker
    SUSPENDED = "suspended"  # 403 from the provider: the account is left alone for a long pause
    EXHAUSTED = "exhausted"  # our own budget is used up until calls leave the window
    REAUTH_REQUIRED = "reauth_required"  # waiting for the owner to log in again


class Activity(enum.StrEnum):
    """What the car was doing at its last upload."""

    UNKNOWN = "unknown"
    DRIVING = "driving"
    CHARGING = "charging"
    PARKED = "parked"


ACTIVE = frozenset({Activity.DRIVING, Activity.CHARGING})
ACTIVE_MODES = frozenset({Mode.DRIVING, Mode.CHARGING})


@dataclass(frozen=True, slots=True)
class Tuning:
    """Policy constants that are not owner-facing configuration."""

    # A command reaches the car and its effect is uploaded within ~10-30 s.
    confirm_delay_s: float = 20.0
    backoff_factor: float = 2.0
    # A car reporting ignition on but uploading nothing new for this many polls has probably
    # lost signal or its ignition-off upload is late: stop spending the driving rate on it.
    driving_quiet_grace: int = 2
    # Parked this long at an hour when the car is rarely used: the car (and owner) is asleep.
    sleep_after_s: float = 3 * 3600
    sleep_weight: float = 0.5
    # While active, keep the current rate affordable for this long out of the day budget…
    active_horizon_s: float = 3 * 3600
    # …and for this long out of the hour budget.
    active_hour_horizon_s: float = 1800.0
    # Hours of active polling (at the hourly budget's pace) kept aside from parked polling.
    active_allowance_hours: float = 1.0
    # Ford's access tokens live 20 minutes; a refresh is a call our budget counts.
    token_lifetime_s: float = 1200.0
    # How long after an expected upload to poll for it (the cloud needs a moment to have it).
    upload_margin_s: float = 5.0
    # A parked car's upload younger than this means someone is at the car: look again soon.
    stir_window_s: float = 600.0


@dataclass(frozen=True, slots=True)
class PollInput:
    """What the poller knows about one vehicle, updated by `observe` after each read."""

    activity: Activity = Activity.UNKNOWN
    upload_at: datetime | None = None  # the car's last upload seen
    active_at: datetime | None = None  # upload time of the last active state seen
    quiet_polls: int = 0  # reads in a row that brought no new upload
    ending: bool = False  # the last read saw activity end: one more read soon, then back off
    waiting_to_charge: bool = False  # plugged in, not charging, not full: a charge will start
    last_poll_at: datetime | None = None
    last_refresh_at: datetime | None = None
    confirm_pending: bool = False
    cadence: Cadence = field(default_factory=Cadence)  # the upload rhythm of this activity


@dataclass(frozen=True, slots=True)
class PollPlan:
    """The next poll: when, why, and whether to ask the car for a status refresh first."""

    at: datetime
    mode: Mode
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class Block:
    """The account may not be called before `until` (Retry-After, breaker, suspension)."""

    until: datetime
    mode: Mode
    reason: str


def activity_of(state: VehicleState) -> Activity:
    """Classify a read: ignition on, moving or remote-started is driving; then charging."""
    status = state.status
    speed = state.location.speed_kmh if state.location else None
    if status.ignition in (Ignition.RUN, Ignition.START) or (speed or 0.0) > 0.0:
        return Activity.DRIVING
    if status.engine is EngineState.RUNNING:
        return Activity.DRIVING  # remote start: the owner is about to set off
    if status.charging is ChargingState.CHARGING:
        return Activity.CHARGING
    if status.ignition is Ignition.UNKNOWN and status.charging is ChargingState.UNKNOWN:
        return Activity.UNKNOWN
    return Activity.PARKED


def waiting_to_charge(state: VehicleState) -> bool:
    """Plugged in but neither charging nor full: a (scheduled) charge is about to start."""
    status = state.status
    return bool(status.plugged_in) and status.charging is ChargingState.PLUGGED


def observe(
    prev: PollInput, state: VehicleState, *, now: datetime, tuning: Tuning = Tuning()
) -> PollInput:
    """Fold a successful read into the vehicle's PollInput."""
    activity = activity_of(state)
    fresh = state.updated_at is not None and (
        prev.upload_at is None or state.updated_at > prev.upload_at
    )
    active_at = state.updated_at if activity in ACTIVE else prev.active_at
    return replace(
        prev,
        activity=activity,
        upload_at=state.updated_at if fresh else prev.upload_at,
        active_at=active_at,
        quiet_polls=0 if fresh else prev.quiet_polls + 1,
        ending=prev.activity in ACTIVE and activity not in ACTIVE,
        waiting_to_charge=waiting_to_charge(state),
        last_poll_at=now,
        confirm_pending=False,
        cadence=_rhythm(prev, activity, state.updated_at if fresh else None, now, tuning),
    )


def _rhythm(
    prev: PollInput, activity: Activity, new_upload: datetime | None, now: datetime, tuning: Tuning
) -> Cadence:
    """Learn the upload tick within one activity; forget it when the activity changes."""
    if activity not in ACTIVE or activity is not prev.activity or prev.upload_at is None:
        return Cadence()
    if new_upload is not None:
        return learn(prev.cadence, (new_upload - prev.upload_at).total_seconds())
    if overdue(prev.cadence, prev.upload_at, now, tuning.upload_margin_s):
        return Cadence(prev.cadence.period_s, 0)  # the promised upload did not come: unlock
    return prev.cadence


def attempted(prev: PollInput, *, now: datetime) -> PollInput:
    """A poll that got no data (failure, refusal) still moves the schedule on."""
    return replace(prev, last_poll_at=now)


def next_poll(
    vehicle: PollInput,
    *,
    now: datetime,
    budget: BudgetUsage,
    config: PollingConfig,
    vehicles: int = 1,
    prior: ActivityPrior | None = None,
    block: Block | None = None,
    tuning: Tuning = Tuning(),
) -> PollPlan:
    """The next poll of one vehicle of an account with `vehicles` vehicles sharing `budget`."""
    if block is not None and block.until > now:
        return PollPlan(block.until, block.mode)
    if vehicle.confirm_pending and min(budget.day.left, budget.hour.left) > 0:
        # Charged to the command share by the caller: neither the read share nor the pace apply.
        return PollPlan(now + timedelta(seconds=tuning.confirm_delay_s), Mode.CONFIRMING)
    if budget.reads_left <= 0:
        # The wait, not the instant: the budget's effective time runs ahead of `now` while the
        # clock is behind it (set back), and the poll must come when the wait is over.
        wait = budget.next_free_at - budget.at
        return PollPlan(max(now + wait, now), Mode.EXHAUSTED)
    if vehicle.last_poll_at is None:
        return PollPlan(now, Mode.PARKED)  # nothing known yet: look now
    prior = prior or ActivityPrior.default()
    stirring = _stirring(vehicle, now, tuning)
    mode, wanted = _wanted(vehicle, now, config, prior, tuning, stirring=stirring)
    n = max(1, vehicles)
    if mode is Mode.PARKED and not stirring:
        wanted = _parked(
            wanted, prior.weight(now), budget=budget, config=config, vehicles=n, tuning=tuning
        )
    floor = poll_interval(_affordable(budget, tuning, active=mode in ACTIVE_MODES), n, tuning)
    at = now + timedelta(seconds=max(wanted, floor))
    if mode is Mode.PARKED and vehicle.waiting_to_charge:
        at = _on_the_hour(now, at, floor, prior, tuning)
    if mode in (Mode.DRIVING, Mode.CHARGING) and vehicle.activity in ACTIVE:
        cap = config.parked_max_interval_s
        at = _on_the_beat(vehicle, now, at, floor=floor, cap_s=cap, tuning=tuning)
    return PollPlan(at, mode, _refresh_due(vehicle, mode, at, config))


def _parked(
    backoff: float,
    weight: float,
    *,
    budget: BudgetUsage,
    config: PollingConfig,
    vehicles: int,
    tuning: Tuning,
) -> float:
    """Spare budget shortens the back-off, down to parked_min divided by the hour's prior weight
    (busy hours more often, quiet ones less): parked polls are what notice a trip starting."""
    spare = poll_interval(_spare(budget, weight, tuning), vehicles, tuning)
    shortest = max(config.driving_interval_s, config.parked_min_interval_s / weight)
    return max(shortest, min(backoff, spare))


def _on_the_hour(
    now: datetime, at: datetime, floor: float, prior: ActivityPrior, tuning: Tuning
) -> datetime:
    """A car plugged in and waiting to charge usually starts at a tariff or schedule boundary,
    which is a full hour: look just after the next one rather than up to a poll interval later."""
    local = now.astimezone(prior.tz).replace(minute=0, second=0, microsecond=0)
    boundary = local + timedelta(hours=1, seconds=tuning.upload_margin_s)
    if now + timedelta(seconds=floor) <= boundary < at:
        return boundary
    return at


def _on_the_beat(
    v: PollInput, now: datetime, at: datetime, *, floor: float, cap_s: float, tuning: Tuning
) -> datetime:
    """With the upload rhythm locked, poll just after the expected upload nearest the plan.

    Nearest, not next: alternating between the ticks either side of the budget's pace keeps the
    average on the pace (a poll slightly early raises the next floor), while every poll lands
    right after an upload. Never sooner than 80 % of the floor, never later than the longest
    parked wait or one tick.
    """
    if not v.cadence.locked or v.upload_at is None or v.cadence.period_s is None:
        return at
    margin = tuning.upload_margin_s
    beat = align(
        v.cadence,
        v.upload_at,
        target=at,
        earliest=max(now + timedelta(seconds=0.8 * floor), now + timedelta(seconds=1)),
        margin_s=margin,
    )
    return min(beat, now + timedelta(seconds=max(cap_s, v.cadence.period_s + margin)))


def _stirring(v: PollInput, now: datetime, tuning: Tuning) -> bool:
    """The last read brought a fresh upload from a parked car (a door, a lock, the plug, the
    ignition going off): someone is at the car, and a trip often follows within a minute."""
    if v.activity in ACTIVE or v.quiet_polls > 0 or v.upload_at is None:
        return False
    return (now - v.upload_at).total_seconds() <= tuning.stir_window_s


def _wanted(
    v: PollInput,
    now: datetime,
    config: PollingConfig,
    prior: ActivityPrior,
    tuning: Tuning,
    *,
    stirring: bool,
) -> tuple[Mode, float]:
    """The interval the car's situation asks for, before the budget has its say."""
    if stirring:
        return Mode.PARKED, config.driving_interval_s
    if v.activity is Activity.DRIVING or (v.ending and v.activity is not Activity.CHARGING):
        return Mode.DRIVING, _backoff(
            config.driving_interval_s,
            v.quiet_polls - tuning.driving_quiet_grace,
            config.parked_min_interval_s,
            tuning,
        )
    if v.activity is Activity.CHARGING:
        return Mode.CHARGING, _backoff(
            config.charging_interval_s, v.quiet_polls - 1, config.parked_max_interval_s, tuning
        )
    parked_for = (now - (v.active_at or v.upload_at or now)).total_seconds()
    quiet_hour = prior.weight(now) < tuning.sleep_weight
    if quiet_hour and parked_for >= tuning.sleep_after_s and not v.waiting_to_charge:
        wake = (prior.wakes_at(now, tuning.sleep_weight) - now).total_seconds()
        return Mode.SLEEPING, max(
            config.parked_min_interval_s, min(config.sleeping_interval_s, wake)
        )
    return Mode.PARKED, _backoff(
        config.parked_min_interval_s, v.quiet_polls, config.parked_max_interval_s, tuning
    )


def _backoff(base: float, steps: int, cap: float, tuning: Tuning) -> float:
    """`base` grown geometrically for each step past zero, never beyond `cap` (nor below base)."""
    grown = base * tuning.backoff_factor ** max(0, steps)
    return max(base, min(grown, cap))


def poll_interval(seconds_per_call: float, vehicles: int, tuning: Tuning) -> float:
    """The interval between one vehicle's polls that spends one call per `seconds_per_call` on
    the account, counting the token refreshes reads bring about: at most one per token lifetime
    for the account, and at most one per read. With V vehicles polled every I seconds and token
    lifetime L the account spends V/I + min(1/L, V/I) calls per second; solve for I."""
    rate, life = 1.0 / seconds_per_call, tuning.token_lifetime_s
    if rate > 2.0 / life:  # polls closer than the token lifetime: one refresh per lifetime
        return vehicles / (rate - 1.0 / life)
    return 2.0 * vehicles / rate  # every read needs its own refresh


def _affordable(budget: BudgetUsage, tuning: Tuning, *, active: bool) -> float:
    """Seconds per call the account can sustain: over the hour window (while active, only for
    the next half hour: most trips are shorter, and a longer one slows down gradually), and for
    the next few hours of the day window (so a long drive never runs the day dry)."""
    horizon = tuning.active_hour_horizon_s if active else budget.hour.seconds
    hourly = pace(budget.hour, keep=0, horizon=horizon)
    daily = pace(budget.day, keep=0, horizon=tuning.active_horizon_s)
    return max(hourly, daily)


def _spare(budget: BudgetUsage, weight: float, tuning: Tuning) -> float:
    """Seconds per call for parked polling: the day's read share, minus an allowance kept for
    driving and charging, spread over the whole window and weighted by the activity prior."""
    keep = min(
        math.ceil(tuning.active_allowance_hours * budget.hour.read_share),
        budget.day.read_share // 2,
    )
    return pace(budget.day, keep=keep, horizon=budget.day.seconds) / weight


def pace(window: WindowUsage, *, keep: int, horizon: float) -> float:
    """Seconds per call at which calls can go on for `horizon` without the window holding more
    than its read capacity minus `keep`, given when the calls already in it leave (pure).

    With c(x) calls still inside after x seconds and one new call every f seconds, the window
    holds c(x) + x/f calls at x; requiring that to stay within the room left gives
    f >= x / room(x) at every release time and at the horizon (room is at least one call).
    """
    capacity = window.reads + window.tokens + window.reads_left - keep
    horizon = min(horizon, window.seconds)
    releases = window.releases
    worst = horizon / max(capacity - sum(r > horizon for r in releases), 1)
    for i, release in enumerate(releases):
        if release <= horizon:
            worst = max(worst, release / max(capacity - (len(releases) - i), 1))
    return worst


def _refresh_due(v: PollInput, mode: Mode, at: datetime, config: PollingConfig) -> bool:
    """A modem-waking refresh only when the owner configured one, and never while active."""
    every = config.scheduled_refresh_interval_s
    if every is None or mode not in (Mode.PARKED, Mode.SLEEPING):
        return False
    return v.last_refresh_at is None or (at - v.last_refresh_at).total_seconds() >= every
