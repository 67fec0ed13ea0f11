"""Simulated clocks: speed mapping, jumps, and the manual clock for tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bridge.simulator import ManualClock, SimClock
from tests.simulator.support import MONDAY_0700, FakeMonotonic


def test_sim_clock_runs_at_speed() -> None:
    """One real second is `speed` simulated seconds."""
    mono = FakeMonotonic()
    clock = SimClock(1000.0, MONDAY_0700, monotonic=mono)
    assert clock.now() == MONDAY_0700
    mono.advance(1.5)
    assert clock.now() == MONDAY_0700 + timedelta(seconds=1500)


def test_sim_clock_jumps_forward_only() -> None:
    """jump() moves simulated time on at once and never back."""
    mono = FakeMonotonic()
    clock = SimClock(2.0, MONDAY_0700, monotonic=mono)
    clock.jump(3600)
    assert clock.now() == MONDAY_0700 + timedelta(hours=1)
    with pytest.raises(ValueError, match="backwards"):
        clock.jump(-1)


def test_sim_clock_refuses_nonsense() -> None:
    """A non-positive speed or a naive start time is refused."""
    with pytest.raises(ValueError, match="speed"):
        SimClock(0.0, MONDAY_0700)
    with pytest.raises(ValueError, match="timezone"):
        SimClock(1.0, datetime(2025, 6, 2))


def test_manual_clock_moves_only_when_advanced() -> None:
    """ManualClock.advance(seconds) is the only thing that moves it."""
    clock = ManualClock(MONDAY_0700)
    assert clock.now() == clock.now() == MONDAY_0700
    clock.advance(90)
    assert clock.now() == MONDAY_0700 + timedelta(seconds=90)
    assert clock.speed == 1.0
