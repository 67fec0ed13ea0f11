"""How likely a car is to set off (or start charging) at each hour of the local day.

The parked budget is spread by this prior: more polls at hours when the car usually starts
moving, fewer (down to sleeping) when it never does. Without history the prior only knows that
cars rarely leave between midnight and 6 am; with history it is learned per vehicle, for weekdays
and weekends apart (a commuter's 8 am is not its Saturday's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

# Relative rate of trip starts by local hour for cars in general, as travel surveys show it: next
# to nothing before 5 am, a morning peak, a busy midday, an evening peak, a quiet late evening.
# It is the prior before this car's own habits are known, and what learning is shrunk towards.
POPULATION_STARTS = (
    0.15, 0.08, 0.05, 0.05, 0.08, 0.25, 0.7, 1.4, 1.4, 1.0, 1.0, 1.1,
    1.2, 1.1, 1.1, 1.3, 1.5, 1.5, 1.2, 0.9, 0.7, 0.5, 0.4, 0.25,
)  # fmt: skip
# A learned prior starts from the population shape at a few starts a day, worth this many days of
# observation: the first day of history counts as much as the population, later days more.
BASE_STARTS_PER_DAY = 3.0
PSEUDO_DAYS = 1.0
# Weekdays and weekends are each learned from their own days, shrunk towards the other part of the
# week by this many days (so a car with no weekend yet has the prior it had before they were apart).
PARTITION_PSEUDO_DAYS = 1.0
SATURDAY = 5  # datetime.weekday(): Saturday and Sunday are the weekend


def _normalised(rates: Sequence[float]) -> tuple[float, ...]:
    """Weights proportional to √rate, averaging 1. For a fixed number of polls the expected delay
    in noticing a start is smallest when the polling density follows the square root of the
    start rate (the delay is paid per start, and halving a gap costs twice the polls)."""
    raw = [math.sqrt(r) for r in rates]
    mean = sum(raw) / len(raw)
    return tuple(r / mean for r in raw)


@dataclass(frozen=True, slots=True)
class ActivityPrior:
    """A weight per local hour (0-23), averaging 1: >1 means starts are likelier than on an
    average hour, so such hours are polled more and the others less, for the same budget.
    `weights` are for weekdays, and for every day when `weekend` is None."""

    weights: tuple[float, ...]
    tz: tzinfo = UTC
    weekend: tuple[float, ...] | None = None

    @classmethod
    def default(cls, tz: tzinfo = UTC) -> ActivityPrior:
        """Without history: the population's hours."""
        return cls(_normalised(POPULATION_STARTS), tz)

    @classmethod
    def learned(
        cls,
        starts: Sequence[datetime],
        *,
        days: float,
        weekend_days: float | None = None,
        tz: tzinfo = UTC,
    ) -> ActivityPrior:
        """From this car's activity starts seen over `days` days (`weekend_days` of them on a
        Saturday or Sunday; 2 in 7 if not given): weekdays and weekends each from their own days,
        shrunk towards the other part of the week, itself shrunk towards the population.

        Each start counts half in its hour and a quarter in each neighbour (habits wander by half
        an hour).
        """
        if not starts:
            return cls.default(tz)
        span = max(0.0, days)
        weekend_span = min(span, max(0.0, span * 2 / 7 if weekend_days is None else weekend_days))
        total = sum(POPULATION_STARTS)
        base = [BASE_STARTS_PER_DAY * r / total for r in POPULATION_STARTS]
        local = [start.astimezone(tz) for start in starts]
        weekday = _counts([t for t in local if t.weekday() < SATURDAY]), span - weekend_span
        weekend = _counts([t for t in local if t.weekday() >= SATURDAY]), weekend_span
        # Each part of the week, as learned from its own days alone...
        weekday_alone = _rates(*weekday, base, PSEUDO_DAYS)
        weekend_alone = _rates(*weekend, base, PSEUDO_DAYS)
        # ...is what the other part leans on while its own days are few. Without a weekend yet,
        # both are the weekdays shrunk towards the population, as before weekends were apart.
        return cls(
            _normalised(_rates(*weekday, weekend_alone, PARTITION_PSEUDO_DAYS)),
            tz,
            _normalised(_rates(*weekend, weekday_alone, PARTITION_PSEUDO_DAYS)),
        )

    def _hours(self, local: datetime) -> tuple[float, ...]:
        if self.weekend is not None and local.weekday() >= SATURDAY:
            return self.weekend
        return self.weights

    def weight(self, at: datetime) -> float:
        local = at.astimezone(self.tz)
        return self._hours(local)[local.hour]

    def wakes_at(self, at: datetime, threshold: float) -> datetime:
        """The first hour boundary after `at` whose weight reaches `threshold` (or a day later)."""
        local = at.astimezone(self.tz).replace(minute=0, second=0, microsecond=0)
        for step in range(1, 25):
            hour = local + timedelta(hours=step)
            if self._hours(hour)[hour.hour] >= threshold:
                return hour.astimezone(UTC)
        return at + timedelta(days=1)


def _counts(starts: Sequence[datetime]) -> list[float]:
    """Starts per local hour, each smeared half into its hour and a quarter either side."""
    counts = [0.0] * 24
    for start in starts:
        for offset, share in ((-1, 0.25), (0, 0.5), (1, 0.25)):
            counts[(start.hour + offset) % 24] += share
    return counts


def _rates(
    counts: Sequence[float], days: float, towards: Sequence[float], pseudo_days: float
) -> list[float]:
    """Starts per day at each hour: `counts` over `days`, shrunk towards the rates `towards` as
    if those had been seen for `pseudo_days` more days."""
    return [
        (c + pseudo_days * t) / (days + pseudo_days) for c, t in zip(counts, towards, strict=True)
    ]


def weekend_days(since: datetime, now: datetime, tz: tzinfo = UTC) -> float:
    """How many of the days from `since` to `now` fell on a local Saturday or Sunday."""
    seconds = 0.0
    day = since.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < now:
        following = day + timedelta(days=1)  # wall-clock arithmetic: the next local midnight
        if day.weekday() >= SATURDAY:
            seconds += max(0.0, (min(following, now) - max(day, since)).total_seconds())
        day = following
    return seconds / 86_400.0
