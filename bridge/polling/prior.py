"""How likely a car is to set off (or start charging) at each hour of the local day.

The parked budget is spread by this prior: more polls at hours when the car usually starts
moving, fewer (down to sleeping) when it never does. Without history the prior only knows that
cars rarely leave between midnight and 6 am; with history it is learned per vehicle.
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
    average hour, so such hours are polled more and the others less, for the same budget."""

    weights: tuple[float, ...]
    tz: tzinfo = UTC

    @classmethod
    def default(cls, tz: tzinfo = UTC) -> ActivityPrior:
        """Without history: the population's hours."""
        return cls(_normalised(POPULATION_STARTS), tz)

    @classmethod
    def learned(cls, starts: Sequence[datetime], *, days: float, tz: tzinfo = UTC) -> ActivityPrior:
        """From this car's activity starts seen over `days` days, shrunk towards the population.

        Each start counts half in its hour and a quarter in each neighbour (habits wander by half
        an hour).
        """
        if not starts:
            return cls.default(tz)
        counts = [0.0] * 24
        for start in starts:
            hour = start.astimezone(tz).hour
            for offset, share in ((-1, 0.25), (0, 0.5), (1, 0.25)):
                counts[(hour + offset) % 24] += share
        total = sum(POPULATION_STARTS)
        base = [BASE_STARTS_PER_DAY * r / total for r in POPULATION_STARTS]
        span = max(0.0, days)
        return cls(
            _normalised(
                [
                    (c + PSEUDO_DAYS * b) / (span + PSEUDO_DAYS)
                    for c, b in zip(counts, base, strict=True)
                ]
            ),
            tz,
        )

    def weight(self, at: datetime) -> float:
        return self.weights[at.astimezone(self.tz).hour]

    def wakes_at(self, at: datetime, threshold: float) -> datetime:
        """The first hour boundary after `at` whose weight reaches `threshold` (or a day later)."""
        local = at.astimezone(self.tz).replace(minute=0, second=0, microsecond=0)
        for step in range(1, 25):
            hour = local + timedelta(hours=step)
            if self.weights[hour.hour] >= threshold:
                return hour.astimezone(UTC)
        return at + timedelta(days=1)
