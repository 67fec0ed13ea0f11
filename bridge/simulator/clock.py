"""Simulated time: a clock running `speed` times faster than real time, and a manual one."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the simulator needs from a clock: the simulated now and how it maps to real time."""

    @property
    def speed(self) -> float:
        """Simulated seconds per real second."""
        ...

    def now(self) -> datetime:
        """The simulated instant (timezone-aware, UTC)."""
        ...

    def jump(self, seconds: float) -> None:
        """Move simulated time forward by `seconds` at once."""
        ...


def _aware(start: datetime) -> datetime:
    if start.tzinfo is None:
        raise ValueError("the simulated clock needs a timezone-aware start")
    return start.astimezone(UTC)


class SimClock:
    """Maps real monotonic time to simulated time: `start + elapsed_real * speed + jumps`."""

    def __init__(
        self,
        speed: float = 1.0,
        start: datetime | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = speed
        self._start = _aware(start) if start is not None else datetime.now(UTC)
        self._monotonic = monotonic
        self._origin = monotonic()
        self._jumped = 0.0

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        elapsed = (self._monotonic() - self._origin) * self._speed + self._jumped
        return self._start + timedelta(seconds=elapsed)

    def jump(self, seconds: float) -> None:
        # The day model only ever moves forward; a backwards jump would un-drive the odometer.
        if seconds < 0:
            raise ValueError("simulated time never runs backwards")
        self._jumped += seconds


class ManualClock:
    """A clock that moves only when told to: tests step it with `advance(seconds)`."""

    speed = 1.0

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("simulated time never runs backwards")
        self._now += timedelta(seconds=seconds)

    def jump(self, seconds: float) -> None:
        self.advance(seconds)


def real_seconds(clock: Clock, sim_seconds: float) -> float:
    """How long `sim_seconds` of simulated time lasts on a real wall clock."""
    return sim_seconds / clock.speed
