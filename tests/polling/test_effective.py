"""Effective time from the wall and the steady clock: jumps, tolerance, accounts read late."""

from __future__ import annotations

import sys
import time

import pytest

from bridge.polling.effective import JUMP_TOLERANCE_S, EffectiveClock, steady_now

WALL = 1_750_000_000.0


def test_a_leap_second_is_no_jump_but_small_steps_add_up_to_one():
    """A second set back (a leap second) stays within the tolerance; steps that each do, but
    together do not, are a jump once their sum leaves it, and the whole of it is held back."""
    pace = EffectiveClock()
    assert pace.read("a", wall=WALL, steady=0.0, max_seen=WALL).effective == WALL
    leap = pace.read("a", wall=WALL, steady=1.0, max_seen=WALL)
    assert (leap.effective, leap.held) == (WALL, 0.0)  # never behind what was seen
    step = JUMP_TOLERANCE_S * 0.75
    first = pace.read("a", wall=WALL + 2 + step, steady=2.0, max_seen=WALL)
    assert first.held == 0.0
    second = pace.read("a", wall=WALL + 3 + 2 * step, steady=3.0, max_seen=WALL)
    assert second.held == pytest.approx(2 * step)
    assert second.effective == pytest.approx(WALL + 3)


def test_an_account_first_read_after_a_jump_has_it_held_back_too():
    """The jump belongs to the clock: an account the process reads only afterwards does not
    take it as downtime."""
    pace = EffectiveClock()
    pace.read("a", wall=WALL, steady=0.0, max_seen=WALL)
    assert pace.read("a", wall=WALL + 86_400 + 10, steady=10.0, max_seen=WALL).held == 86_400
    later = pace.read("b", wall=WALL + 86_400 + 20, steady=20.0, max_seen=WALL - 3_600)
    assert later.effective == pytest.approx(WALL + 20)
    assert later.on_wall(WALL + 3_620) == pytest.approx(WALL + 86_400 + 3_620)


def test_a_later_time_seen_elsewhere_is_carried_on_from():
    """Another process stamped a call with the jumped clock: effective time does not stay behind
    it, and goes on from it at the steady pace."""
    pace = EffectiveClock()
    pace.read("a", wall=WALL, steady=0.0, max_seen=WALL)
    pace.read("a", wall=WALL + 86_400, steady=0.0, max_seen=WALL)
    other = WALL + 86_400 + 5
    assert pace.read("a", wall=WALL + 86_405, steady=5.0, max_seen=other).effective == other
    assert pace.read("a", wall=WALL + 86_465, steady=65.0, max_seen=other).effective == other + 60


@pytest.mark.skipif(sys.platform != "linux", reason="CLOCK_BOOTTIME is Linux's")
def test_the_steady_clock_is_the_boot_clock():
    """On Linux the steady clock is CLOCK_BOOTTIME: it counts suspend, as the wall clock does."""
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= steady_now() <= time.clock_gettime(time.CLOCK_BOOTTIME)
