"""The Poller against the real simulator under pressure: 429 storms, a suspension, an hour of 5xx.

The simulator runs in-process on a manual clock that a discrete-event timer moves from one due
job to the next, so hours of simulated time take a second; every request still goes through the
real provider, token refresh, budget and HTTP stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks._support import CountingGate, SimWorld, over_budget
from bridge.config import BudgetConfig, PollingConfig
from bridge.errors import ProviderUnavailable
from bridge.events import AlertKind
from bridge.polling.budget import Budget
from bridge.polling.scheduler import Poller
from bridge.simulator import Limits
from bridge.store import Store

START = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)  # a Monday morning: the commuter drives at 8
ACCOUNT = "own"


@dataclass
class Run:
    world: SimWorld
    poller: Poller
    gate: CountingGate
    states: list[datetime] = field(default_factory=list)
    availability: list[bool] = field(default_factory=list)

    async def until(self, hours: float) -> None:
        await self.world.timer.run_until(START + timedelta(hours=hours))
        assert not self.world.timer.errors  # the poller kept running: no job blew up
        assert self.world.timer.next_at() is not None  # …and the vehicle is still scheduled

    def reads_between(self, start_h: float, end_h: float) -> int:
        lo, hi = (START + timedelta(hours=h) for h in (start_h, end_h))
        return sum(1 for t in self.states if lo <= t < hi)

    async def account(self) -> dict[str, Any]:
        docs = (await self.world.admin("/sim/accounts"))["accounts"]
        return next(a for a in docs if a["login_hint"] == ACCOUNT)

    def within_budget(self) -> bool:
        calls = self.gate.calls.get(ACCOUNT, [])
        return over_budget(calls, per_day=250, per_hour=40) == 0


async def start_run(
    tmp_path: Path,
    limits: Limits | None = None,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> Run:
    world = SimWorld(seed=3, start=START, state_dir=tmp_path, vehicles=1, limits=limits)
    if wrap is not None:  # between the provider and the simulator
        world.transport = wrap(world.transport)  # type: ignore[assignment]
    vehicle_id = world.sim.vehicles[0].vehicle_id
    world.add_account(ACCOUNT, vehicle_id)
    store = Store.open(tmp_path / "db")
    budget = Budget(store=store, config=BudgetConfig(), alerts=world.alerts, clock=world.now)
    budget.start()
    gate = CountingGate(budget, world.now)
    run = Run(world, None, gate)  # type: ignore[arg-type]
    run.poller = Poller(
        providers={ACCOUNT: world.provider(ACCOUNT, gate)},
        vehicles={"car": (ACCOUNT, vehicle_id)},
        budget=budget,
        config=PollingConfig(),
        on_state=lambda slug, state: run.states.append(world.now()),
        on_availability=lambda slug, online: run.availability.append(online),
        on_budget=lambda slug, doc: None,
        alerts=world.alerts,
        clock=world.now,
        timer=world.timer,
        tz=UTC,
    )
    await run.poller.start()
    return run


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    r = await start_run(tmp_path)
    yield r
    await r.poller.stop()


async def test_a_429_storm_is_ridden_out_within_budget(run: Run):
    """Half of all requests answered 429 for two hours: no crash, within budget, no suspension,
    and fresh reads again once the storm is over."""
    await run.until(1)
    run.world.sim.set_faults("429=0.5")
    await run.until(3)
    run.world.sim.set_faults("")
    await run.until(5)
    account = await run.account()
    assert account["suspended"] is False
    assert run.within_budget()
    assert run.reads_between(3, 5) >= 2
    assert run.availability == [True]


async def test_the_providers_own_daily_limit_is_waited_out(tmp_path: Path):
    """A service that allows only 20 calls a day answers 429 with Retry-After until midnight: the
    poller stops asking until then (so the account is never suspended) and resumes after."""
    r = await start_run(tmp_path, limits=Limits(per_day=20, suspend_after=5))
    try:
        await r.until(30)
        account = await r.account()
        assert account["suspended"] is False
        assert account["throttled"] <= 2
        assert r.reads_between(3, 18) == 0  # the 20 calls were gone by 9 am: wait for midnight
        assert r.reads_between(18, 30) >= 3  # a new simulated day, new calls
    finally:
        await r.poller.stop()


async def test_a_suspension_pauses_the_account_then_polling_recovers(run: Run):
    """A 403 (suspended) stops every call for suspension_pause_s, raises one alert, and polling
    resumes by itself once the pause and the suspension are over."""
    await run.until(1)
    account_id = (await run.account())["account_id"]
    run.world.sim.limiter.meters[account_id].suspended_until = START + timedelta(hours=12)
    await run.until(2)
    calls_at_pause = (await run.account())["calls"]
    pause_h = PollingConfig().suspension_pause_s / 3600
    await run.until(1 + pause_h)
    assert (await run.account())["calls"] == calls_at_pause  # nothing sent during the pause
    kinds = [a.kind for a in run.world.alerts.alerts]
    assert kinds.count(AlertKind.ACCOUNT_SUSPENDED) == 1
    assert run.availability == [True, False]  # stale after 6 h without a good read
    await run.until(4 + pause_h)
    assert run.reads_between(2 + pause_h, 4 + pause_h) >= 1
    assert run.availability == [True, False, True]


async def test_an_hour_of_5xx_is_backed_off_and_recovered_from(run: Run):
    """Every request fails with 5xx for an hour: few retries (breaker), the last state stays
    published, and reads succeed again without a restart. The token endpoint fails too, and the
    20-minute access token runs out meanwhile: that is an authentication outage, during which
    the car is shown unavailable until a read succeeds again."""
    await run.until(1)
    calls_before = len(run.gate.calls[ACCOUNT])
    run.world.sim.set_faults("5xx=1.0")
    await run.until(2)
    during = len(run.gate.calls[ACCOUNT]) - calls_before
    run.world.sim.set_faults("")
    await run.until(4)
    assert during <= 8
    assert run.availability == [True, False, True]
    assert run.reads_between(2, 4) >= 2
    assert run.within_budget()
    assert run.poller.status("car")["failures"] == 0


@pytest.mark.parametrize("trouble", ["not_found", "5xx"])
async def test_a_vehicle_the_account_cannot_read_costs_little_and_holds_back_no_other(
    tmp_path: Path, trouble: str
):
    """A configured vehicle whose reads always fail (the car maker answers "not found" for one
    taken out of the consent or a mistyped id; or 500 for one car alone, its modem broken) is
    looked at ever more rarely, and its failures never leave the account's other car unread:
    before, it was polled first each time the account's breaker reopened, and blocked it again
    (in a day the good car was read once, and went offline)."""
    world = SimWorld(seed=3, start=START, state_dir=tmp_path, vehicles=2)
    car, gone = (v.vehicle_id for v in world.sim.vehicles)
    # "not_found": the consent covers the first car only; "5xx": both, the second one failing.
    world.add_account(ACCOUNT, car if trouble == "not_found" else f"{car},{gone}")
    store = Store.open(tmp_path / "db")
    budget = Budget(store=store, config=BudgetConfig(), alerts=world.alerts, clock=world.now)
    budget.start()
    provider = world.provider(ACCOUNT, CountingGate(budget, world.now))
    asked: list[str] = []
    real_read = provider.read

    async def read(vehicle_id: str) -> Any:
        asked.append(vehicle_id)
        if trouble == "5xx" and vehicle_id == gone:
            raise ProviderUnavailable("GET /api/fordconnect/vehicles/v1/{id}: HTTP 500")
        return await real_read(vehicle_id)

    provider.read = read  # type: ignore[method-assign]
    availability: dict[str, list[bool]] = {"car": [], "gone": []}
    poller = Poller(
        providers={ACCOUNT: provider},
        vehicles={"car": (ACCOUNT, car), "gone": (ACCOUNT, gone)},
        budget=budget,
        config=PollingConfig(),
        on_state=lambda slug, state: None,
        on_availability=lambda slug, online: availability[slug].append(online),
        on_budget=lambda slug, doc: None,
        alerts=world.alerts,
        clock=world.now,
        timer=world.timer,
        tz=UTC,
    )
    await poller.start()
    try:
        await world.timer.run_until(START + timedelta(hours=24))
        assert not world.timer.errors
        # Offline: at once when not found, once its data is stale (6 h) otherwise.
        assert availability == {"car": [True], "gone": [False]}
        assert asked.count(car) >= 48  # as often as a car alone on the account, at least
        # Ever more rarely, up to the sleeping interval (not found) or the breaker's longest
        # wait: a handful a day, never one a quarter hour or every reopening.
        assert asked.count(gone) <= (12 if trouble == "not_found" else 20)
    finally:
        await poller.stop()
        store.close()


@dataclass
class TwoCars:
    world: SimWorld
    poller: Poller
    store: Store
    asked: list[str] = field(default_factory=list)
    availability: dict[str, list[bool]] = field(default_factory=lambda: {"car": [], "other": []})


async def start_two_cars(tmp_path: Path) -> TwoCars:
    """One account whose consent covers two cars, polled through the real simulator."""
    world = SimWorld(seed=3, start=START, state_dir=tmp_path, vehicles=2)
    car, other = (v.vehicle_id for v in world.sim.vehicles)
    world.add_account(ACCOUNT, f"{car},{other}")
    store = Store.open(tmp_path / "db")
    budget = Budget(store=store, config=BudgetConfig(), alerts=world.alerts, clock=world.now)
    budget.start()
    provider = world.provider(ACCOUNT, CountingGate(budget, world.now))
    run = TwoCars(world, None, store)  # type: ignore[arg-type]
    real_read = provider.read

    async def read(vehicle_id: str) -> Any:
        run.asked.append(vehicle_id)
        return await real_read(vehicle_id)

    provider.read = read  # type: ignore[method-assign]
    run.poller = Poller(
        providers={ACCOUNT: provider},
        vehicles={"car": (ACCOUNT, car), "other": (ACCOUNT, other)},
        budget=budget,
        config=PollingConfig(),
        on_state=lambda slug, state: None,
        on_availability=lambda slug, online: run.availability[slug].append(online),
        on_budget=lambda slug, doc: None,
        alerts=world.alerts,
        clock=world.now,
        timer=world.timer,
        tz=UTC,
    )
    await run.poller.start()
    return run


async def test_a_403_on_one_car_backs_off_that_car_and_not_its_account(tmp_path: Path):
    """The car maker refuses one car (403: no longer authorised) while the account and its
    vehicle list are fine: that car goes offline and is asked ever more rarely; the account is
    not paused, no suspension alert is raised, and its other car is read as before. Before, the
    one 403 paused the whole account for a day."""
    run = await start_two_cars(tmp_path)
    car, other = (v.vehicle_id for v in run.world.sim.vehicles)
    try:
        await run.world.timer.run_until(START + timedelta(hours=1))
        run.world.sim.forbid(other)
        await run.world.timer.run_until(START + timedelta(hours=25))
        assert not run.world.timer.errors
        kinds = [a.kind for a in run.world.alerts.alerts]
        assert AlertKind.ACCOUNT_SUSPENDED not in kinds
        assert run.availability == {"car": [True], "other": [True, False]}
        assert run.asked.count(car) >= 48
        assert run.asked.count(other) <= 16
        assert run.poller.status("car")["block_reason"] is None
    finally:
        await run.poller.stop()
        run.store.close()


async def test_a_403_on_every_car_of_the_account_is_a_suspension(tmp_path: Path):
    """A suspended account answers 403 to every car: once each car has met it, the account is
    paused (one alert), and nothing more is sent during the pause."""
    run = await start_two_cars(tmp_path)
    try:
        await run.world.timer.run_until(START + timedelta(hours=1))
        meters = run.world.sim.limiter.meters
        (account_id,) = meters
        meters[account_id].suspended_until = START + timedelta(hours=40)
        await run.world.timer.run_until(START + timedelta(hours=2))
        refused = meters[account_id].refused_suspended
        assert 1 <= refused <= 2  # each car's read met it once at most
        await run.world.timer.run_until(START + timedelta(hours=20))
        assert meters[account_id].refused_suspended == refused  # the account is paused
        kinds = [a.kind for a in run.world.alerts.alerts]
        assert kinds.count(AlertKind.ACCOUNT_SUSPENDED) == 1
        assert run.poller.status("car")["block_reason"] == "suspended"
    finally:
        await run.poller.stop()
        run.store.close()


class TokenOutage(httpx.AsyncBaseTransport):
    """Put `around` the simulator's transport: while `down`, its token endpoint answers 503 (the
    API itself is up)."""

    def __init__(self) -> None:
        self.inner: httpx.AsyncBaseTransport | None = None
        self.down, self.refused = False, 0

    def around(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        self.inner = inner
        return self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.inner is not None
        if self.down and request.url.path.endswith("/oauth/token"):
            self.refused += 1
            return httpx.Response(503, json={"error": "temporarily_unavailable"})
        return await self.inner.handle_async_request(request)


async def test_an_authentication_outage_marks_the_car_unavailable_and_backs_off(tmp_path: Path):
    """Ford's login service is down for three hours (the API is up, but no token can be had):
    the car is marked unavailable as soon as a read fails for want of a token, the refresh is
    retried with back-off (never a tight loop), and the car is back once a token is had. Before,
    it stayed online until its data was six hours old."""
    outage = TokenOutage()
    run = await start_run(tmp_path, wrap=outage.around)
    try:
        await run.until(1)
        outage.down = True
        await run.until(4)
        assert run.availability == [True, False]
        assert outage.refused <= 12  # the breaker's back-off, not a loop
        outage.down = False
        await run.until(7)  # the breaker's longest wait is two hours (± jitter)
        assert run.availability == [True, False, True]
        assert run.within_budget()
    finally:
        await run.poller.stop()
