"""Fixtures for the simulator tests: a simulator on a manual clock, served in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.simulator import ManualClock, Simulator, Timings, create_app
from tests.simulator.support import MONDAY_0700, FakeMonotonic


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY_0700)


@pytest.fixture
def mono() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def sim(clock: ManualClock, mono: FakeMonotonic) -> Simulator:
    """Three vehicles (one per profile), auto-consent, admin on, 3 s command delay."""
    return Simulator(
        vehicles=3,
        seed=1,
        clock=clock,
        auto_consent=True,
        admin=True,
        monotonic=mono,
        timings=Timings(slow_delay_s=0.05, timeout_delay_s=0.5),
    )


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        yield c
