"""Helpers for the polling benchmarks: a simulated world on a manual clock, counting gates, a
fixed-interval poller, ground-truth upload sampling and lag statistics.

Everything runs in one process and one event loop: the simulator is reached in-process through
`httpx.ASGITransport`, and a discrete-event timer jumps the simulator's clock from one due job to
the next, so a simulated week takes seconds while every request still goes through the real
provider, token manager, budget and HTTP stack.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.config import AccountConfig, Settings
from bridge.errors import ProviderError
from bridge.events import CollectingAlerts
from bridge.model import VehicleState
from bridge.polling.timers import ManualTimer
from bridge.providers.base import CallGate, CallKind, Commit, Provider
from bridge.providers.factory import build_account
from bridge.providers.tokens import StoredTokens, TokenStore
from bridge.simulator import Limits, ManualClock, Simulator, create_app

SIM_URL = "http://sim.test"
V1_PATH = "/api/fordconnect/vehicles/v1"
# Uploads whose reason says the car was driving or charging when it uploaded.
ACTIVE_REASONS = frozenset({"driving", "charging", "ignition on", "charging started"})


@dataclass(frozen=True, slots=True)
class Charged:
    at: float
    kind: CallKind


class CountingGate:
    """Wraps a CallGate and records every call it lets through, per account."""

    def __init__(self, inner: CallGate, clock: Callable[[], datetime]) -> None:
        self._inner = inner
        self._clock = clock
        self.calls: dict[str, list[Charged]] = {}

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> Commit | None:
        commit = self._inner.charge(account, kind, record=record)
        self.calls.setdefault(account, []).append(Charged(self._clock().timestamp(), kind))
        return commit


@dataclass
class Publishes:
    """What one poller handed on: (our time, the car's upload time) per successful read."""

    items: list[tuple[float, float]] = field(default_factory=list)

    def record(self, now: datetime, state: VehicleState) -> None:
        if state.updated_at is not None:
            self.items.append((now.timestamp(), state.updated_at.timestamp()))


class SimWorld:
    """A simulator on a manual clock, reachable in-process, with helpers to add accounts."""

    def __init__(
        self,
        *,
        seed: int,
        start: datetime,
        state_dir: Path,
        vehicles: int = 3,
        limits: Limits | None = None,
    ) -> None:
        self.clock = ManualClock(start)
        self.sim = Simulator(
            vehicles=vehicles,
            seed=seed,
            clock=self.clock,
            admin=True,
            auto_consent=True,
            limits=limits,
        )
        self.transport = httpx.ASGITransport(app=create_app(self.sim))
        self.state_dir = state_dir
        self.alerts = CollectingAlerts()
        self.timer = ManualTimer(clock=self.now, advance=self.advance_to)
        self._accounts: dict[str, AccountConfig] = {}

    def now(self) -> datetime:
        return self.clock.now()

    def advance_to(self, at: datetime) -> None:
        self.clock.advance((at - self.clock.now()).total_seconds())

    def add_account(self, name: str, vehicle_id: str) -> None:
        """Consent `vehicle_id` to a new simulator account and store its tokens for `name`."""
        tokens = self.sim.grant(vehicle=vehicle_id, login_hint=name)
        now = self.now().timestamp()
        TokenStore(self.state_dir).save(
            name,
            StoredTokens(
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                expires_at=now + tokens["expires_in"],
                refresh_expires_at=now + tokens["refresh_token_expires_in"],
                obtained_at=now,
            ),
        )
        self._accounts[name] = AccountConfig(
            provider="fordconnect",
            client_id=self.sim.auth.client.client_id,
            client_secret=SecretStr(self.sim.auth.client.client_secret),
            application_id=self.sim.auth.client.application_id,
            api_base_url=f"{SIM_URL}{V1_PATH}",
            token_url=f"{SIM_URL}/oauth/token",
            authorize_url=f"{SIM_URL}/oauth/authorize",
        )

    def provider(self, name: str, gate: CallGate) -> Provider:
        """A real FordConnect provider for account `name`, on simulated time."""
        settings = Settings(state_dir=self.state_dir, accounts=self._accounts)
        return build_account(
            settings,
            name,
            gate=gate,
            alerts=self.alerts,
            transport=self.transport,
            clock=lambda: self.now().timestamp(),
        ).provider

    async def admin(self, path: str) -> dict[str, Any]:
        """GET a `/sim/` ground-truth document."""
        async with httpx.AsyncClient(transport=self.transport, base_url=SIM_URL) as client:
            response = await client.get(path)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    def every(self, key: str, seconds: float, job: Callable[[], Awaitable[None] | None]) -> None:
        """Run `job` every `seconds` of simulated time on the world's timer."""

        async def tick() -> None:
            result = job()
            if result is not None:
                await result
            self.timer.schedule(key, self.now() + timedelta(seconds=seconds), tick)

        self.timer.schedule(key, self.now(), tick)


class FixedPoller:
    """The baseline: read one vehicle every `interval_s`, whatever it is doing."""

    def __init__(
        self, *, world: SimWorld, provider: Provider, vehicle_id: str, interval_s: float
    ) -> None:
        self.world = world
        self.provider = provider
        self.vehicle_id = vehicle_id
        self.interval_s = interval_s
        self.publishes = Publishes()
        self.errors = 0

    def start(self, key: str) -> None:
        self.world.every(key, self.interval_s, self.poll)

    async def poll(self) -> None:
        try:
            state = await self.provider.read(self.vehicle_id)
        except ProviderError:
            self.errors += 1
            return
        self.publishes.record(self.world.now(), state)


class UploadLog:
    """Ground truth: every upload of a simulated car, sampled from the simulator's car model."""

    def __init__(self, world: SimWorld, vehicle_id: str) -> None:
        vehicle = world.sim.vehicle(vehicle_id)
        assert vehicle is not None
        self._car = vehicle.car
        self._world = world
        self.uploads: list[tuple[float, str]] = []

    def sample(self) -> None:
        upload = self._car.last_upload(self._world.now())
        at = upload.time.timestamp()
        if not self.uploads or at > self.uploads[-1][0]:
            self.uploads.append((at, upload.reason))

    def active(self, since: float) -> list[float]:
        return [t for t, reason in self.uploads if t >= since and reason in ACTIVE_REASONS]


@dataclass(frozen=True, slots=True)
class LagStats:
    count: int
    censored: int
    mean: float
    median: float
    p95: float


def lags(uploads: Iterable[float], publishes: Publishes, end: float) -> LagStats:
    """For each upload, the time until a published state was at least that fresh.

    `lastUpdated` has whole seconds, so an upload counts as published once a state with an upload
    time at or after the upload's whole second is handed on. Uploads never covered by the end of
    the run count with the lag they had by then (censored).
    """
    times, freshest = [], []
    best = float("-inf")
    for at, updated in publishes.items:
        best = max(best, updated)
        times.append(at)
        freshest.append(best)
    values, censored = [], 0
    for upload in uploads:
        i = bisect.bisect_left(freshest, float(int(upload)))
        if i < len(times):
            values.append(max(0.0, times[i] - upload))
        else:
            values.append(end - upload)
            censored += 1
    return summarise(values, censored)


def summarise(values: list[float], censored: int = 0) -> LagStats:
    if not values:
        return LagStats(0, 0, float("nan"), float("nan"), float("nan"))
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return LagStats(len(values), censored, statistics.fmean(values), statistics.median(values), p95)


def over_budget(calls: list[Charged], *, per_day: int, per_hour: int) -> int:
    """Calls that were over the limit in some sliding 24 h or 1 h window ending at them."""
    times = sorted(c.at for c in calls)
    over = 0
    for i, t in enumerate(times):
        in_day = i - bisect.bisect_right(times, t - 86_400.0) + 1
        in_hour = i - bisect.bisect_right(times, t - 3_600.0) + 1
        over += in_day > per_day or in_hour > per_hour
    return over


def max_per_day(calls: list[Charged]) -> int:
    """The most calls in any sliding 24 h window."""
    times = sorted(c.at for c in calls)
    return max(
        (i - bisect.bisect_right(times, t - 86_400.0) + 1 for i, t in enumerate(times)), default=0
    )
