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
    monotonic: Callable[[], float] = lambda: 0.0,
) -> tuple[Store, Budget]:
    """A budget on `clock`; the monotonic clock stands still unless one is given."""
    store = Store.open(state_dir)
    budget = Budget(
        store=store,
        config=config,
        alerts=CollectingAlerts(),
        clock=clock,
        headroom=headroom,
        monotonic=monotonic,
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
        monotonic=lambda: real[0],
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
    max_seen: float = float("-inf")
    # The budget's last trusted (clock reading, true time), as `Budget._effective` keeps it.
    anchor: tuple[float, float] | None = None
    forward_jumped: bool = False
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
    window may be taken on a record's word, and the limits must hold all the same."""
    run = Run()
    clock = FakeClock()

    def monotonic() -> float:
        return run.true_now  # real time passes with "advance" only, whatever the clock says

    store, budget = open_budget(state_dir, config, clock, headroom, monotonic)
    for action, arg in script:
        clock.ts = EPOCH + run.true_now + run.offset
        if action == "advance":
            run.true_now += float(arg)  # type: ignore[arg-type]
        elif action == "jump":
            run.offset += float(arg)  # type: ignore[arg-type]
            run.forward_jumped |= float(arg) > 0  # type: ignore[arg-type]
        elif action == "restart":
            store.close()
            store, budget = open_budget(state_dir, config, clock, headroom, monotonic)
            run.anchor = None
        else:
            for _ in range(25 if action == "burst" else 1):
                record = len(run.accepted) + 1 if action == "recorded" else None
                attempt(budget, run, clock.ts, arg, record)  # type: ignore[arg-type]
    store.close()
    return run


def effective(run: Run, reading: float) -> float:
    """The effective time the budget stamps a call with (the model of `Budget._effective`)."""
    if reading >= run.max_seen:
        run.anchor = (reading, run.true_now)
        return reading
    if run.anchor is None:
        run.anchor = (run.max_seen, run.true_now)
        return run.max_seen
    trusted, then = run.anchor
    return max(run.max_seen, trusted + max(0.0, run.true_now - then))


def attempt(
    budget: Budget, run: Run, reading: float, kind: CallKind, record: int | None = None
) -> None:
    run.max_seen = effective(run, reading)
    try:
        commit = budget.charge("acct", kind, record=record)
    except BudgetExhausted:
        run.refused.append((run.max_seen, kind))
    else:
        run.accepted.append((run.max_seen, run.true_now, kind))
        if commit is not None:
            commit()  # the request is done


def check_limits(config: BudgetConfig, times: list[float], reads: list[float]) -> None:
    share_day = config.calls_per_day - reserve_of(config.calls_per_day, config.command_reserve_pct)
    share_hour = config.calls_per_hour - reserve_of(
        config.calls_per_hour, config.command_reserve_pct
    )
    assert max_in_window(times, DAY_S) <= config.calls_per_day
    assert max_in_window(times, HOUR_S) <= config.calls_per_hour
    assert max_in_window(reads, DAY_S) <= share_day
    assert max_in_window(reads, HOUR_S) <= share_hour


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, script=steps)
def test_no_window_ever_exceeds_its_limit(config: BudgetConfig, script):
    """Over any calls, restarts and clock jumps, no 24 h or 1 h window exceeds its limit, and reads
    never exceed the limit minus the command reserve (in effective time; and in true time too
    when the clock never jumped forward, which is indistinguishable from elapsed time)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = play(config, script, Path(tmp))
    effective = [e for e, _, _ in run.accepted]
    check_limits(config, effective, [e for e, _, k in run.accepted if k is CallKind.READ])
    if not run.forward_jumped:
        true = [t for _, t, _ in run.accepted]
        check_limits(config, true, [t for _, t, k in run.accepted if k is CallKind.READ])


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
