"""The Poller with fakes: scheduling, pressure handling, availability, status, and APScheduler."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import BudgetConfig, PollingConfig
from bridge.errors import Forbidden, ProviderUnavailable, RateLimited, ReauthRequired
from bridge.events import AlertKind, CollectingAlerts
from bridge.polling.budget import Budget
from bridge.polling.history import ActivityHistory
from bridge.polling.holds import AccountHolds
from bridge.polling.policy import Mode
from bridge.polling.prior import ActivityPrior
from bridge.polling.scheduler import Poller, first_poll_offsets
from bridge.polling.timers import ApsTimer, ManualTimer
from bridge.providers.base import CallKind
from bridge.store import Store
from tests.polling.fakes import START, FakeProvider, SimTime, driving, parked

BUDGET_DOC_KEYS = {
    "calls_used_today",
    "calls_left_today",
    "calls_used_hour",
    "calls_left_hour",
    "next_poll",
    "mode",
}


@dataclass
class Harness:
    clock: SimTime
    timer: ManualTimer
    budget: Budget
    provider: FakeProvider
    poller: Poller
    alerts: CollectingAlerts
    states: list[Any] = field(default_factory=list)
    availability: list[bool] = field(default_factory=list)
    docs: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # each vehicle's last doc

    async def run_for(self, seconds: float) -> None:
        await self.timer.run_until(self.clock() + timedelta(seconds=seconds))
        assert not self.timer.errors

    def reads_between(self, start_s: float, end_s: float) -> int:
        lo, hi = START + timedelta(seconds=start_s), START + timedelta(seconds=end_s)
        return sum(1 for t in self.provider.reads if lo <= t < hi)


def build(
    tmp_path: Path,
    *,
    budget: BudgetConfig | None = None,
    config: PollingConfig | None = None,
    store: Store | None = None,
    start: datetime = START,
    vehicles: dict[str, tuple[str, str]] | None = None,
    clock: SimTime | None = None,
    steady: Callable[[], float] | None = None,
) -> Harness:
    clock = clock or SimTime(start)
    store = store or Store.open(tmp_path)
    alerts = CollectingAlerts()
    ledger = Budget(
        store=store, config=budget or BudgetConfig(), alerts=alerts, clock=clock, steady=steady
    )
    ledger.start()
    history = ActivityHistory(store=store)
    history.start()
    holds = AccountHolds(store=store)
    holds.start()
    timer = ManualTimer(clock=clock, advance=clock.advance_to)
    provider = FakeProvider("acct", gate=ledger, clock=clock)
    h = Harness(clock, timer, ledger, provider, None, alerts)  # type: ignore[arg-type]
    h.poller = Poller(
        providers={"acct": provider},
        vehicles=vehicles or {"car": ("acct", "v1")},
        budget=ledger,
        config=config or PollingConfig(),
        on_state=lambda slug, state: h.states.append((clock(), state)),
        on_availability=lambda slug, online: h.availability.append(online),
        on_budget=lambda slug, doc: (h.docs.append(doc), h.latest.__setitem__(slug, doc)),
        alerts=alerts,
        clock=clock,
        timer=timer,
        rng=random.Random(1),
        history=history,
        holds=holds,
    )
    return h


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = build(tmp_path)
    await h.poller.start()
    yield h
    await h.poller.stop()


async def test_first_poll_hands_the_state_on_and_publishes_the_budget(harness: Harness):
    """At start the vehicle is read once; state, availability and the budget document follow."""
    await harness.run_for(1)
    assert len(harness.states) == 1
    assert harness.availability == [True]
    assert harness.docs[-1].keys() >= BUDGET_DOC_KEYS
    assert harness.docs[-1]["calls_used_today"] == 1


async def test_a_driving_car_is_polled_every_couple_of_minutes(harness: Harness):
    """While driving (fresh uploads each read), polls follow the hourly budget's pace."""
    harness.provider.script = lambda now: driving(now - timedelta(seconds=5))
    await harness.run_for(1800)
    assert 12 <= len(harness.provider.reads) <= 20
    assert harness.docs[-1]["mode"] == Mode.DRIVING.value


async def test_a_clock_set_forward_frees_no_read_before_real_time_does(tmp_path: Path):
    """The hour's reads are used up when the clock jumps a day ahead: the car is not read again
    until the first of them is an hour old in real time (before, the jump freed the hour at once),
    the poll waits for it on the jumped clock without spinning on refusals, and one clock_jumped
    alert says why."""
    clock, jumped = SimTime(), [0.0]
    h = build(
        tmp_path,
        budget=BudgetConfig(calls_per_day=250, calls_per_hour=10),
        clock=clock,
        steady=lambda: clock().timestamp() - jumped[0],  # the timer moves real time only
    )
    h.provider.script = lambda now: driving(now - timedelta(seconds=5))
    await h.poller.start()
    await h.run_for(1)
    (first,) = h.provider.reads
    while h.budget.admits("acct", CallKind.READ):  # another part of the account spends the rest
        h.budget.charge("acct", CallKind.READ)
    await h.run_for(60)
    clock.now += timedelta(days=1)
    jumped[0] = 86_400.0
    await h.run_for(3000)
    assert h.provider.reads == [first]
    assert h.latest["car"]["mode"] == Mode.EXHAUSTED.value
    assert datetime.fromisoformat(h.latest["car"]["next_poll"]) == first + timedelta(
        days=1, hours=1
    )
    await h.run_for(1200)
    assert h.provider.reads[1] == first + timedelta(days=1, hours=1)
    assert [a.kind for a in h.alerts.alerts].count(AlertKind.CLOCK_JUMPED) == 1
    await h.poller.stop()


async def test_a_parked_car_is_polled_rarely(harness: Harness):
    """A parked car with nothing new is polled at most every parked_min (divided by the busiest
    hour's prior weight)."""
    await harness.run_for(3 * 3600)
    shortest = PollingConfig().parked_min_interval_s / max(ActivityPrior.default().weights)
    assert len(harness.provider.reads) <= 3 * 3600 / shortest + 1


async def test_retry_after_is_honoured(harness: Harness):
    """After a 429 with Retry-After, nothing is sent to the account before that time."""
    harness.provider.queue.append(RateLimited("429", retry_after=1800))
    await harness.run_for(3600)
    assert harness.reads_between(1, 1800) == 0
    assert harness.reads_between(1800, 3600) >= 1


async def test_a_suspension_pauses_the_account_and_alerts_once(harness: Harness):
    """A 403 stops all calls to the account for suspension_pause_s and raises one alert."""
    pause = PollingConfig().suspension_pause_s
    harness.provider.queue.append(Forbidden("403"))
    await harness.run_for(pause + 3600)
    assert harness.reads_between(1, pause) == 0
    assert [a.kind for a in harness.alerts.alerts] == [AlertKind.ACCOUNT_SUSPENDED]
    assert harness.reads_between(pause, pause + 3600) >= 1


@pytest.mark.parametrize(
    ("refusal", "hold_s"),
    [
        (RateLimited("429", retry_after=3600), 3600),
        (Forbidden("403"), PollingConfig().suspension_pause_s),
    ],
)
async def test_a_retry_after_or_a_suspension_outlives_a_restart(
    tmp_path: Path, refusal: Exception, hold_s: float
):
    """The car maker asked for no calls (429 Retry-After, or a 403 suspension), then the daemon
    restarts (an upgrade, a reboot, a crash): the new run sends nothing before that time either.
    Before, the hold lived in memory only, and a daemon restarted every few seconds by systemd
    called a throttled or suspended account at each start."""
    store = Store.open(tmp_path)
    first = build(tmp_path, store=store)
    first.provider.queue.append(refusal)
    await first.poller.start()
    await first.run_for(60)
    await first.poller.stop()
    assert len(first.provider.reads) == 1
    again = build(tmp_path, store=store, start=first.clock())
    await again.poller.start()
    # Commands wait for the car maker's Retry-After (not for a suspension pause) after it too.
    assert (again.poller.retry_after("acct") is not None) == isinstance(refusal, RateLimited)
    await again.run_for(hold_s + 3600)
    await again.poller.stop()
    assert again.reads_between(60, hold_s) == 0
    assert again.reads_between(hold_s, hold_s + 3600) >= 1


async def test_a_429_on_the_command_path_holds_polling_until_retry_after(harness: Harness):
    """A 429 met by a command (handed to `refused`) blocks the account like a read's 429: the
    confirmation read and every other read wait until Retry-After has passed."""
    await harness.run_for(60)
    harness.poller.refused("acct", RateLimited("429", retry_after=1800))
    harness.poller.request_confirmation("car")  # as the daemon does when the command ends
    assert harness.docs[-1]["mode"] == Mode.BACKING_OFF.value
    await harness.run_for(3600)
    assert harness.reads_between(60, 60 + 1800) == 0
    assert harness.reads_between(60 + 1800, 60 + 1800 + 60) == 1  # then the confirmation read
    assert harness.budget.usage("acct", harness.clock()).hour.commands == 1


async def test_a_403_on_the_command_path_suspends_polling_and_alerts_once(harness: Harness):
    """A 403 met by a command's status poll pauses the account for suspension_pause_s, with one
    suspension alert, just as a 403 on a read does."""
    pause = PollingConfig().suspension_pause_s
    await harness.run_for(60)
    harness.poller.refused("acct", Forbidden("403"))
    harness.poller.refused("acct", Forbidden("403"))
    await harness.run_for(pause)
    assert harness.reads_between(60, 60 + pause) == 0
    assert [a.kind for a in harness.alerts.alerts] == [AlertKind.ACCOUNT_SUSPENDED]


async def test_a_refresh_whose_status_poll_is_rate_limited_is_not_followed_by_a_read(
    tmp_path: Path,
):
    """A scheduled refresh whose status poll meets a 429 (reported, not raised) is not followed
    by the read it came for: nothing goes to the account before Retry-After."""
    h = build(tmp_path, config=PollingConfig(scheduled_refresh_interval_s=3600))
    h.provider.while_executing = lambda: h.poller.refused(
        "acct", RateLimited("429", retry_after=600)
    )
    await h.poller.start()
    try:
        await h.run_for(2400)
    finally:
        await h.poller.stop()
    [refreshed] = h.provider.executed
    after = [t for t in h.provider.reads if t >= refreshed]
    assert after and after[0] >= refreshed + timedelta(seconds=600)


async def test_repeated_failures_back_off_and_then_recover(harness: Harness):
    """5xx for an hour: retries thin out (breaker), the last state stays, and polling recovers."""
    await harness.run_for(1)  # one good read first
    harness.provider.script = lambda now: (
        ProviderUnavailable("503") if now < START + timedelta(hours=1) else parked(START)
    )
    await harness.run_for(2 * 3600)
    failed = harness.reads_between(1, 3600)
    assert 3 <= failed <= 10
    assert harness.availability == [True]  # an hour is not stale: the last state stays published
    assert harness.reads_between(3600, 2 * 3600) >= 1
    assert harness.poller.status("car")["failures"] == 0


async def test_availability_goes_offline_only_when_the_data_is_stale(harness: Harness):
    """Without a good read for stale_after_s the vehicle turns offline, exactly once."""
    await harness.run_for(1)
    harness.provider.script = lambda now: ProviderUnavailable("timeout")
    stale = PollingConfig().stale_after_s
    await harness.run_for(stale - 60)
    assert harness.availability == [True]
    await harness.run_for(3600)
    assert harness.availability == [True, False]


async def test_reauth_stops_polling_with_only_rare_looks(harness: Harness):
    """While the owner must log in again the vehicle is offline and the account is left alone,
    but for a handful of ever rarer looks (a login may happen in another process)."""
    harness.provider.script = lambda now: ReauthRequired("login again")
    await harness.run_for(86400)
    gaps = [
        (b - a).total_seconds()
        for a, b in zip(harness.provider.reads, harness.provider.reads[1:], strict=False)
    ]
    assert len(harness.provider.reads) <= 8
    assert gaps == sorted(gaps)
    assert gaps[0] >= 900
    assert harness.availability == [False]
    assert harness.poller.status("car")["mode"] == Mode.REAUTH_REQUIRED.value


async def test_a_reauth_shows_at_once_on_every_vehicle_of_the_account(tmp_path: Path):
    """One car's read meets the refused login: the account's other car is not read for a while
    yet, but its budget document already says reauth_required (it said "parked")."""
    h = build(tmp_path, vehicles={"car": ("acct", "v1"), "car2": ("acct", "v2")})
    await h.poller.start()
    try:
        await h.run_for(300)
        assert h.latest["car2"]["mode"] != Mode.REAUTH_REQUIRED.value
        h.provider.script = lambda now: ReauthRequired("login again")
        h.poller.request_confirmation("car")  # a read of that car soon
        reads = len(h.provider.reads)
        await h.run_for(60)
        assert len(h.provider.reads) == reads + 1
        assert h.latest["car2"]["mode"] == Mode.REAUTH_REQUIRED.value
    finally:
        await h.poller.stop()


async def test_a_429_on_one_cars_read_shows_on_its_siblings_without_reading_them_sooner(
    tmp_path: Path,
):
    """The account backs off after one car's 429: the other car's document says so at once, and
    its next poll is not brought forward by it."""
    h = build(tmp_path, vehicles={"car": ("acct", "v1"), "car2": ("acct", "v2")})
    await h.poller.start()
    try:
        await h.run_for(300)
        planned = h.latest["car2"]["next_poll"]
        h.provider.queue.append(RateLimited("429", retry_after=60))
        h.poller.request_confirmation("car")
        await h.run_for(30)
        assert h.latest["car2"]["mode"] == Mode.BACKING_OFF.value
        assert h.latest["car2"]["next_poll"] >= planned
    finally:
        await h.poller.stop()


async def test_resume_after_login_polls_at_once(harness: Harness):
    """resume() (the login flow in this process) brings the vehicle back immediately."""
    harness.provider.queue.append(ReauthRequired("login again"))
    await harness.run_for(60)
    harness.poller.resume("acct")
    await harness.run_for(1)
    assert len(harness.provider.reads) == 2
    assert harness.availability == [False, True]


async def test_confirmation_read_comes_soon_and_uses_the_command_share(harness: Harness):
    """After a command, one read within half a minute, charged to the command share."""
    await harness.run_for(60)
    harness.poller.request_confirmation("car")
    await harness.run_for(30)
    assert harness.reads_between(60, 90) == 1
    assert harness.budget.usage("acct", harness.clock()).hour.commands == 1


async def test_the_budget_is_never_exceeded_by_polling(tmp_path: Path):
    """With a tiny hourly budget, a driving car is polled only as often as the budget allows."""
    h = build(tmp_path, budget=BudgetConfig(calls_per_day=20, calls_per_hour=4))
    h.provider.script = lambda now: driving(now - timedelta(seconds=5))
    await h.poller.start()
    await h.run_for(3 * 3600)
    for hour in range(3):
        assert h.reads_between(hour * 3600, (hour + 1) * 3600) <= 4
    assert len(h.provider.reads) <= 16  # the day's read share


async def test_an_unexpected_error_is_logged_and_polling_goes_on(harness: Harness):
    """A bug in a poll is reported like APScheduler's error listener and the job is re-planned."""
    harness.provider.queue.append(ZeroDivisionError())  # type: ignore[arg-type]
    await harness.timer.run_until(harness.clock() + timedelta(hours=2))
    assert len(harness.timer.errors) == 1
    assert len(harness.provider.reads) >= 2


class FillingStore(Store):
    """The real store, whose writes fail as SQLite's do on a full SD card while `full` is set
    (a tmpfs cannot be mounted here)."""

    full = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        with super().transaction() as conn:
            yield conn


async def test_a_full_disk_skips_polls_without_calling_the_car_and_recovers(tmp_path: Path):
    """The budget cannot record a call on a full disk: the call is not made (the count must
    never fall behind what was spent), the poll is skipped quietly (no scheduler error, no
    backoff), and polling resumes once there is room again."""
    store = FillingStore.open(tmp_path)
    h = build(tmp_path, store=store)
    await h.poller.start()  # the disk fills up while the daemon runs
    store.full = True
    try:
        await h.run_for(3600)
        assert h.provider.reads == []
        assert h.states == []
        store.full = False
        await h.run_for(3600)
        assert h.provider.reads and h.states
    finally:
        await h.poller.stop()


class UnreadableStore(Store):
    """The real store, whose plain reads (the budget's usage, which planning asks for) fail while
    `broken` is set, as on a failing SD card; writes in a transaction still work."""

    broken = False

    @contextlib.contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        if self.broken:
            raise sqlite3.OperationalError("disk I/O error")
        with super().locked() as conn:
            yield conn


async def test_a_planning_failure_falls_back_to_a_poll_after_the_parked_maximum(tmp_path: Path):
    """When planning raises, the error is logged and the vehicle is polled again after
    parked_max_interval_s, every time: it always has a next poll, and none comes sooner."""
    store = UnreadableStore.open(tmp_path)
    h = build(tmp_path, store=store)
    await h.poller.start()
    try:
        await h.run_for(1)
        store.broken = True
        await h.run_for(3 * 3600)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(h.provider.reads)]
        assert gaps[1:] == [PollingConfig().parked_max_interval_s] * 2  # the first was planned
        assert h.timer.next_at() is not None
        store.broken = False
        await h.run_for(3600)
        assert h.docs[-1]["mode"] == Mode.PARKED.value  # planned by the policy again
    finally:
        await h.poller.stop()


async def test_a_far_future_upload_time_never_stops_polling(tmp_path: Path):
    """A state stamped in year 9999 (a car with its clock wrong, had it reached the poller)
    makes planning overflow once the upload rhythm locks: the vehicle is still polled, backing
    off as after any other bug, and never left without a next poll."""
    base = datetime(9999, 12, 31, 23, 56, tzinfo=UTC)
    h = build(tmp_path)
    reads = itertools.count(1)
    h.provider.script = lambda now: driving(base + timedelta(seconds=min(60 * next(reads), 239)))
    await h.poller.start()
    try:
        await h.timer.run_until(h.clock() + timedelta(hours=6))
        assert h.timer.next_at() is not None
        assert h.clock() - h.provider.reads[-1] <= timedelta(hours=2.5)  # the breaker's longest
        assert 5 <= len(h.provider.reads) <= 30  # polled on, and not in a loop
    finally:
        await h.poller.stop()


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in Europe/Berlin (TZ), as a daemon started without `tz=` would."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("night", "mode"),
    [
        (datetime(2027, 1, 15, 3, 30, tzinfo=UTC), Mode.SLEEPING),  # 04:30 CET: night
        (datetime(2027, 7, 15, 3, 30, tzinfo=UTC), Mode.PARKED),  # 05:30 CEST: morning
    ],
)
async def test_night_hours_follow_daylight_saving_time(
    tmp_path: Path, berlin: None, night: datetime, mode: Mode
):
    """Without `tz=` the poller's hours are the system zone's with its DST rules, whatever the
    offset when it started: 03:30 UTC is still night in a Berlin winter (a car parked for hours
    sleeps) and already morning in summer (it does not)."""
    h = build(tmp_path, start=night)
    h.provider.script = lambda now: parked(night - timedelta(hours=4))
    await h.poller.start()
    try:
        await h.run_for(1)
        assert h.docs[-1]["mode"] == mode.value
    finally:
        await h.poller.stop()


async def test_status_reports_mode_next_poll_and_budget(harness: Harness):
    """status() is a plain snapshot: mode, next poll, last upload, availability and budget."""
    await harness.run_for(1)
    status = harness.poller.status("car")
    assert status["mode"] == Mode.PARKED.value
    assert status["online"] is True
    assert status["next_poll"] > START.isoformat()
    assert status["budget"]["calls_used_today"] == 1


async def test_activity_starts_are_remembered_for_the_prior(harness: Harness, tmp_path: Path):
    """When a parked car is seen driving, the start is stored for learning the car's habits."""
    await harness.run_for(1)
    harness.provider.script = lambda now: driving(now - timedelta(seconds=5))
    await harness.run_for(3600)
    history = ActivityHistory(store=Store.open(tmp_path))
    assert len(history.starts("car", START - timedelta(days=1))) == 1


# -- the same Poller on APScheduler ------------------------------------------------------------


class FastClock:
    """A clock running `speed` times faster than real time, from START."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin = time.monotonic()

    def __call__(self):
        return START + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)


async def test_apscheduler_runs_the_vehicle_job_with_explicit_defaults(tmp_path: Path):
    """On APScheduler (sped-up clock), polls happen and the job carries the explicit defaults."""
    clock = FastClock(speed=600.0)
    store = Store.open(tmp_path)
    budget = Budget(store=store, config=BudgetConfig(), alerts=CollectingAlerts(), clock=clock)
    budget.start()
    provider = FakeProvider("acct", gate=budget, clock=clock)  # type: ignore[arg-type]
    provider.script = lambda now: driving(now - timedelta(seconds=5))
    timer = ApsTimer(clock=clock, speed=clock.speed)
    three_reads = asyncio.Event()

    def on_state(slug: str, state: object) -> None:
        if len(provider.reads) >= 3:
            three_reads.set()

    poller = Poller(
        providers={"acct": provider},
        vehicles={"car": ("acct", "v1")},
        budget=budget,
        config=PollingConfig(),
        on_state=on_state,
        on_availability=lambda s, o: None,
        on_budget=lambda s, d: None,
        alerts=CollectingAlerts(),
        clock=clock,
        timer=timer,
    )
    await poller.start()
    try:
        job = timer.scheduler.get_job("car")
        assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, 300)
        await asyncio.wait_for(three_reads.wait(), timeout=10)
    finally:
        await poller.stop()
        store.close()


async def test_apscheduler_reports_a_missed_run_so_it_can_be_replanned():
    """A run missed beyond the grace time (a blocked loop) is reported, not silently dropped."""
    missed = asyncio.Event()
    timer = ApsTimer(misfire_grace_s=1)
    timer.start(lambda key: missed.set())

    async def job() -> None:
        raise AssertionError("a missed run must not execute")

    timer.schedule("car", START, job)  # any past instant: due at once
    time.sleep(1.5)  # block the loop past the grace time, as a stalled host would
    await asyncio.wait_for(missed.wait(), timeout=5)
    await timer.stop()


async def test_a_poll_cut_short_by_a_stop_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
):
    """Stopping while a poll waits on the car cancels it: that is the clean stop, not a job that
    raised, and must not put APScheduler's error line and traceback in the journal."""
    timer = ApsTimer()
    timer.start(lambda key: None)
    running, ended = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    timer.schedule("car", START, job)  # any past instant: due at once
    await asyncio.wait_for(running.wait(), timeout=5)
    with caplog.at_level(logging.INFO):
        await timer.stop()
        await asyncio.wait_for(ended.wait(), timeout=5)
        await asyncio.sleep(0)  # the executor's own handling of the job's end
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_first_polls_are_staggered_within_an_account_not_across_accounts():
    """Vehicles of one account start 0.5 s apart; other accounts start meanwhile, 20 ms apart."""
    accounts = ["a", "a", "b", "a", "c", "b"]
    assert first_poll_offsets(accounts) == pytest.approx([0.0, 0.5, 0.04, 1.0, 0.08, 0.5])
    fleet = first_poll_offsets([f"acct{n % 50}" for n in range(500)])
    assert max(fleet) == pytest.approx(9.98)  # 500 vehicles on 50 accounts: 10 s, not 250 s
    assert max(first_poll_offsets(["solo"] * 10)) == pytest.approx(4.5)
