"""When a car says it last uploaded: a stamp no car could have written becomes unknown.

A car with its clock wrong (a v1 `lastUpdated` of `12-31-9999 …`, say) or unset must not become
state: the poller plans around the upload time (the upload rhythm, the stale deadline), and a
year-9999 date overflows that arithmetic, while apps would be shown nonsense. `plausible_upload`
is pure; the clock it is checked against is read by the provider (`epoch_time`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

# No FordConnect car uploaded before this; older stamps are an unset clock (1970, 0001).
EARLIEST_UPLOAD = datetime(2000, 1, 1, tzinfo=UTC)
# Clocks disagree a little (ours, the car's, Ford's); beyond this ahead of ours a stamp is wrong.
FUTURE_SLACK = timedelta(days=1)


def plausible_upload(at: datetime | None, now: datetime | None) -> datetime | None:
    """`at` if a car could have uploaded then, seen at `now`; else None (unknown). Without `now`
    only the lower bound is checked."""
    if at is None or at < EARLIEST_UPLOAD:
        return None
    if now is not None and at > now + FUTURE_SLACK:
        return None
    return at


def epoch_time(clock: Callable[[], float] | None) -> datetime | None:
    """A reading of an epoch-seconds clock (a provider's wall clock) as an aware UTC datetime;
    None without a clock."""
    return None if clock is None else datetime.fromtimestamp(clock(), UTC)
