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

Time is "effective time": the largest clock reading ever seen for the account, persisted. A clock
that jumps backwards therefore never frees budget; calls made meanwhile are stamped at the
remembered time. A forward jump is indistinguishable from the daemon having been stopped that long
and frees what that much elapsed time would free.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.config import BudgetConfig
from bridge.errors import BudgetExhausted
from bridge.events import Alert, AlertKind, AlertSink
from bridge.logs import get_logger
from bridge.polling.clock import Clock, utc_now
from bridge.providers.base import CallKind
from bridge.store import Store

log = get_logger(__name__)
# Set around a command's confirmation read: the provider charges it as a READ, but it belongs to
# the command and may use the command reserve. A ContextVar follows the awaits of that one task.
_reads_as_commands: ContextVar[bool] = ContextVar("_reads_as_commands", default=False)

DAY_S = 86_400.0
HOUR_S = 3_600.0

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


class Budget:
    """The persisted call budget of every account; implements the CallGate protocol."""

    def __init__(
        self,
        *,
        store: Store,
        config: BudgetConfig,
        alerts: AlertSink,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._config = config
        self._alerts = alerts
        self._clock = clock
        self._exhausted: set[str] = set()

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

    def charge(self, account: str, kind: CallKind) -> None:
        """Record one call before it is made, or raise BudgetExhausted and record nothing."""
        if kind is CallKind.READ and _reads_as_commands.get():
            kind = CallKind.COMMAND
        with self._store.transaction() as conn:
            now = self._advance(conn, account, self._clock().timestamp())
            conn.execute(
                "DELETE FROM budget_calls WHERE account = ? AND ts <= ?", (account, now - DAY_S)
            )
            fits = self._fits(conn, account, kind, now)
            retry_at = now if fits else self._retry_at(conn, account, kind, now)
            if retry_at <= now:
                conn.execute(
                    "INSERT INTO budget_calls (account, ts, kind) VALUES (?, ?, ?)",
                    (account, now, kind.value),
                )
        # Outside the transaction: the clock advance above is committed even when refusing.
        if retry_at > now:
            self._refused(account, kind, now, retry_at)
        if kind is CallKind.READ:
            self._exhausted.discard(account)

    def admits(self, account: str, kind: CallKind = CallKind.COMMAND) -> bool:
        """Would a call of `kind` be admitted now? Read-only and cheap: the command pipeline asks
        it when deciding, so a command the budget cannot pay for is refused before it is audited
        as allowed."""
        with self._store.transaction() as conn:
            now = max(self._clock().timestamp(), _max_seen(conn, account))
            return self._fits(conn, account, kind, now)

    def _fits(self, conn: sqlite3.Connection, account: str, kind: CallKind, now: float) -> bool:
        """The common case in two indexed counts, without loading the window's rows: this runs
        before every provider request, commands included, so it is on the command's hot path."""
        pct = self._config.command_reserve_pct
        for seconds, limit in (
            (DAY_S, self._config.calls_per_day),
            (HOUR_S, self._config.calls_per_hour),
        ):
            # `ts > ?` uses the index; `ts + ? > ?` is the exact test window_usage applies.
            used, shared = conn.execute(
                "SELECT count(*), coalesce(sum(kind != ?), 0) FROM budget_calls "
                "WHERE account = ? AND ts > ? AND ts + ? > ?",
                (CallKind.COMMAND.value, account, now - seconds - 1, seconds, now),
            ).fetchone()
            if used >= limit:
                return False
            if kind is CallKind.READ and shared >= limit - reserve_of(limit, pct):
                return False
        return True

    def _retry_at(
        self, conn: sqlite3.Connection, account: str, kind: CallKind, now: float
    ) -> float:
        """When the refused call would fit (the full computation, only when refusing)."""
        calls = _load(conn, account)
        usage = usage_of(calls, now=now, config=self._config)
        return max(blocked_until(calls, kind, w, now) for w in (usage.day, usage.hour))

    def usage(self, account: str, now: datetime | None = None) -> BudgetUsage:
        """The account's windows at `now` (default: the clock), in effective time; read-only."""
        reading = (now or self._clock()).timestamp()
        with self._store.transaction() as conn:
            at = max(reading, _max_seen(conn, account))
            calls = _load(conn, account)
        return usage_of(calls, now=at, config=self._config)

    def call_times(self, account: str, since: datetime, until: datetime) -> list[datetime]:
        """When the account's charged calls happened in [since, until] (the page's chart)."""
        rows = self._store.query(
            "SELECT ts FROM budget_calls WHERE account = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (account, since.timestamp(), until.timestamp()),
        )
        return [_dt(float(row[0])) for row in rows]

    def _advance(self, conn: sqlite3.Connection, account: str, reading: float) -> float:
        now = max(reading, _max_seen(conn, account))
        conn.execute(
            "INSERT INTO budget_clock (account, max_ts) VALUES (?, ?) "
            "ON CONFLICT(account) DO UPDATE SET max_ts = excluded.max_ts",
            (account, now),
        )
        return now

    def _refused(self, account: str, kind: CallKind, now: float, retry_at: float) -> None:
        log.info("budget.refused", account=account, kind=kind.value, retry_at=_dt(retry_at))
        # One alert per episode: the episode ends when a READ is admitted again.
        if account not in self._exhausted:
            self._exhausted.add(account)
            self._alerts.emit(
                Alert(
                    kind=AlertKind.BUDGET_EXHAUSTED,
                    message=f"API call budget for account {account} is used up; "
                    f"polling resumes at {_dt(retry_at).isoformat()}",
                    ts=_dt(now),
                    account=account,
                    details={"call_kind": kind.value, "retry_at": _dt(retry_at).isoformat()},
                )
            )
        raise BudgetExhausted(f"call budget of {account} exhausted", retry_at=retry_at)


def _max_seen(conn: sqlite3.Connection, account: str) -> float:
    row = conn.execute("SELECT max_ts FROM budget_clock WHERE account = ?", (account,)).fetchone()
    return float(row[0]) if row else -math.inf


def _load(conn: sqlite3.Connection, account: str) -> list[Call]:
    rows = conn.execute(
        "SELECT ts, kind FROM budget_calls WHERE account = ? ORDER BY ts", (account,)
    ).fetchall()
    return [Call(float(ts), CallKind(kind)) for ts, kind in rows]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
