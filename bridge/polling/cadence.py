"""The car's upload rhythm while it is active, learned from the upload times we happen to see.

While driving the car uploads on a steady tick (about every minute or kilometre), while charging
at steady steps of charge. We only see the uploads our polls land on, so the gaps we see are
multiples of the tick; their approximate greatest common divisor is the tick. Once two gaps agree
the rhythm is "locked" and polls can be placed just after an expected upload, which takes the
phase error (on average half a poll interval) out of the publish lag. Pure and clock-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

# Below this a "tick" is more likely two unrelated events (door opened, ignition on) than a rhythm.
MIN_PERIOD_S = 20.0


@dataclass(frozen=True, slots=True)
class Cadence:
    """The tick between uploads (None: unknown) and how many gaps have agreed with it."""

    period_s: float | None = None
    hits: int = 0

    @property
    def locked(self) -> bool:
        return self.period_s is not None and self.hits >= 1


def tolerance(period_s: float) -> float:
    """How far a gap may stray from a multiple of the period: whole-second timestamps, jitter."""
    return max(3.0, 0.02 * period_s)


def approx_gcd(a: float, b: float, tol: float) -> float:
    """Euclid's algorithm with remainders within `tol` treated as zero."""
    a, b = max(a, b), min(a, b)
    while b > tol:
        r = math.fmod(a, b)
        a, b = b, min(r, b - r)
    return a


def learn(cadence: Cadence, gap_s: float) -> Cadence:
    """Fold in the gap between two consecutive uploads we saw during the same activity."""
    if gap_s < MIN_PERIOD_S:
        return cadence
    period = cadence.period_s
    if period is None:
        return Cadence(gap_s, 0)
    k = round(gap_s / period)
    if k >= 1 and abs(gap_s - k * period) <= tolerance(period):
        return Cadence(period, cadence.hits + 1)
    common = approx_gcd(period, gap_s, tolerance(min(period, gap_s)))
    if common >= MIN_PERIOD_S:
        return Cadence(common, cadence.hits + 1)
    return Cadence(gap_s, 0)  # no common rhythm: start again from this gap


def overdue(cadence: Cadence, upload_at: datetime, now: datetime, margin_s: float) -> bool:
    """A poll at `now` found nothing new although the rhythm promised an upload by then."""
    if not cadence.locked or cadence.period_s is None:
        return False
    expected = upload_at + timedelta(
        seconds=cadence.period_s + margin_s + tolerance(cadence.period_s)
    )
    return now >= expected


def align(
    cadence: Cadence, upload_at: datetime, *, target: datetime, earliest: datetime, margin_s: float
) -> datetime:
    """The expected upload (plus `margin_s`) nearest to `target`, but not before `earliest`."""
    assert cadence.period_s is not None
    period = timedelta(seconds=cadence.period_s)
    margin = timedelta(seconds=margin_s)
    k = max(1, round((target - margin - upload_at) / period))
    at = upload_at + k * period + margin
    while at < earliest:
        at += period
    return at
