"""Record checks: each account's call budget and the audit log's hash chain."""

from __future__ import annotations

import sqlite3
import stat
from datetime import datetime
from pathlib import Path

from bridge.audit.chain import Fault, chain_files
from bridge.audit.log import audit_directory
from bridge.audit.verify import Head, Report, verify
from bridge.config import Settings
from bridge.doctor.model import (
    AS_DAEMON_USER,
    BUDGET_FIX,
    RESERVE_FIX,
    Check,
    failed,
    passed,
    plural,
    warning,
)
from bridge.doctor.state import DB_FIX, PRIVATE_MODE_BITS, can_look_inside, read_db, stat_or_none
from bridge.errors import StateError
from bridge.events import CollectingAlerts
from bridge.polling.budget import Budget, BudgetUsage
from bridge.store import DB_NAME, Store


def check_budgets(settings: Settings, now: datetime) -> list[Check]:
    """Each account's calls in the rolling day, read from the state database."""
    path = settings.state_dir / DB_NAME
    if not settings.accounts:
        return []
    if any(_loose(path.with_name(path.name + suffix)) for suffix in ("", "-wal", "-shm")):
        # Opening it the daemon's way would chmod it (and its -wal, -shm) 0600 and hide what
        # `private files` reported.
        return [warning("budget", "not read until the state database is private again")]
    try:
        usages = _read_usages(settings, path, now)
    except (StateError, sqlite3.Error, OSError) as exc:
        return [failed("budget", f"cannot read the budget: {exc}", DB_FIX)]
    return [judge_budget(name, usages.get(name)) for name in settings.accounts]


def _loose(path: Path) -> bool:
    st = stat_or_none(path)
    return st is not None and bool(stat.S_IMODE(st.st_mode) & PRIVATE_MODE_BITS)


def _read_usages(settings: Settings, path: Path, now: datetime) -> dict[str, BudgetUsage]:
    if not path.exists() or ("budget",) not in read_db(path, "SELECT part FROM schema_versions"):
        return {}
    # Budget.usage needs the daemon's Store (a write lock, briefly); on an existing database its
    # connect() only re-asserts pragmas and the 0600 mode checked above, and nothing is migrated.
    store = Store(path)
    store.connect()
    try:
        budget = Budget(store=store, config=settings.budget, alerts=CollectingAlerts())
        return {name: budget.usage(name, now) for name in settings.accounts}
    finally:
        store.close()


def judge_budget(account: str, usage: BudgetUsage | None) -> Check:
    """Pure: used and left in the rolling 24 hours; reads used up is a warning, not a failure."""
    name = f"budget: {account}"
    if usage is None or usage.used_day == 0:
        return passed(name, "no calls in the last 24 h")
    day, hour = usage.day, usage.hour
    detail = (
        f"{day.used} of {day.limit} calls used in the last 24 h ({day.left} left); "
        f"{hour.used} of {hour.limit} in the last hour"
    )
    # A command may take any call left in both windows, the reserve included; `reserve_left` is
    # only what reads may not take, which is 0 whenever reads have room for everything left.
    if min(usage.left_day, usage.left_hour) == 0:
        window = "last hour" if usage.left_hour == 0 else "last 24 h"
        why = f"the command reserve is used up too ({window}): commands are refused"
        return warning(name, f"{detail}; {why}", RESERVE_FIX)
    if usage.reads_left == 0:
        # The rest is the command reserve: polling stops, commands still go through.
        resume = usage.next_free_at.strftime("%H:%M UTC")
        return warning(name, f"{detail}; polling paused until {resume}", BUDGET_FIX)
    return passed(name, detail)


def check_audit(state_dir: Path, held: Head | None = None) -> Check:
    """Every record's hash and link verifies; a failure names the first bad record. With the
    head the broker `held`, the log must also contain it, as the daemon checks at start.

    Only `audit_directory(state_dir)` is looked at: the one place every writer appends to.
    """
    name = "audit log"
    if stat_or_none(state_dir) is not None and not can_look_inside(state_dir):
        return failed(name, f"cannot read {state_dir}", AS_DAEMON_USER)
    directory = audit_directory(state_dir)
    if (not can_look_inside(directory) or not chain_files(directory)) and held is None:
        return passed(name, "no records yet")
    try:
        report = verify(directory, head=held)
    except OSError as exc:
        return failed(name, f"cannot read {directory}: {exc.strerror or exc}", AS_DAEMON_USER)
    if report.problem is not None:
        against_head = report.problem.fault in (Fault.TRUNCATED, Fault.DIVERGED)
        fix = _ANCHOR_FIX if against_head else _AUDIT_FIX
        return failed(name, f"broken at {report.problem.describe()}", fix)
    return passed(name, _intact(report))


def check_audit_fsync(unavailable: str | None) -> Check:
    """How a command's decision record reaches the disk here: io_uring, or the flusher thread
    (`bridge.audit.ring.unavailable()` says why not). Either keeps every guarantee."""
    name = "audit fsync"
    if unavailable is None:
        return passed(
            name, "io_uring: the kernel fsyncs a command's record as its request is built"
        )
    return passed(
        name,
        f"on a thread, as io_uring is unavailable here ({unavailable}); the same guarantees, a "
        "fraction of a millisecond more per command",
    )


def _intact(report: Report) -> str:
    seq, value = report.head
    text = f"intact: {plural(report.records, 'record')} in {plural(report.files, 'file')}"
    # A hash prefix is enough to compare by eye with the head published on the broker.
    text += f", head {seq}:{value[:12]}…" if value else ""
    return "; ".join([text, *report.notes])


_ANCHOR_FIX = (
    "the log lacks records the broker's copy of its head vouches for, so the daemon refuses "
    "commands: keep the files and compare them with a backup; if you started the log over (or "
    "restored an older copy) on purpose, run `ownerlink audit forget-head` and restart"
)
_AUDIT_FIX = (
    "keep the files as evidence and find out who changed them (`ownerlink audit verify` shows "
    "the same); the daemon will not append to a broken chain: to start a new one, stop it, "
    "move the audit files into a dated folder and run `ownerlink audit forget-head`"
)
