"""The persisted call budget: windows, reserve, clock jumps, restarts and kill -9."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import BudgetConfig
from bridge.errors import BudgetExhausted
from bridge.events import AlertKind, CollectingAlerts
from bridge.polling.budget import DAY_S, HEADROOM, HOUR_S, PRUNE_BATCH, Budget, reserve_of
from bridge.polling.effective import JUMP_TOLERANCE_S, SETTLE_S
from bridge.providers.base import CallKind
from bridge.store import Store

EPOCH = 1_750_000_000.0
ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A settable clock returning aware datetimes."""

    def __init__(self, ts: float = EPOCH) -> None:
        self.ts = ts

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)


def open_budget(
    state_dir: Path,
    config: BudgetConfig,
    clock: FakeClock,
    headroom: int = HEADROOM,
    steady: Callable[[], float] | None = None,
    settle_s: float = SETTLE_S,
) -> tuple[Store, Budget]:
    """A budget on `clock`, which is its own steady clock (every change of it is time passing)
    unless a steady clock is given."""
    store = Store.open(state_dir)
    budget = Budget(
        store=store,
        config=config,
        alerts=CollectingAlerts(),
        clock=clock,
        headroom=headroom,
        steady=steady,
        settle_s=settle_s,
    )
    budget.start()
    return store, budget


@pytest.fixture
def budget_env(tmp_path: Path) -> Iterator[tuple[Budget, FakeClock, CollectingAlerts]]:
    clock = FakeClock()
    alerts = CollectingAlerts()
    store = Store.open(tmp_path)
    config = BudgetConfig(calls_per_day=20, calls_per_hour=10, command_reserve_pct=20)
    budget = Budget(store=store, config=config, alerts=alerts, clock=clock)
    budget.start()
    yield budget, clock, alerts
    store.close()


def charge_until_refused(budget: Budget, kind: CallKind, account: str = "a") -> int:
    count = 0
    while True:
        try:
            budget.charge(account, kind)
        except BudgetExhausted:
            return count
        count += 1


def test_reads_stop_at_the_read_share_of_the_hour(budget_env):
    """Reads stop when the hourly limit minus the command reserve is reached."""
    budget, _, _ = budget_env
    assert charge_until_refused(budget, CallKind.READ) == 10 - reserve_of(10, 20)


def test_commands_may_use_the_reserve_reads_left(budget_env):
    """After reads exhaust their share, commands still get the reserved calls."""
    budget, _, _ = budget_env
    charge_until_refused(budget, CallKind.READ)
    assert charge_until_refused(budget, CallKind.COMMAND) == reserve_of(10, 20)


def test_token_refreshes_count_against_the_budget(budget_env):
    """A token refresh is charged: it reduces what reads may still use."""
    budget, _, _ = budget_env
    budget.charge("a", CallKind.TOKEN)
    assert budget.usage("a").used_hour == 1
    assert charge_until_refused(budget, CallKind.READ) == 10 - reserve_of(10, 20) - 1


def test_refusal_names_when_the_window_frees_a_call(budget_env):
    """BudgetExhausted.retry_at is when the oldest call leaves the window, and it is honoured."""
    budget, clock, _ = budget_env
    budget.charge("a", CallKind.READ)
    clock.ts += 60
    charge_until_refused(budget, CallKind.READ)
    with pytest.raises(BudgetExhausted) as refused:
        budget.charge("a", CallKind.READ)
    assert refused.value.retry_at == pytest.approx(EPOCH + HOUR_S)
    clock.ts = refused.value.retry_at
    budget.charge("a", CallKind.READ)


def test_usage_reports_both_windows_and_next_free(budget_env):
    """usage() reports used/left per window, the reserve left and when a READ is next allowed."""
    budget, clock, _ = budget_env
    charge_until_refused(budget, CallKind.READ)
    usage = budget.usage("a")
    assert (usage.used_hour, usage.left_hour, usage.used_day, usage.left_day) == (8, 2, 8, 12)
    assert usage.reserve_left == 2
    assert usage.reads_left == 0
    assert usage.next_free_at == clock() + timedelta(hours=1)


def test_accounts_have_separate_budgets(budget_env):
    """One account's calls never use another account's budget."""
    budget, _, _ = budget_env
    charge_until_refused(budget, CallKind.READ, "a")
    budget.charge("b", CallKind.READ)
    assert budget.usage("b").used_hour == 1


def test_one_alert_per_exhaustion_episode(budget_env):
    """BUDGET_EXHAUSTED is emitted once per episode; a later episode alerts again."""
    budget, clock, alerts = budget_env
    charge_until_refused(budget, CallKind.READ)
    for _ in range(3):
        with pytest.raises(BudgetExhausted):
            budget.charge("a", CallKind.READ)
    assert [a.kind for a in alerts.alerts] == [AlertKind.BUDGET_EXHAUSTED]
    assert alerts.alerts[0].account == "a"
    clock.ts += HOUR_S
    charge_until_refused(budget, CallKind.READ)
    assert len(alerts.alerts) == 2


def test_backwards_clock_jump_frees_nothing(budget_env):
    """A clock set back by a day does not make old calls look out of the window."""
    budget, clock, _ = budget_env
    charge_until_refused(budget, CallKind.READ)
    clock.ts -= DAY_S
    with pytest.raises(BudgetExhausted):
        budget.charge("a", CallKind.READ)
    assert budget.usage("a").used_hour == 8


def test_after_the_clock_is_set_back_the_windows_still_slide_with_real_time(tmp_path: Path):
    """Set back a day, the clock is behind every call made: the windows then move on at the pace
    of the monotonic clock from the last trusted reading. Nothing is freed at once, an hour of
    real time frees the hour's calls as it always would, and the budget works on meanwhile
    (before, effective time stood still until the clock caught up a day later: once the hour's
    window was full, no poll and no command for a day)."""
    clock, real = FakeClock(), [0.0]
    config = BudgetConfig(calls_per_day=100, calls_per_hour=10, command_reserve_pct=20)
    store = Store.open(tmp_path)
    budget = Budget(
        store=store,
        config=config,
        alerts=CollectingAlerts(),
        clock=clock,
        steady=lambda: real[0],
    )
    budget.start()
    try:
        assert charge_until_refused(budget, CallKind.READ) == 8
        clock.ts -= DAY_S  # set back a day; no real time has passed
        with pytest.raises(BudgetExhausted):
            budget.charge("a", CallKind.READ)
        real[0] += HOUR_S + 1  # an hour of real time, the clock still a day behind
        clock.ts += HOUR_S + 1
        assert charge_until_refused(budget, CallKind.READ) == 8
        assert budget.usage("a").used_day == 16  # the day's window still holds every call
    finally:
        store.close()


# -- the wall clock set forward: held back while running ------------------------------------------

JUMPY = BudgetConfig(calls_per_day=100, calls_per_hour=10, command_reserve_pct=20)


class SteadyClock:
    """CLOCK_BOOTTIME's stand-in: moves only when real time passes, whatever the wall clock does.
    A new one per boot (it starts again from zero)."""

    def __init__(self, s: float = 1_000.0) -> None:
        self.s = s

    def __call__(self) -> float:
        return self.s


def elapse(clock: FakeClock, steady: SteadyClock, seconds: float) -> None:
    """Real time passes: both clocks move together."""
    clock.ts += seconds
    steady.s += seconds


def live_budget(
    state_dir: Path, clock: FakeClock, steady: SteadyClock, alerts: CollectingAlerts, **kw
) -> tuple[Store, Budget]:
    store = Store.open(state_dir)
    budget = Budget(store=store, config=JUMPY, alerts=alerts, clock=clock, steady=steady, **kw)
    budget.start()
    return store, budget


def jumps(alerts: CollectingAlerts) -> list[float]:
    return [a.details["jump_s"] for a in alerts.alerts if a.kind is AlertKind.CLOCK_JUMPED]


def test_a_forward_jump_while_running_frees_nothing_early(tmp_path: Path):
    """The clock set a day ahead (a bad NTP step, a typo) frees no call of the full hour: the
    refusal, usage and the retry instant all say an hour of real time, on the jumped clock,
    and one clock_jumped alert says why (before, the jump freed a whole second day)."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    clock.ts += DAY_S
    with pytest.raises(BudgetExhausted) as refused:
        budget.charge("a", CallKind.READ)
    assert refused.value.retry_at == pytest.approx(clock.ts + HOUR_S)
    usage = budget.usage("a", clock())
    assert (usage.reads_left, usage.used_hour, usage.used_day) == (0, 8, 8)
    assert (usage.next_free_at - usage.at).total_seconds() == pytest.approx(HOUR_S)
    elapse(clock, steady, HOUR_S / 2)
    assert not budget.admits("a", CallKind.READ)
    assert jumps(alerts) == [DAY_S]  # once per jump, however often the budget is asked
    # The page's chart shows them half an hour old on the jumped clock, not a day and more.
    assert len(budget.call_times("a", clock() - timedelta(hours=1), clock())) == 8
    clock.ts += 2 * DAY_S
    assert not budget.admits("a", CallKind.READ)
    assert jumps(alerts) == [DAY_S, 2 * DAY_S]
    store.close()


def test_a_step_of_seconds_is_held_back_without_an_alert(tmp_path: Path):
    """An NTP step of ten seconds frees nothing either, but raises no alert (it is logged)."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    elapse(clock, steady, HOUR_S - 5)
    clock.ts += 10
    assert not budget.admits("a", CallKind.READ)
    elapse(clock, steady, 6)
    assert budget.admits("a", CallKind.READ)
    assert jumps(alerts) == []
    store.close()


def test_after_a_forward_jump_calls_come_free_with_real_elapsed_time(tmp_path: Path):
    """Held back, the jump still lets the windows slide with real time: an hour later the hour's
    reads are free again, and the day still holds every call made."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    clock.ts += DAY_S
    elapse(clock, steady, HOUR_S - 1)
    assert not budget.admits("a", CallKind.READ)
    elapse(clock, steady, 2)
    assert charge_until_refused(budget, CallKind.READ) == 8
    assert budget.usage("a").used_day == 16
    store.close()


def test_a_jump_undone_frees_nothing_and_a_clock_set_back_raises_no_alert(tmp_path: Path):
    """NTP putting back a clock set a day ahead, or forward one set a day back: effective time
    went on at the real pace throughout, and only the forward jump away from it alerts."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    for jump in (DAY_S, -DAY_S, -DAY_S, DAY_S):
        clock.ts += jump
        elapse(clock, steady, 60)
        assert not budget.admits("a", CallKind.READ)
    assert jumps(alerts) == [DAY_S]
    elapse(clock, steady, HOUR_S - 4 * 60 + 1)
    assert budget.admits("a", CallKind.READ)
    store.close()


def test_a_restart_after_a_forward_jump_takes_it_as_downtime(tmp_path: Path):
    """What a new process sees is a clock a day past the last call, as after a day stopped: it
    cannot tell the jump held back before from downtime, and the calls are free (documented)."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    clock.ts += DAY_S
    assert not budget.admits("a", CallKind.READ)
    store.close()
    elapse(clock, steady, 5)
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    assert budget.usage("a").used_day == 8
    assert jumps(alerts) == [DAY_S]
    store.close()


def test_a_clock_behind_at_start_and_then_set_counts_real_elapsed_time(tmp_path: Path):
    """A Raspberry Pi without a real-time clock: stopped two hours, it boots with an old time,
    carries on from the remembered time (the downtime is not known yet, so the hour stays full),
    a first step that still leaves it behind changes nothing, and the NTP step is believed: the
    downtime is credited as at any start, while the command made before the step keeps its real
    age. No alert; a jump after that is held back as usual."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert charge_until_refused(budget, CallKind.READ) == 8
    store.close()
    true_now = clock.ts + 2 * HOUR_S  # two hours off
    clock, steady = FakeClock(EPOCH - 300 * DAY_S), SteadyClock(8.0)
    store, budget = live_budget(tmp_path, clock, steady, alerts)
    assert not budget.admits("a", CallKind.READ)
    budget.charge("a", CallKind.COMMAND)  # from the reserve, at the remembered time
    clock.ts = EPOCH - DAY_S  # a saved clock restored: still behind
    assert not budget.admits("a", CallKind.READ)
    elapse(clock, steady, 60)
    true_now += 60
    clock.ts = true_now  # NTP
    usage = budget.usage("a", clock())
    assert (usage.used_hour, usage.hour.commands, usage.used_day) == (1, 1, 9)
    assert budget.call_times("a", clock() - timedelta(minutes=2), clock())[0].timestamp() == (
        pytest.approx(true_now - 60)
    )
    assert charge_until_refused(budget, CallKind.READ) == 8
    assert jumps(alerts) == []
    clock.ts += DAY_S
    assert not budget.admits("a", CallKind.READ)
    assert jumps(alerts) == [DAY_S]
    store.close()


def test_a_clock_behind_at_start_is_believed_only_for_a_while(tmp_path: Path):
    """Set forward after `settle_s` of running behind, the clock jumps like any other: held back,
    with an alert (a clock a little behind at start must not leave every later jump believed)."""
    clock, steady, alerts = FakeClock(), SteadyClock(), CollectingAlerts()
    store, budget = live_budget(tmp_path, clock, steady, alerts, settle_s=HOUR_S)
    assert charge_until_refused(budget, CallKind.READ) == 8
    store.close()
    clock.ts -= DAY_S
    store, budget = live_budget(tmp_path, clock, steady, alerts, settle_s=HOUR_S)
    assert not budget.admits("a", CallKind.READ)
    elapse(clock, steady, HOUR_S / 2)
    assert charge_until_refused(budget, CallKind.COMMAND) == 2
    elapse(clock, steady, HOUR_S / 2 + 1)
    clock.ts += 2 * DAY_S
    usage = budget.usage("a")
    assert (usage.used_hour, usage.used_day) == (2, 10)
    assert jumps(alerts) == [2 * DAY_S]  # the step as the clocks measured it
    store.close()


def test_confirmation_reads_are_charged_to_the_command_share(budget_env):
    """Inside reads_as_commands(), a READ is recorded as a COMMAND and may use the reserve."""
    budget, _, _ = budget_env
    charge_until_refused(budget, CallKind.READ)
    with budget.reads_as_commands():
        budget.charge("a", CallKind.READ)
    assert budget.usage("a").hour.commands == 1
    with pytest.raises(BudgetExhausted):
        budget.charge("a", CallKind.READ)


def test_two_connections_share_one_budget(tmp_path: Path):
    """The daemon and a CLI command each hold a connection: calls either one charges count for
    both, so together they never exceed a window (each one's in-memory mirror is refreshed)."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=20, calls_per_hour=10, command_reserve_pct=20)
    store_a, daemon = open_budget(tmp_path, config, clock)
    store_b, cli = open_budget(tmp_path, config, clock)
    admitted = 0
    for turn in range(20):
        try:
            (daemon if turn % 2 else cli).charge("a", CallKind.READ)
            admitted += 1
        except BudgetExhausted:
            pass
    assert admitted == 8  # the hour's read share, not 8 each
    assert not daemon.admits("a", CallKind.READ)
    assert daemon.usage("a").used_hour == cli.usage("a").used_hour == 8
    store_a.close()
    store_b.close()


def test_admits_may_be_stale_but_charge_never_is(tmp_path: Path):
    """`admits` reads the in-memory mirror without SQLite, so a call another process charged
    since can make it say yes too readily; the charge itself re-reads and refuses."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=20, calls_per_hour=4, command_reserve_pct=0)
    store_a, daemon = open_budget(tmp_path, config, clock)
    store_b, cli = open_budget(tmp_path, config, clock)
    assert daemon.admits("a")  # loads the daemon's mirror: nothing charged yet
    for _ in range(4):
        cli.charge("a", CallKind.COMMAND)
    assert daemon.admits("a")  # stale: the CLI's four calls are not in the daemon's mirror
    with pytest.raises(BudgetExhausted):
        daemon.charge("a", CallKind.COMMAND)
    assert not daemon.admits("a")  # the refused charge brought the mirror up to date
    assert daemon.usage("a").used_hour == 4
    store_a.close()
    store_b.close()


def call_rows(store: Store) -> list[tuple[str, str, int | None]]:
    rows = store.query("SELECT account, kind, ref FROM budget_calls ORDER BY id")
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def test_a_command_on_its_record_is_counted_at_once_and_written_after(tmp_path: Path):
    """With the mirror loaded and room to spare, a command's request is taken in memory: the
    budget counts it at once, and the commit the caller runs once the request is done writes its
    row, naming the audit record. Counted once, before and after, here and in other processes."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=100, calls_per_hour=50)
    store, budget = open_budget(tmp_path, config, clock)
    budget.charge("a", CallKind.READ)  # the mirror is loaded, as the daemon's polling has it
    commit = budget.charge("a", CallKind.COMMAND, record=7)
    assert commit is not None
    assert budget.usage("a").used_hour == 2
    assert call_rows(store) == [("a", "read", None)]
    commit()
    assert call_rows(store) == [("a", "read", None), ("a", "command", 7)]
    assert budget.usage("a").used_hour == 2
    other_store, other = open_budget(tmp_path, config, clock)
    assert other.usage("a").used_hour == 2
    other_store.close()
    store.close()


def test_near_the_limit_a_command_on_its_record_is_charged_first(tmp_path: Path):
    """Within the headroom of a window's limit (or before the mirror is loaded) the command pays
    for its transaction before it is sent, as every other call does; the row names its record."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=100, calls_per_hour=HEADROOM + 2, command_reserve_pct=0)
    store, budget = open_budget(tmp_path, config, clock)
    assert budget.charge("a", CallKind.COMMAND, record=1) is None  # no mirror yet
    assert call_rows(store) == [("a", "command", 1)]
    budget.charge("a", CallKind.READ)
    assert budget.charge("a", CallKind.COMMAND, record=2) is None  # HEADROOM calls left
    assert call_rows(store)[-1] == ("a", "command", 2)
    for _ in range(HEADROOM - 1):
        budget.charge("a", CallKind.COMMAND, record=3)
    with pytest.raises(BudgetExhausted):
        budget.charge("a", CallKind.COMMAND, record=4)
    assert budget.usage("a").used_hour == HEADROOM + 2
    store.close()


def test_a_command_on_its_record_is_not_taken_on_a_mirror_other_processes_outdated(
    tmp_path: Path,
):
    """`ownerlink command`s beside the daemon spend the budget to its limit after the daemon's
    last transaction: the daemon's mirror still shows room, but a command on its record must
    not be taken on it (that call went to the car over the limit); it is charged in a
    transaction, which sees the other process's calls and refuses."""
    clock = FakeClock()
    limit = 2 * HEADROOM
    config = BudgetConfig(calls_per_day=100, calls_per_hour=limit, command_reserve_pct=0)
    store_a, daemon = open_budget(tmp_path, config, clock)
    store_b, cli = open_budget(tmp_path, config, clock)
    daemon.charge("a", CallKind.READ)  # the daemon's mirror is loaded, one call used
    for _ in range(limit - 1):
        cli.charge("a", CallKind.COMMAND)
    with pytest.raises(BudgetExhausted):
        daemon.charge("a", CallKind.COMMAND, record=1)
    rows = store_a.query("SELECT COUNT(*) FROM budget_calls WHERE account = 'a'")[0][0]
    assert rows == limit
    assert daemon.usage("a").used_hour == limit
    store_a.close()
    store_b.close()


def test_a_call_another_process_makes_before_the_commit_is_not_lost(tmp_path: Path):
    """The commit finds the CLI's call in between: the mirror is reloaded, each counted once."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=100, calls_per_hour=50)
    store_a, daemon = open_budget(tmp_path, config, clock)
    store_b, cli = open_budget(tmp_path, config, clock)
    daemon.charge("a", CallKind.READ)
    commit = daemon.charge("a", CallKind.COMMAND, record=1)
    assert commit is not None
    cli.charge("a", CallKind.READ)
    commit()
    assert daemon.usage("a").used_hour == cli.usage("a").used_hour == 3
    assert daemon.usage("a").hour.commands == 1
    store_a.close()
    store_b.close()


def test_a_command_in_flight_survives_a_reload_and_the_limit_holds(tmp_path: Path):
    """Another process commits while a command taken on its record is in flight (its row not yet
    written): the reload of the daemon's mirror keeps counting it, so later charges stop at the
    hour's limit, and once its row is written it is counted once, here and elsewhere."""
    clock = FakeClock()
    limit = HEADROOM + 4
    config = BudgetConfig(calls_per_day=100, calls_per_hour=limit, command_reserve_pct=0)
    store_a, daemon = open_budget(tmp_path, config, clock)
    store_b, cli = open_budget(tmp_path, config, clock)
    daemon.charge("a", CallKind.READ)  # the daemon's mirror is loaded
    commit = daemon.charge("a", CallKind.COMMAND, record=1)  # the command's POST is in flight
    assert commit is not None
    cli.charge("a", CallKind.READ)  # `ownerlink status` beside the daemon
    admitted = charge_until_refused(daemon, CallKind.COMMAND)  # status polls, meanwhile
    assert admitted == limit - 3
    commit()  # the POST is done: its row is written
    rows = store_a.query("SELECT COUNT(*) FROM budget_calls WHERE account = 'a'")[0][0]
    assert rows == limit
    with pytest.raises(BudgetExhausted):
        cli.charge("a", CallKind.READ)  # a write by the CLI: the daemon's mirror reloads again
    assert daemon.usage("a").used_hour == cli.usage("a").used_hour == limit
    store_a.close()
    store_b.close()


def test_a_command_whose_row_cannot_be_written_is_still_counted(tmp_path: Path):
    """If writing a taken command's row fails, the call (which went out) stays counted in this
    process, through every later reload of the mirror."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=100, calls_per_hour=50)
    store = FailingWritesStore.open(tmp_path)
    daemon = Budget(store=store, config=config, alerts=CollectingAlerts(), clock=clock)
    daemon.start()
    store_b, cli = open_budget(tmp_path, config, clock)
    daemon.charge("a", CallKind.READ)
    commit = daemon.charge("a", CallKind.COMMAND, record=1)
    assert commit is not None
    store.failing = True
    commit()  # logged, not raised: the request is done either way
    store.failing = False
    cli.charge("a", CallKind.READ)
    assert daemon.usage("a").used_hour == 3
    assert cli.usage("a").used_hour == 2  # the row never reached SQLite
    store.close()
    store_b.close()


class FailingWritesStore(Store):
    """The real store, whose write transactions fail (as on a full disk) while `failing` is set."""

    failing = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        with super().transaction() as conn:
            yield conn


def test_a_command_a_crash_interrupted_is_charged_once(tmp_path: Path):
    """At start, a decision without an outcome is charged unless a row names its record: a
    request sent before its commit ran is counted, and one that was written down is not again."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=100, calls_per_hour=50)
    store, budget = open_budget(tmp_path, config, clock)
    budget.charge("a", CallKind.READ)
    commit = budget.charge("a", CallKind.COMMAND, record=6)
    assert commit is not None
    commit()
    at = datetime.fromtimestamp(EPOCH - 60, UTC)
    assert not budget.charge_interrupted("a", at, 6)  # its row was written before the crash
    assert budget.charge_interrupted("a", at, 5)  # sent, never written down
    assert not budget.charge_interrupted("a", at, 5)
    usage = budget.usage("a")
    assert (usage.used_hour, usage.hour.commands) == (3, 2)
    assert ("a", "command", 5) in call_rows(store)
    store.close()


def test_old_calls_are_pruned_from_the_database(tmp_path: Path):
    """Rows that left the day window are deleted in batches; the counts never notice."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=10_000, calls_per_hour=10_000)
    store, budget = open_budget(tmp_path, config, clock)
    for _ in range(PRUNE_BATCH + 10):
        budget.charge("a", CallKind.READ)
        clock.ts += 60
    clock.ts += DAY_S
    for _ in range(PRUNE_BATCH + 1):
        budget.charge("a", CallKind.READ)
    (rows,) = store.query("SELECT count(*) FROM budget_calls")
    assert rows[0] == PRUNE_BATCH + 1
    assert budget.usage("a").used_day == PRUNE_BATCH + 1
    store.close()


def test_restart_keeps_the_count(tmp_path: Path):
    """Calls charged before closing the store are still counted after reopening it."""
    clock = FakeClock()
    config = BudgetConfig(calls_per_day=20, calls_per_hour=10)
    store, budget = open_budget(tmp_path, config, clock)
    for _ in range(5):
        budget.charge("a", CallKind.READ)
    store.close()
    store, budget = open_budget(tmp_path, config, clock)
    assert budget.usage("a").used_day == 5
    store.close()


# -- kill -9 mid-day ---------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from bridge.config import BudgetConfig
    from bridge.events import CollectingAlerts
    from bridge.polling.budget import Budget
    from bridge.providers.base import CallKind
    from bridge.store import Store

    store = Store.open(Path(sys.argv[1]))
    budget = Budget(store=store, config=BudgetConfig(calls_per_day=250, calls_per_hour=100),
                    alerts=CollectingAlerts(),
                    clock=lambda: datetime.fromtimestamp(float(sys.argv[2]), UTC))
    budget.start()
    for n in range(1, 1000):
        budget.charge("acct", CallKind.READ)
        print(n, flush=True)
        if n >= int(sys.argv[3]):
            time.sleep(3600)  # wait to be killed
    """
)


def test_count_survives_sigkill_mid_day(tmp_path: Path):
    """A process SIGKILLed after charging N calls leaves exactly N calls counted."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(EPOCH), "7"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None
    seen = [child.stdout.readline().strip() for _ in range(7)]
    child.kill()
    child.wait()
    assert seen[-1] == "7"
    clock = FakeClock(EPOCH + 3 * HOUR_S)
    store, budget = open_budget(
        tmp_path, BudgetConfig(calls_per_day=250, calls_per_hour=100), clock
    )
    assert budget.usage("acct").used_day == 7
    store.close()


# -- the property: no sequence of calls, restarts and clock jumps beats the limits -----------------


@dataclass
class Run:
    """What a generated scenario did: accepted calls with their effective and true times."""

    true_now: float = 0.0
    offset: float = 0.0
    forward_jumped: bool = False
    # No reading since the restart yet: a jump now is one the process never sees happen.
    fresh: bool = False
    # A forward jump before a process's first reading (before its start, or after it and before
    # the budget first looks): it cannot be told from downtime.
    credited: bool = False
    accepted: list[tuple[float, float, CallKind]] = field(default_factory=list)
    refused: list[tuple[float, CallKind]] = field(default_factory=list)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 3 * HOUR_S)),
        st.tuples(st.just("jump"), st.floats(-2 * DAY_S, 2 * DAY_S)),
        st.tuples(st.just("restart"), st.just(0.0)),
        st.tuples(st.just("charge"), st.sampled_from(list(CallKind))),
        st.tuples(st.just("burst"), st.sampled_from(list(CallKind))),
        # A command's request charged on its audit record's word (in memory, row written after).
        st.tuples(st.just("recorded"), st.just(CallKind.COMMAND)),
    ),
    max_size=60,
)
configs = st.builds(
    BudgetConfig,
    calls_per_day=st.integers(10, 30),
    calls_per_hour=st.integers(1, 12),
    command_reserve_pct=st.integers(0, 90),
)


def max_in_window(times: list[float], seconds: float) -> int:
    """The most calls any half-open window of `seconds` holds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - seconds:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def play(
    config: BudgetConfig, script: list[tuple[str, object]], state_dir: Path, headroom: int = 0
) -> Run:
    """Headroom 0 by default: with one process the mirror is exact, so even the last call of a
    window may be taken on a record's word, and the limits must hold all the same. A clock found
    behind at start is not believed when set forward (`settle_s=0`): that path has its own tests.
    The effective time of each call and refusal is read back from the database."""
    run = Run()
    clock = FakeClock()

    def steady() -> float:
        return run.true_now  # real time passes with "advance" only, whatever the clock says

    store, budget = open_budget(state_dir, config, clock, headroom, steady, settle_s=0)
    for action, arg in script:
        clock.ts = EPOCH + run.true_now + run.offset
        if action == "advance":
            run.true_now += float(arg)  # type: ignore[arg-type]
        elif action == "jump":
            run.offset += float(arg)  # type: ignore[arg-type]
            run.forward_jumped |= float(arg) > 0  # type: ignore[arg-type]
            run.credited |= run.fresh and float(arg) > 0  # type: ignore[arg-type]
        elif action == "restart":
            store.close()
            store, budget = open_budget(state_dir, config, clock, headroom, steady, settle_s=0)
            run.credited |= run.forward_jumped
            run.fresh = True
        else:
            run.fresh = False
            for _ in range(25 if action == "burst" else 1):
                record = len(run.accepted) + 1 if action == "recorded" else None
                attempt(store, budget, run, arg, record)  # type: ignore[arg-type]
    store.close()
    return run


def attempt(
    store: Store, budget: Budget, run: Run, kind: CallKind, record: int | None = None
) -> None:
    try:
        commit = budget.charge("acct", kind, record=record)
    except BudgetExhausted:
        # A refusal carries effective time forward in the clock row, to exactly its own time.
        (at,) = store.query("SELECT max_ts FROM budget_clock WHERE account = 'acct'")
        run.refused.append((float(at[0]), kind))
    else:
        if commit is not None:
            commit()  # the request is done
        (at,) = store.query("SELECT ts FROM budget_calls ORDER BY id DESC LIMIT 1")
        run.accepted.append((float(at[0]), run.true_now, kind))


def check_limits(
    config: BudgetConfig, times: list[float], reads: list[float], slack: float = 0.0
) -> None:
    """The limits over every window, shortened by `slack`."""
    share_day = config.calls_per_day - reserve_of(config.calls_per_day, config.command_reserve_pct)
    share_hour = config.calls_per_hour - reserve_of(
        config.calls_per_hour, config.command_reserve_pct
    )
    assert max_in_window(times, DAY_S - slack) <= config.calls_per_day
    assert max_in_window(times, HOUR_S - slack) <= config.calls_per_hour
    assert max_in_window(reads, DAY_S - slack) <= share_day
    assert max_in_window(reads, HOUR_S - slack) <= share_hour


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, script=steps)
def test_no_window_ever_exceeds_its_limit(config: BudgetConfig, script):
    """Over any calls, restarts and clock jumps, no 24 h or 1 h window exceeds its limit, and reads
    never exceed the limit minus the command reserve: in effective time, and in true time too
    unless a forward jump came before a process's first look (a start cannot tell a jump from
    downtime). Jumps
    the steady clock tells apart, forward or back, free nothing; steps within the tolerance
    (twice it, one back and one forward) may, so true windows are that much shorter."""
    with tempfile.TemporaryDirectory() as tmp:
        run = play(config, script, Path(tmp))
    effective = [e for e, _, _ in run.accepted]
    check_limits(config, effective, [e for e, _, k in run.accepted if k is CallKind.READ])
    if not run.credited:
        true = [t for _, t, _ in run.accepted]
        reads = [t for _, t, k in run.accepted if k is CallKind.READ]
        check_limits(config, true, reads, slack=2 * JUMP_TOLERANCE_S)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, script=steps)
def test_reads_are_admitted_only_below_the_read_share(config: BudgetConfig, script):
    """Each admitted READ found reads and token refreshes below the limit minus the reserve in
    both windows: the reserve is only ever entered by commands (and tokens that precede them)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = play(config, script, Path(tmp))
    pct = config.command_reserve_pct
    for i, (at, _, kind) in enumerate(run.accepted):
        if kind is not CallKind.READ:
            continue
        earlier = [e for e, _, k in run.accepted[:i] if k is not CallKind.COMMAND]
        for seconds, limit in ((DAY_S, config.calls_per_day), (HOUR_S, config.calls_per_hour)):
            assert sum(1 for e in earlier if e > at - seconds) < limit - reserve_of(limit, pct)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, script=steps)
def test_commands_are_refused_only_when_a_window_is_full(config: BudgetConfig, script):
    """The reserve is really there: a COMMAND is refused only when a window holds its limit."""
    with tempfile.TemporaryDirectory() as tmp:
        run = play(config, script, Path(tmp))
    for at, kind in run.refused:
        if kind is not CallKind.COMMAND:
            continue
        before = [e for e, _, _ in run.accepted if e <= at]
        in_day = sum(1 for e in before if e > at - DAY_S)
        in_hour = sum(1 for e in before if e > at - HOUR_S)
        assert in_day >= config.calls_per_day or in_hour >= config.calls_per_hour
