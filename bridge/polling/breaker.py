"""Per-account back-off: Retry-After, a circuit breaker with jittered exponential delays,
the long pause after a suspension, and the full stop that waits for the owner to log in again.

The clock is passed into every method, so the guard is deterministic under test; the jitter comes
from an injected `random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.polling.policy import Block, Mode

# Doubling stops counting here, far past every cap: a count that grows for months (an API down
# that long, a car gone from the consent) would otherwise take 2.0 ** n past the largest float.
MAX_DOUBLINGS = 40


def doubled(first_s: float, count: int, cap_s: float) -> float:
    """`first_s` doubled for each of `count` - 1 earlier attempts, at most `cap_s`."""
    return min(cap_s, first_s * 2.0 ** min(max(0, count - 1), MAX_DOUBLINGS))


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Failure handling constants; the defaults suit an API that is down for minutes to hours."""

    threshold: int = 5  # consecutive failures that open the circuit
    first_delay_s: float = 30.0
    open_delay_s: float = 15 * 60.0  # the least an open circuit waits before probing again
    max_delay_s: float = 2 * 3600.0
    jitter: float = 0.2  # ± fraction, so several vehicles or daemons do not retry in lock-step
    # While a new login is needed: look again after this long, doubling, up to the maximum. A
    # login flagged by the token manager fails locally (no request, no budget); a login the API
    # keeps refusing costs a few calls per look, so the looks thin out quickly.
    reauth_first_s: float = 15 * 60.0
    reauth_max_s: float = 6 * 3600.0


class AccountGuard:
    """Whether an account may be called now, fed with the outcome of every call."""

    def __init__(self, *, config: BreakerConfig | None = None, rng: random.Random) -> None:
        self._config = config or BreakerConfig()
        self._rng = rng
        self.failures = 0
        self.reauth_required = False
        self._reauth_looks = 0
        self._block: Block | None = None
        # The car maker's own Retry-After, kept apart from the block (which the breaker may make
        # longer): commands honour this one only (see `retry_after_until`).
        self._retry_after: datetime | None = None

    @property
    def circuit_open(self) -> bool:
        return self.failures >= self._config.threshold

    def block(self, now: datetime) -> Block | None:
        """The current block, if it still holds at `now`."""
        if self._block is not None and self._block.until > now:
            return self._block
        return None

    def retry_after_until(self, now: datetime) -> datetime | None:
        """Until when the car maker asked for no calls at all (its last 429's Retry-After), if
        that is still ahead of `now`. Commands wait for this; reads wait for `block`."""
        if self._retry_after is not None and self._retry_after > now:
            return self._retry_after
        return None

    def on_success(self) -> None:
        self.failures = 0
        self.reauth_required = False
        self._reauth_looks = 0
        self._block = None
        self._retry_after = None

    def on_failure(self, now: datetime, reason: str) -> Block:
        """5xx, timeout or nonsense: wait longer after each consecutive failure."""
        self.failures += 1
        return self._hold(now + timedelta(seconds=self._delay()), Mode.BACKING_OFF, reason)

    def on_rate_limited(self, now: datetime, retry_after: float) -> Block:
        """429: never call before Retry-After; a storm of them also trips the breaker."""
        self.failures += 1
        until = now + timedelta(seconds=retry_after)
        if self._retry_after is None or until > self._retry_after:
            self._retry_after = until
        wait = max(retry_after, self._delay() if self.circuit_open else 0.0)
        return self._hold(now + timedelta(seconds=wait), Mode.BACKING_OFF, "rate_limited")

    def on_suspended(self, now: datetime, pause_s: float) -> Block:
        """403 on every car's read: the account is suspended; leave it alone for the pause."""
        return self._hold(now + timedelta(seconds=pause_s), Mode.SUSPENDED, "suspended")

    def on_reauth(self, now: datetime) -> Block:
        """Tokens refused: wait for a new login (`reset`), looking again only now and then in case
        it happened in another process (`ownerlink login` beside the daemon)."""
        self.reauth_required = True
        self._reauth_looks += 1
        cfg = self._config
        wait = doubled(cfg.reauth_first_s, self._reauth_looks, cfg.reauth_max_s)
        return self._hold(now + timedelta(seconds=wait), Mode.REAUTH_REQUIRED, "reauth_required")

    def restore(self, block: Block, retry_after: datetime | None) -> None:
        """A block an earlier run left behind (`bridge.polling.holds`): honour it as if just met,
        the car maker's own Retry-After inside it included."""
        self._retry_after = retry_after
        self._hold(block.until, block.mode, block.reason)

    def reset(self) -> None:
        """The owner logged in again (or an operator says go): forget every block."""
        self.on_success()

    def _delay(self) -> float:
        cfg = self._config
        delay = doubled(cfg.first_delay_s, self.failures, cfg.max_delay_s)
        if self.circuit_open:
            delay = min(max(delay, cfg.open_delay_s), cfg.max_delay_s)
        return delay * (1.0 + self._rng.uniform(-cfg.jitter, cfg.jitter))

    def _hold(self, until: datetime, mode: Mode, reason: str) -> Block:
        # A new block never shortens a longer one already in force (e.g. a 429 during a pause).
        if self._block is not None and self._block.until > until:
            return self._block
        self._block = Block(until, mode, reason)
        return self._block
