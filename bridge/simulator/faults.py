"""Account limits and injected faults: what makes the simulator as awkward as the real service.

Rate limits count calls per account in simulated time (fixed windows: the simulated minute and
the simulated UTC day). An account that keeps calling while limited is suspended (403). Faults
are drawn from a seeded Random with one draw per request, so a run is reproducible.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random


class FaultKind(enum.StrEnum):
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    SLOW = "slow"
    DROP = "drop"
    EXPIRE = "expire"
    MALFORMED = "malformed"
    RATE_LIMIT = "429"


# Faults served before the request reaches the service (the car never sees the call); the rest
# happen on the way back, after the service — and the car — did the work.
BEFORE_HANDLER = frozenset({FaultKind.SERVER_ERROR, FaultKind.RATE_LIMIT, FaultKind.EXPIRE})
ALL_FAULTS = frozenset(FaultKind)
TRANSPORT_FAULTS = frozenset(
    {FaultKind.SERVER_ERROR, FaultKind.TIMEOUT, FaultKind.SLOW, FaultKind.DROP, FaultKind.MALFORMED}
)


def parse_fault_spec(spec: str) -> dict[FaultKind, float]:
    """`"5xx=0.1,timeout=0.05"` → rates per kind. Raises ValueError naming the bad part."""
    rates: dict[FaultKind, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        try:
            kind = FaultKind(name.strip())
            rate = float(value) if sep else math.nan
        except ValueError:
            raise ValueError(
                f"bad fault {part!r}: expected KIND=RATE with KIND one of "
                f"{', '.join(k.value for k in FaultKind)}"
            ) from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"bad fault {part!r}: the rate must be between 0 and 1")
        rates[kind] = rate
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError("fault rates add up to more than 1")
    return rates


class FaultInjector:
    """Draws at most one fault per request from the configured rates."""

    def __init__(self, *, rates: dict[FaultKind, float], rng: Random) -> None:
        self.rates = dict(rates)
        self._rng = rng
        self.served: dict[FaultKind, int] = dict.fromkeys(FaultKind, 0)

    def roll(self, allowed: frozenset[FaultKind]) -> FaultKind | None:
        """One draw; a fault this surface cannot suffer counts as none."""
        if not self.rates:
            return None
        u = self._rng.random()
        for kind in FaultKind:  # a fixed order keeps the mapping from draw to fault stable
            u -= self.rates.get(kind, 0.0)
            if u < 0.0:
                if kind not in allowed:
                    return None
                self.served[kind] += 1
                return kind
        return None

    def pick_status(self) -> int:
        return self._rng.choice((500, 502, 503))


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-account limits; defaults follow what owners report before Ford suspends accounts."""

    per_minute: int = 30
    per_day: int = 300
    suspend_after: int = 20  # calls made while limited before the account is suspended
    suspend_for: timedelta = timedelta(days=1)


@dataclass(slots=True)
class Meter:
    """One account's counters (also what the admin endpoint reports)."""

    calls: int = 0
    accepted: int = 0
    throttled: int = 0
    refused_suspended: int = 0
    minute: int = -1
    minute_calls: int = 0
    day: str = ""
    day_calls: int = 0
    calls_while_limited: int = 0
    suspended_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """ALLOW, THROTTLE (429, `retry_after_s` simulated seconds) or SUSPENDED (403)."""

    kind: str
    retry_after_s: float = 0.0


ALLOW = Verdict("allow")


@dataclass(slots=True)
class RateLimiter:
    limits: Limits
    meters: dict[str, Meter] = field(default_factory=dict)

    def check(self, account_id: str, now: datetime) -> Verdict:
        """Count one call by `account_id` at `now` and say whether it may proceed."""
        m = self.meters.setdefault(account_id, Meter())
        m.calls += 1
        if m.suspended_until is not None and now < m.suspended_until:
            m.refused_suspended += 1
            return Verdict("suspended", (m.suspended_until - now).total_seconds())
        self._roll_windows(m, now)
        wait = self._wait(m, now)
        if wait > 0:
            return self._throttle(m, now, wait)
        m.minute_calls += 1
        m.day_calls += 1
        m.accepted += 1
        m.calls_while_limited = 0
        return ALLOW

    def _roll_windows(self, m: Meter, now: datetime) -> None:
        minute = int(now.timestamp() // 60)
        if minute != m.minute:
            m.minute, m.minute_calls = minute, 0
        day = now.date().isoformat()
        if day != m.day:
            m.day, m.day_calls = day, 0

    def _wait(self, m: Meter, now: datetime) -> float:
        """Simulated seconds until the window that refuses this call opens again (0: none)."""
        if m.day_calls >= self.limits.per_day:
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            return (midnight + timedelta(days=1) - now).total_seconds()
        if m.minute_calls >= self.limits.per_minute:
            return 60.0 - now.timestamp() % 60.0
        return 0.0

    def _throttle(self, m: Meter, now: datetime, wait: float) -> Verdict:
        m.throttled += 1
        m.calls_while_limited += 1
        if m.calls_while_limited >= self.limits.suspend_after:
            # Hammering a limited account gets it suspended, as owners found out the hard way.
            m.suspended_until = now + self.limits.suspend_for
            m.calls_while_limited = 0
        return Verdict("throttle", wait)
