"""The per-account guard: exponential back-off with jitter, the breaker, Retry-After, suspension."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from bridge.polling.breaker import AccountGuard, BreakerConfig
from bridge.polling.policy import Mode

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


def guard(seed: int = 1) -> AccountGuard:
    return AccountGuard(rng=random.Random(seed))


def waits(g: AccountGuard, failures: int) -> list[float]:
    return [(g.on_failure(NOW, "503").until - NOW).total_seconds() for _ in range(failures)]


def test_failures_back_off_exponentially_with_jitter():
    """Each consecutive failure roughly doubles the wait, ±20 % jitter."""
    first, second, third = waits(guard(), 3)
    assert 24 <= first <= 36
    assert 48 <= second <= 72
    assert 96 <= third <= 144


def test_the_circuit_opens_after_five_failures_and_waits_long():
    """From the fifth consecutive failure the breaker is open and waits at least 15 minutes."""
    g = guard()
    delays = waits(g, 5)
    assert not AccountGuard(rng=random.Random(1)).circuit_open
    assert g.circuit_open
    assert delays[-1] >= 0.8 * BreakerConfig().open_delay_s


def test_back_off_is_capped():
    """However long the outage, a retry comes at least every two hours (plus jitter)."""
    assert max(waits(guard(), 30)) <= 1.2 * BreakerConfig().max_delay_s


def test_jitter_differs_between_accounts():
    """Two accounts failing together do not retry in lock-step."""
    assert waits(guard(1), 4) != waits(guard(2), 4)


def test_success_closes_the_circuit():
    """A good answer forgets the failures and the block."""
    g = guard()
    waits(g, 6)
    g.on_success()
    assert (g.failures, g.block(NOW), g.circuit_open) == (0, None, False)


def test_retry_after_is_a_floor_and_never_shortens_a_longer_block():
    """A 429 blocks for Retry-After; a later short 429 does not cut a suspension short."""
    g = guard()
    suspended = g.on_suspended(NOW, 86400)
    assert suspended.mode is Mode.SUSPENDED
    assert g.on_rate_limited(NOW, 5).until == suspended.until
    fresh = guard()
    assert fresh.on_rate_limited(NOW, 120).until == NOW + timedelta(seconds=120)


@pytest.mark.parametrize("failures", [5, 8])
def test_a_429_storm_trips_the_breaker(failures: int):
    """Repeated 429s with a tiny Retry-After still end in the breaker's long wait."""
    g = guard()
    for _ in range(failures):
        block = g.on_rate_limited(NOW, 2)
    assert (block.until - NOW).total_seconds() >= 0.8 * BreakerConfig().open_delay_s


def test_reauth_waits_with_rarer_and_rarer_looks_until_reset():
    """ReauthRequired blocks the account; looks for a login done elsewhere thin out to 6 h."""
    g = guard()
    looks = [(g.on_reauth(NOW).until - NOW).total_seconds() for _ in range(8)]
    assert g.reauth_required
    assert looks[:3] == [900, 1800, 3600]
    assert max(looks) == BreakerConfig().reauth_max_s
    g.reset()
    assert (g.reauth_required, g.block(NOW)) == (False, None)


def test_commands_wait_for_the_retry_after_alone_not_the_breakers_longer_wait():
    """`retry_after_until` is the car maker's own Retry-After (the latest of them), even once a
    storm of 429s has opened the breaker for reads; a success forgets it."""
    g = guard()
    for _ in range(5):
        g.on_rate_limited(NOW, 30)
    assert g.block(NOW + timedelta(seconds=31)) is not None  # reads: the breaker's long wait
    assert g.retry_after_until(NOW) == NOW + timedelta(seconds=30)
    assert g.retry_after_until(NOW + timedelta(seconds=30)) is None
    g.on_rate_limited(NOW, 120)
    g.on_rate_limited(NOW, 10)  # a shorter one later never shortens the one in force
    assert g.retry_after_until(NOW) == NOW + timedelta(seconds=120)
    g.on_success()
    assert g.retry_after_until(NOW) is None


def test_months_of_failures_keep_the_longest_wait_and_never_overflow():
    """An API down for months: 2.0 ** failures passed the largest float after 1,024 failures
    in a row (about 85 days at the two-hour cap) and every later poll's planning raised
    OverflowError. The wait stays at the cap, however long the trouble lasts; the same for the
    looks while a new login is needed."""
    g = guard()
    g.failures = 5_000
    wait = (g.on_failure(NOW, "503").until - NOW).total_seconds()
    cfg = BreakerConfig()
    assert (1 - cfg.jitter) * cfg.max_delay_s <= wait <= (1 + cfg.jitter) * cfg.max_delay_s
    g._reauth_looks = 5_000
    assert (g.on_reauth(NOW).until - NOW).total_seconds() == cfg.reauth_max_s
