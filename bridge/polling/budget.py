"""The per-account call budget: sliding 24 h and 1 h windows over calls persisted in SQLite.

Every provider request is charged *before* it is sent (`charge`, the CallGate protocol), inside one
`BEGIN IMMEDIATE` transaction, so a crash loop or a second process cannot spend a call twice.

Rules, per account and per window (24 h and 1 h, both sliding):

- all calls together never exceed the window's limit;
- reads and token refreshes together never exceed the limit minus the command reserve
  (`command_reserve_pct`), so commands and their confirmation reads always have that share;
- a READ is refused when it would eat into the reserve; a COMMAND may use it; a TOKEN refresh
  counts against the budget (Ford publishes no limits, so we assume it counts) and may use the
  reserve, because a command after 20 idle minutes needs a fresh token first.

Time is "effective time" (`bridge.polling.effective`): the wall clock with the jumps seen while
running taken out, never behind the largest time the account has seen (persisted as the newest
charged call, or the `budget_clock` row where no call was charged: a refusal, a prune). A clock
set back or forward while the process runs frees nothing that real time (the steady clock) did
not; a forward jump raises one `clock_jumped` alert. Across a restart a forward jump cannot be
told from downtime and frees what that much elapsed time would; a clock set back carries on from
the remembered time. Instants the budget reports for the clock to wait on (`retry_at`) are on the
wall clock; `BudgetUsage` is in effective time, and only its differences are meant to be used.

SQLite is the record; each account's last day of calls is also mirrored in memory (a `_Ledger`),
because `admits` and `charge` run on a command's path and counting rows in SQL there cost more
than the rest of the command's checks together. The mirror is dropped whenever another connection
(another process: `ownerlink status`, `ownerlink command`) has committed to the database, which
SQLite's `PRAGMA data_version` tells cheaply; `charge` asks inside its write transaction, so no
other writer can slip a call in between the count and the insert. One `Budget` per `Store`: a
second one on the same connection would not see the first one's calls.

A command's own request is the exception to "transaction first". Its decision record is already
durable in the audit log when the request leaves (`bridge.providers.barrier`), and that record is
the proof of the call, so `charge(..., record=seq)` takes the call in the mirror and returns a
commit that writes its row once the request is done: the command does not wait for SQLite. That
shortcut is taken only while no other process has committed since the mirror was loaded (`PRAGMA
data_version`, no disk read: a mirror behind by the calls of `ownerlink command`s run meanwhile let
a command go to the car over the limit), and while it shows `HEADROOM` calls left in both windows,
since other processes may charge while the request is out and cannot count it before its row is
written; otherwise the command pays for its exact transaction. A crash before
the row is written loses nothing: the command's decision has no outcome record, and at start the
daemon charges every such command whose record no row names (`charge_interrupted`). Until its row
is written such a call is *in flight*: it is kept apart as well as in the mirror, and put back
into every mirror reloaded from SQLite meanwhile (a reload reads only rows, and would drop it).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from bisect import bisect_right, insort
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from bridge.config import BudgetConfig
from bridge.errors import BudgetExhausted, StateError
from bridge.events import Alert, AlertKind, AlertSink
from bridge.logs import get_logger
from bridge.polling.clock import Clock, utc_now
from bridge.polling.effective import SETTLE_S, EffectiveClock, Reading, steady_now
from bridge.providers.base import CallKind, Commit
from bridge.store import Store

log = get_logger(__name__)
# Set around a command's confirmation read: the provider charges it as a READ, but it belongs to
# the command and may use the command reserve. A ContextVar follows the awaits of that one task.
_reads_as_commands: ContextVar[bool] = ContextVar("_reads_as_commands", default=False)

DAY_S = 86_400.0
HOUR_S = 3_600.0
# Rows older than a day are deleted from SQLite once this many have left the in-memory window:
# a DELETE on every charge would cost a page write per call for nothing.
PRUNE_BATCH = 64
# Calls that must be left in both windows for a command to be charged in memory first (see above):
# far more than other processes (`ownerlink status`, `vehicles`) make between two of ours.
HEADROOM = 10
# A forward clock jump held back is always logged; the owner is alerted from this size on (an NTP
# step of a few seconds is held back all the same, and is not worth an alert).
JUMP_ALERT_S = 60.0

MIGRATIONS = (
    # One row per charged call. `ts` is effective epoch seconds; rows older than a day are pruned.
    """CREATE TABLE budget_calls (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL
    );
    CREATE INDEX budget_calls_by_account ON budget_calls (account, ts)""",
    # The largest clock reading seen per account: a backwards clock jump must not free budget.
    "CREATE TABLE budget_clock (account TEXT PRIMARY KEY, max_ts REAL NOT NULL)",
    # The seq of the audit decision record a command's call acted on (None for every other call):
    # how the start after a crash tells a command that was charged from one that was not.
    "ALTER TABLE budget_calls ADD COLUMN ref INTEGER",
)


@dataclass(frozen=True, slots=True)
class Call:
    """One charged call as stored."""

    ts: float
    kind: CallKind


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """One sliding window of one account, seen at an instant."""

    seconds: float
    limit: int
    reserve: int
    used: int
    commands: int
    reads: int
    tokens: int
    # Seconds from now until each read or token call in the window leaves it, ascending.
    releases: tuple[float, ...]

    @property
    def left(self) -> int:
        """Calls of any kind still allowed in this window."""
        return max(0, self.limit - self.used)

    @property
    def read_share(self) -> int:
        """What reads and tokens together may use: the limit minus the command reserve."""
        return self.limit - self.reserve

    @property
    def reads_left(self) -> int:
        """READ calls still allowed: bounded by both the read share and the overall limit."""
        return max(0, min(self.read_share - self.reads - self.tokens, self.left))

    @property
    def reserve_left(self) -> int:
        """Calls only a command (or a token refresh) may still take."""
        return self.left - self.reads_left


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """An account's budget at `at` (effective time): both windows and the next free READ."""

    at: datetime
    day: WindowUsage
    hour: WindowUsage
    next_free_at: datetime  # equal to `at` when a READ would be admitted now

    @property
    def used_day(self) -> int:
        return self.day.used

    @property
    def left_day(self) -> int:
        return self.day.left

    @property
    def used_hour(self) -> int:
        return self.hour.used

    @property
    def left_hour(self) -> int:
        return self.hour.left

    @property
    def reserve_left(self) -> int:
        return min(self.day.reserve_left, self.hour.reserve_left)

    @property
    def reads_left(self) -> int:
        return min(self.day.reads_left, self.hour.reads_left)


def reserve_of(limit: int, pct: int) -> int:
    """The command reserve, rounded up (a fraction of a call protects commands, not reads), but
    always leaving reads at least one call so a tiny hourly limit cannot stop polling for good."""
    return max(0, min(math.ceil(limit * pct / 100), limit - 1))


def window_usage(
    calls: Sequence[Call], *, now: float, seconds: float, limit: int, reserve: int
) -> WindowUsage:
    """Summarise the calls still inside the window ending at `now` (pure)."""
    inside = [c for c in calls if c.ts + seconds > now]
    shared = sorted(c.ts + seconds - now for c in inside if c.kind is not CallKind.COMMAND)
    return WindowUsage(
        seconds=seconds,
        limit=limit,
        reserve=reserve,
        used=len(inside),
        commands=sum(c.kind is CallKind.COMMAND for c in inside),
        reads=sum(c.kind is CallKind.READ for c in inside),
        tokens=sum(c.kind is CallKind.TOKEN for c in inside),
        releases=tuple(shared),
    )


def blocked_until(calls: Sequence[Call], kind: CallKind, window: WindowUsage, now: float) -> float:
    """The effective time at which this window admits a call of `kind` (`now` if it does)."""
    inside = sorted(c.ts for c in calls if c.ts + window.seconds > now)
    at = now
    # The call whose departure brings the count under the limit is the (excess + 1)-th oldest.
    excess = len(inside) - window.limit
    if excess >= 0:
        at = max(at, inside[excess] + window.seconds)
    if kind is CallKind.READ:
        shared = sorted(
            c.ts for c in calls if c.ts + window.seconds > now and c.kind is not CallKind.COMMAND
        )
        excess = len(shared) - window.read_share
        if excess >= 0:
            at = max(at, shared[excess] + window.seconds)
    return at


def usage_of(calls: Sequence[Call], *, now: float, config: BudgetConfig) -> BudgetUsage:
    """Both windows of one account's calls at effective time `now` (pure)."""
    pct = config.command_reserve_pct
    day = window_usage(
        calls,
        now=now,
        seconds=DAY_S,
        limit=config.calls_per_day,
        reserve=reserve_of(config.calls_per_day, pct),
    )
    hour = window_usage(
        calls,
        now=now,
        seconds=HOUR_S,
        limit=config.calls_per_hour,
        reserve=reserve_of(config.calls_per_hour, pct),
    )
    free = max(blocked_until(calls, CallKind.READ, w, now) for w in (day, hour))
    return BudgetUsage(at=_dt(now), day=day, hour=hour, next_free_at=_dt(free))


def inside_from(times: Sequence[float], seconds: float, now: float) -> int:
    """Index of the first time t in ascending `times` with t + seconds > now (the window's start).

    Bisecting on `now - seconds` finds it up to rounding; the two nudges make it exactly the test
    `window_usage` applies, so the mirror and the pure summary never disagree about a boundary call.
    """
    i = bisect_right(times, now - seconds)
    while i > 0 and times[i - 1] + seconds > now:
        i -= 1
    while i < len(times) and not times[i] + seconds > now:
        i += 1
    return i


@dataclass(slots=True)
class _Ledger:
    """One account's calls as SQLite holds them, oldest first (effective time never decreases,
    so appending keeps every list sorted), and its effective clock."""

    max_seen: float
    calls: list[Call] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # every call's ts
    shared: list[float] = field(default_factory=list)  # ts of READ and TOKEN calls
    stale_rows: int = 0  # rows that left the day window but are still in SQLite

    def add(self, call: Call) -> None:
        self.calls.append(call)
        self.times.append(call.ts)
        if call.kind is not CallKind.COMMAND:
            self.shared.append(call.ts)

    def insert(self, call: Call) -> None:
        """Add a call that may be older than the newest one held (an in-flight call put back
        after a reload brought in rows another process wrote since)."""
        at = bisect_right(self.times, call.ts)
        self.calls.insert(at, call)
        self.times.insert(at, call.ts)
        if call.kind is not CallKind.COMMAND:
            insort(self.shared, call.ts)
        self.max_seen = max(self.max_seen, call.ts)

    def forget_before(self, now: float) -> None:
        """Drop calls the day window no longer holds (SQLite keeps them until the next prune)."""
        gone = inside_from(self.times, DAY_S, now)
        if gone:
            del self.calls[:gone], self.times[:gone]
            del self.shared[: inside_from(self.shared, DAY_S, now)]
            self.stale_rows += gone

    def fits(self, kind: CallKind, now: float, config: BudgetConfig, spare: int = 0) -> bool:
        """The admission rule of both windows, from the mirror: two bisections per window. With
        `spare`, the call must also leave that many calls of its kind in each window."""
        for seconds, limit in ((DAY_S, config.calls_per_day), (HOUR_S, config.calls_per_hour)):
            if len(self.times) - inside_from(self.times, seconds, now) >= limit - spare:
                return False
            if kind is CallKind.READ:
                shared = len(self.shared) - inside_from(self.shared, seconds, now)
                if shared >= limit - reserve_of(limit, config.command_reserve_pct) - spare:
                    return False
        return True


class Budget:
    """The persisted call budget of every account; implements the CallGate protocol."""

    def __init__(
        self,
        *,
        store: Store,
        config: BudgetConfig,
        alerts: AlertSink,
        clock: Clock = utc_now,
        headroom: int = HEADROOM,
        steady: Callable[[], float] | None = None,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._store = store
        # What tells a clock being set from time passing. Without one: the boot clock for the
        # real wall clock; any other clock (a simulation's) is its own measure, jumps and all.
        self._steady = steady or (steady_now if clock is utc_now else partial(_seconds, clock))
        self._pace = EffectiveClock(settle=settle_s)
        # `admits` reads it without the store's lock (the web page's threads and the event
        # loop): two readers must not both take one jump into the lag.
        self._pace_lock = threading.Lock()
        # Per account, the last call row before this process first looked: calls after it may
        # be moved when a clock found behind is set (`_settle`), the ones before never are.
        self._first_rows: dict[str, int] = {}
        self._headroom = headroom
        self._config = config
        self._alerts = alerts
        self._clock = clock
        self._exhausted: set[str] = set()
        self._ledgers: dict[str, _Ledger] = {}
        # Calls taken on their record whose rows are not written yet, per account: no reload
        # from SQLite can see them, so each reload puts them back (see `_ledger`).
        self._in_flight: dict[str, list[Call]] = {}
        self._version: int | None = None  # PRAGMA data_version when the mirror was last valid

    def start(self) -> None:
        """Create or upgrade the budget tables (idempotent)."""
        self._store.migrate("budget", MIGRATIONS)

    @staticmethod
    @contextmanager
    def reads_as_commands() -> Iterator[None]:
        """Within this block (this task only), READ calls are charged to the command share."""
        token = _reads_as_commands.set(True)
        try:
            yield
        finally:
            _reads_as_commands.reset(token)

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> Commit | None:
        """Record one call before it is made, or raise BudgetExhausted and record nothing.

        With `record` (the audit seq of the command this call carries out), the call may be taken
        in memory only, and the returned commit writes it (see the module docstring)."""
        if kind is CallKind.READ and _reads_as_commands.get():
            kind = CallKind.COMMAND
        self._settle(account)
        if record is not None:
            commit = self._take_on_record(account, kind, record)
            if commit is not None:
                return commit
        try:
            with self._store.transaction() as conn:
                ledger = self._ledger(conn, account)
                reading = self._effective(account, ledger.max_seen)
                now = reading.effective
                ledger.forget_before(now)
                fits = ledger.fits(kind, now, self._config)
                retry_at = now if fits else self._retry_at(ledger, kind, now)
                prune = ledger.stale_rows >= PRUNE_BATCH
                if retry_at <= now:
                    _insert(conn, account, Call(now, kind), record)
                if retry_at > now or prune:
                    # No call row carries `now` forward (refusing), or old rows are about to go.
                    self._persist_clock(conn, account, now)
                if prune:
                    conn.execute(
                        "DELETE FROM budget_calls WHERE account = ? AND ts + ? <= ?",
                        (account, DAY_S, now),
                    )
        except sqlite3.Error as exc:
            # A call the budget cannot record is not made (a full disk, say): the count must
            # never fall behind what was spent.
            raise StateError(f"the budget cannot record the call: {exc}") from exc
        # Committed: only now does the mirror take the call (a failed commit leaves it untouched).
        ledger.max_seen = now
        if prune:
            ledger.stale_rows = 0
        if retry_at > now:
            self._refused(account, kind, reading, retry_at)
        ledger.add(Call(now, kind))
        if kind is CallKind.READ:
            self._exhausted.discard(account)
        return None

    def _take_on_record(self, account: str, kind: CallKind, record: int) -> Commit | None:
        """The call in the mirror now and its row later, when the mirror is loaded and the call
        leaves the headroom to spare; else None, and the caller charges in a transaction."""
        with self._store.locked() as conn:  # the mirror is shared with threads (the web page)
            ledger = self._ledgers.get(account)
            # A mirror another process has written past (`ownerlink command`s spending the
            # budget to its limit) could admit this call over the limit: pay in a transaction.
            if ledger is None or self._outdated(conn) or self._pace.restamp_of(account):
                return None
            now = self._effective(account, ledger.max_seen).effective
            ledger.forget_before(now)
            if not ledger.fits(kind, now, self._config, spare=self._headroom):
                return None
            call = Call(now, kind)
            ledger.add(call)
            ledger.max_seen = now
            self._in_flight.setdefault(account, []).append(call)
        return partial(self._write_taken, account, call, record)

    def _write_taken(self, account: str, call: Call, record: int) -> None:
        """The row of a call taken on its record's word (the request is done by now)."""
        try:
            with self._store.transaction() as conn:
                _insert(conn, account, call, record)
                # From here SQLite holds it: a reload (below, if another process wrote since we
                # looked) reads its row, and must not count it a second time.
                self._landed(account, call)
                self._ledger(conn, account)
        except sqlite3.Error as exc:
            # The call went out; only other processes will not see it. Kept in flight, so every
            # reload of the mirror still counts it (rebuilt now, in case one read the lost row).
            with self._store.locked():
                flying = self._in_flight.setdefault(account, [])
                if not any(c is call for c in flying):
                    flying.append(call)
                    self._ledgers.pop(account, None)
            log.exception("budget.write_failed", account=account, error=str(exc))

    def _landed(self, account: str, call: Call) -> None:
        """`call`'s row is written: it is no longer in flight (the same object, not an equal
        call: two calls may share a time and a kind)."""
        flying = self._in_flight.get(account, [])
        self._in_flight[account] = [c for c in flying if c is not call]

    def charge_interrupted(self, account: str, at: datetime, record: int) -> bool:
        """At start, after a crash: charge a command whose decision record (`record`, made `at`)
        has no outcome, unless a call row already names that record. True when it charged.

        Its request may have left without its row being written (see the module docstring);
        charging one that never left costs one call of budget, which is the safe way to be wrong.
        """
        with self._store.transaction() as conn:
            named = conn.execute(
                "SELECT 1 FROM budget_calls WHERE account = ? AND ref = ?", (account, record)
            ).fetchone()
            if named is not None:
                return False
            _insert(conn, account, Call(at.timestamp(), CallKind.COMMAND), record)
        # Its time is in the past: reload the account's calls in order rather than append it.
        self._ledgers.pop(account, None)
        return True

    def admits(self, account: str, kind: CallKind = CallKind.COMMAND) -> bool:
        """Would a call of `kind` be admitted now? Read-only and cheap: the command pipeline asks
        it when deciding, so a command the budget cannot pay for is refused before it is audited
        as allowed.

        Once an account's mirror is loaded this asks it alone, without SQLite. Other processes
        only ever add calls, so a mirror that missed one can only say yes too readily, never no:
        `charge`, which re-reads inside its write transaction, is the answer that counts.
        """
        self._settle(account)
        ledger = self._ledgers.get(account)
        if ledger is None:
            with self._store.locked() as conn:
                ledger = self._ledger(conn, account)
        now = self._effective(account, ledger.max_seen).effective
        return ledger.fits(kind, now, self._config)

    def _effective(self, account: str, max_seen: float) -> Reading:
        """Effective time now (see `bridge.polling.effective`): a clock set back or forward while
        running frees nothing that real time did not. (Set back, it once stood still at the
        largest reading instead: once a window was full, no poll and no command for as long as
        the clock had gone back. Set forward, it freed as much as that much time would.)"""
        with self._pace_lock:
            reading = self._pace.read(
                account, wall=self._clock().timestamp(), steady=self._steady(), max_seen=max_seen
            )
        if reading.held:
            self._clock_jumped(account, reading)
        return reading

    def _settle(self, account: str) -> None:
        """While a clock found behind at start may still be set (see `bridge.polling.effective`):
        read the clocks, and once the setting is believed, move the calls stamped since the
        start forward by as much, so they keep their real age, before effective time takes the
        wall clock. Outside any transaction (its own is the move); a no-op once settled. Waits
        while a call of the account is in flight (its row, written later, keeps the old stamp)."""
        if not self._pace.settling(account):
            return
        with self._store.locked() as conn:  # memory follows the rows only once they are committed
            self._effective(account, self._ledger(conn, account).max_seen)
            pending = self._pace.restamp_of(account)
            if pending is None or self._in_flight.get(account):
                return
            since, shift = pending
            self._move_calls(account, since, shift)
        log.info("budget.clock_set", account=account, shift_s=round(shift, 3))

    def _move_calls(self, account: str, since: float, shift: float) -> None:
        """The account's calls since this process first looked (and its clock row, from `since`
        on), `shift` later: rows first, then the effective clock and the mirror (the caller holds
        the store's lock throughout)."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE budget_calls SET ts = ts + ? WHERE account = ? AND id > ?",
                (shift, account, self._first_rows.get(account, 0)),
            )
            conn.execute(
                "UPDATE budget_clock SET max_ts = max_ts + ? WHERE account = ? AND max_ts >= ?",
                (shift, account, since),
            )
        with self._pace_lock:
            self._pace.restamped(account, shift)
        self._ledgers.pop(account, None)

    def _clock_jumped(self, account: str, reading: Reading) -> None:
        """One alert per forward jump held back (the reading that saw it says so)."""
        log.warning("budget.clock_jumped", account=account, jump_s=round(reading.held, 3))
        if reading.held < JUMP_ALERT_S:
            return
        self._alerts.emit(
            Alert(
                kind=AlertKind.CLOCK_JUMPED,
                message=f"the system clock jumped {_span(reading.held)} ahead while running; "
                "the API call budget counts only real elapsed time, so the jump frees no call "
                "(a restart would take it as downtime)",
                ts=_dt(reading.wall),
                details={"jump_s": round(reading.held, 3), "clock": _dt(reading.wall).isoformat()},
            )
        )

    def _ledger(self, conn: sqlite3.Connection, account: str) -> _Ledger:
        """The account's mirror, reloaded when another connection has written since we looked."""
        if self._outdated(conn):
            self._ledgers.clear()
            self._version = _data_version(conn)
        ledger = self._ledgers.get(account)
        if account not in self._first_rows:
            self._first_rows[account] = _last_row(conn, account)
        if ledger is None:
            ledger = self._ledgers[account] = _Ledger(_max_seen(conn, account))
            for call in _load(conn, account):
                ledger.add(call)
                ledger.max_seen = max(ledger.max_seen, call.ts)
            # Rows are only what has landed: calls still in flight are counted all the same (one
            # whose row could not be written stays in flight until it leaves the day window).
            flying = [c for c in self._in_flight.get(account, ()) if c.ts + DAY_S > ledger.max_seen]
            self._in_flight[account] = flying
            for call in flying:
                ledger.insert(call)
        return ledger

    def _outdated(self, conn: sqlite3.Connection) -> bool:
        """Has another connection committed since the mirrors were loaded? (No disk read.)"""
        return _data_version(conn) != self._version

    def _retry_at(self, ledger: _Ledger, kind: CallKind, now: float) -> float:
        """When the refused call would fit (the full computation, only when refusing)."""
        usage = usage_of(ledger.calls, now=now, config=self._config)
        return max(blocked_until(ledger.calls, kind, w, now) for w in (usage.day, usage.hour))

    def usage(self, account: str, now: datetime | None = None) -> BudgetUsage:
        """The account's windows at `now` (default: the clock), in effective time; read-only but
        for a believed clock setting (`_settle`)."""
        self._settle(account)
        with self._store.locked() as conn:
            ledger = self._ledger(conn, account)
            reading = self._effective(account, ledger.max_seen)
            # `now` as far from the clock as it was asked: the clock may be ahead of effective
            # time (a jump held back) or behind it (set back), and neither may free a call.
            ahead = 0.0 if now is None else max(0.0, now.timestamp() - reading.wall)
            at = reading.effective + ahead
            calls = list(ledger.calls)
        return usage_of(calls, now=at, config=self._config)

    def call_times(self, account: str, since: datetime, until: datetime) -> list[datetime]:
        """When the account's charged calls happened in [since, until] (the page's chart), on the
        clock as it reads now: each call its real age before now, even after a jump."""
        with self._store.locked() as conn:
            reading = self._effective(account, self._ledger(conn, account).max_seen)
        shift = reading.wall - reading.effective
        rows = self._store.query(
            "SELECT ts FROM budget_calls WHERE account = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (account, since.timestamp() - shift, until.timestamp() - shift),
        )
        return [_dt(float(row[0]) + shift) for row in rows]

    @staticmethod
    def _persist_clock(conn: sqlite3.Connection, account: str, now: float) -> None:
        conn.execute(
            "INSERT INTO budget_clock (account, max_ts) VALUES (?, ?) "
            "ON CONFLICT(account) DO UPDATE SET max_ts = max(max_ts, excluded.max_ts)",
            (account, now),
        )

    def _refused(self, account: str, kind: CallKind, reading: Reading, retry_at: float) -> None:
        retry_at = reading.on_wall(retry_at)  # when the clock will say so
        log.info("budget.refused", account=account, kind=kind.value, retry_at=_dt(retry_at))
        # One alert per episode: the episode ends when a READ is admitted again.
        if account not in self._exhausted:
            self._exhausted.add(account)
            self._alerts.emit(
                Alert(
                    kind=AlertKind.BUDGET_EXHAUSTED,
                    message=f"API call budget for account {account} is used up; "
                    f"polling resumes at {_dt(retry_at).isoformat()}",
                    ts=_dt(reading.wall),
                    account=account,
                    details={"call_kind": kind.value, "retry_at": _dt(retry_at).isoformat()},
                )
            )
        raise BudgetExhausted(f"call budget of {account} exhausted", retry_at=retry_at)


def _insert(conn: sqlite3.Connection, account: str, call: Call, record: int | None) -> None:
    conn.execute(
        "INSERT INTO budget_calls (account, ts, kind, ref) VALUES (?, ?, ?, ?)",
        (account, call.ts, call.kind.value, record),
    )


def _data_version(conn: sqlite3.Connection) -> int:
    # Changes whenever another connection commits to the database, never for our own commits.
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _max_seen(conn: sqlite3.Connection, account: str) -> float:
    row = conn.execute("SELECT max_ts FROM budget_clock WHERE account = ?", (account,)).fetchone()
    return float(row[0]) if row else -math.inf


def _last_row(conn: sqlite3.Connection, account: str) -> int:
    row = conn.execute("SELECT max(id) FROM budget_calls WHERE account = ?", (account,)).fetchone()
    return int(row[0] or 0)


def _load(conn: sqlite3.Connection, account: str) -> list[Call]:
    rows = conn.execute(
        "SELECT ts, kind FROM budget_calls WHERE account = ? ORDER BY ts", (account,)
    ).fetchall()
    return [Call(float(ts), CallKind(kind)) for ts, kind in rows]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _seconds(clock: Clock) -> float:
    return clock().timestamp()


def _span(seconds: float) -> str:
    """A jump's size as people say it: "90 s", "3.0 h", "1.5 days"."""
    if seconds < 2 * HOUR_S:
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"{seconds / HOUR_S:.1f} h" if seconds < 2 * DAY_S else f"{seconds / DAY_S:.1f} days"
