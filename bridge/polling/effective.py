"""Effective time: the wall clock with the jumps seen while running taken out (pure).

The budget stamps and counts calls in effective time, so its windows slide with real elapsed time
only. Two clocks are read together: the wall clock, which calls are stamped and shown with, and a
steady clock no setting moves (`steady_now`: CLOCK_BOOTTIME on Linux, which also counts suspend).
Between two readings they advance alike, unless the wall clock was set (an NTP step, by hand):
the difference of their advances, beyond `JUMP_TOLERANCE_S`, is a jump. Per account, effective
time is the wall clock minus the account's *lag*:

- a forward jump adds to the lag, so effective time goes on at the steady pace: the jump frees
  nothing before that much real time has passed (`Reading.held` says so once, for an alert);
- a backward jump takes from it (the lag goes below zero): effective time goes on from where it
  was, at the steady pace; a jump back that undoes a forward one brings the lag back to zero;
- effective time is never behind the largest time the account has seen (`max_seen`, persisted):
  a reading that would be carries on from there (see the first reading, and other processes).

The lag lives in this process. At its first reading of an account a process cannot tell a jump
from downtime: a clock ahead of the remembered time is taken as elapsed time, one behind carries
on from the remembered time. Another process that charges a call after a jump (a short-lived
`ownerlink command`, say) reads the jumped clock first, stamps its call with it, and effective
time here then carries on from that call.

A clock found behind the remembered time at the first reading has probably not been set yet (a
Raspberry Pi has no real-time clock: it boots with an old time, and NTP steps it forward once the
network is up). For `SETTLE_S` after that first reading, a forward jump that takes the clock past
effective time is believed: it is the clock being set, and the account is treated as though this
process had started only then. Effective time takes the wall clock, which credits the downtime
before the start as any start does, and the calls stamped since the first reading are to be
moved forward by as much (`restamp`, which the budget applies to its rows), so they keep their
real age. Any later forward jump is held back as above.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

# Linux moves the wall clock and CLOCK_BOOTTIME alike (slewing adjusts both), so only a step
# changes their difference; this allowance keeps a leap second and rounding from being one.
JUMP_TOLERANCE_S = 2.0
# How long a clock found behind at start may still be set forward and believed (see above).
SETTLE_S = 86_400.0


def steady_now() -> float:
    """Seconds on a clock no setting moves: CLOCK_BOOTTIME on Linux (it counts suspend, as the
    wall clock does), else the monotonic clock (where a suspend then looks like a forward jump,
    which holds budget back rather than freeing it)."""
    if sys.platform == "linux":
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


@dataclass(slots=True)
class _Pace:
    """One account's effective clock in this process."""

    lag: float  # wall - effective: > 0 while a forward jump is held back, < 0 after a back jump
    since: float  # the account's remembered time at this process's first reading
    started: float  # the steady clock then
    unsettled: bool  # the clock was behind `since` then, and has not been set forward since
    restamp: float = 0.0  # believed clock setting not yet applied to the rows (see above)


@dataclass(frozen=True, slots=True)
class Reading:
    """Effective time at one reading, with the wall clock read with it."""

    effective: float
    wall: float
    # A forward jump seen at this reading and held back for some account (seconds), else 0.
    held: float = 0.0

    def on_wall(self, instant: float) -> float:
        """An effective instant on the wall clock (when it comes, as the clock will say)."""
        return instant + (self.wall - self.effective)


class EffectiveClock:
    """Effective time of every account, from readings of the wall and the steady clock."""

    def __init__(self, *, tolerance: float = JUMP_TOLERANCE_S, settle: float = SETTLE_S) -> None:
        self._tolerance = tolerance
        self._settle = settle
        self._skew: float | None = None  # wall - steady when last taken as the reference
        self._jumped = 0.0  # every jump since the first reading: the lag of an account read later
        self._paces: dict[str, _Pace] = {}

    def read(self, account: str, *, wall: float, steady: float, max_seen: float) -> Reading:
        """Effective time now for `account`, whose largest time seen is `max_seen`."""
        jump = self._jump(wall, steady)
        held = jump if jump and self._apply(jump, steady) else 0.0
        pace = self._paces.get(account) or self._first(account, wall, steady, max_seen)
        pace.unsettled &= steady - pace.started < self._settle
        # Never behind a time the account has seen: from there on at the steady pace.
        pace.lag = min(pace.lag, wall - max_seen)
        pace.restamp = min(pace.restamp, max(pace.lag, 0.0))
        return Reading(max(max_seen, wall - pace.lag), wall, held)

    def settling(self, account: str) -> bool:
        """May a reading of the account still believe the clock set, or has it, and are its
        rows yet to move? (Only then is a reading before a write transaction worth it.)"""
        pace = self._paces.get(account)
        return pace is not None and (pace.unsettled or pace.restamp > 0)

    def restamp_of(self, account: str) -> tuple[float, float] | None:
        """(since, shift): a believed clock setting whose calls from `since` on must move
        forward by `shift` before the account's effective time takes the wall clock."""
        pace = self._paces.get(account)
        if pace is None or pace.restamp <= 0:
            return None
        return pace.since, pace.restamp

    def restamped(self, account: str, shift: float) -> None:
        """The rows have moved forward by `shift`: effective time follows them."""
        pace = self._paces[account]
        pace.lag -= shift
        pace.restamp = 0.0

    def _jump(self, wall: float, steady: float) -> float:
        """How far the wall clock was set since the reference reading (0 within tolerance)."""
        skew = wall - steady
        if self._skew is None:
            self._skew = skew
            return 0.0
        jump = skew - self._skew
        if abs(jump) <= self._tolerance:
            return 0.0  # not taken as the reference: small steps add up until one is a jump
        self._skew = skew
        self._jumped += jump
        return jump

    def _apply(self, jump: float, steady: float) -> bool:
        """Take a jump into every account's lag; True when it holds a forward jump back."""
        held = False
        for pace in self._paces.values():
            before = pace.lag
            pace.lag += jump
            if jump > 0 and pace.unsettled and steady - pace.started < self._settle:
                if pace.lag > 0:  # set past effective time: believed (see the docstring)
                    pace.restamp, pace.unsettled = pace.lag, False
                continue
            pace.restamp = min(pace.restamp, max(pace.lag, 0.0))
            held |= pace.lag > max(before, 0.0)
        return held

    def _first(self, account: str, wall: float, steady: float, max_seen: float) -> _Pace:
        """The first reading of an account in this process: jumps seen meanwhile count, the
        rest cannot be told from downtime."""
        behind = wall - self._jumped < max_seen - self._tolerance
        pace = _Pace(lag=self._jumped, since=max_seen, started=steady, unsettled=behind)
        self._paces[account] = pace
        return pace
