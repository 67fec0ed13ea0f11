"""The registry's tables in the state database, and the mapping between rows and `App`.

`apps.rev` grows on every change; a broker sync only clears `pending_sync` for the revision it
applied, so a change made while a sync was running is never marked as done by mistake.
`app_removals` remembers revoked apps (until the broker has forgotten them too, and afterwards
so that revoking twice gets a clear answer), and
`app_changes` lets another process (the daemon) notice changes made by `ownerlink apps`.
`app_scope_history` keeps what each app held after every change of its scopes, whichever process
made it: the OAuth server ends a grant once every scope it carries was withdrawn, even when they
came back before the app was next heard from (the change feed above is trimmed and names no
scopes, so it cannot tell).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.model import App, Scope
from bridge.store import Store

MIGRATIONS = [
    """
    CREATE TABLE apps (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        home_assistant INTEGER NOT NULL DEFAULT 0,
        rate_limit_per_minute INTEGER,
        allow_cidrs TEXT NOT NULL DEFAULT '[]',
        last_seen TEXT,
        last_command TEXT,
        broker_secret TEXT,
        source TEXT NOT NULL DEFAULT 'registry',
        rev INTEGER NOT NULL DEFAULT 1,
        pending_sync INTEGER NOT NULL DEFAULT 0,
        sync_error TEXT
    );
    CREATE UNIQUE INDEX apps_one_home_assistant ON apps (home_assistant) WHERE home_assistant = 1;
    CREATE TABLE app_removals (
        app_id TEXT PRIMARY KEY,
        requested_at TEXT NOT NULL,
        broker_done INTEGER NOT NULL DEFAULT 0,
        sync_error TEXT
    );
    CREATE TABLE app_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE app_scope_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app_id TEXT NOT NULL,
        scopes TEXT NOT NULL
    );
    CREATE INDEX app_scope_history_app ON app_scope_history (app_id, seq)
    """,
]

# Fields an update may set (guards the column names formatted into SQL below).
MUTABLE = frozenset(
    {"scopes", "enabled", "rate_limit_per_minute", "allow_cidrs", "broker_secret", "home_assistant"}
)
KEEP_CHANGES = 1000


@dataclass(frozen=True, slots=True)
class AppRow:
    """An app plus the registry's bookkeeping about its broker identity."""

    app: App
    secret: str | None
    rev: int
    pending_sync: bool
    sync_error: str | None
    source: str


def scopes_json(scopes: frozenset[Scope]) -> str:
    return json.dumps(sorted(s.value for s in scopes))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# The columns an App is made of, but for its activity (`last_seen`, `last_command`): what a
# command's decision reads. Their values key the parsed App `deciding` reuses.
_DECIDING = (
    "id",
    "name",
    "scopes",
    "created_at",
    "enabled",
    "home_assistant",
    "rate_limit_per_minute",
    "allow_cidrs",
)
_SELECT_DECIDING = f"SELECT {', '.join(_DECIDING)} FROM apps WHERE id = ?"  # noqa: S608


def to_row(r: sqlite3.Row) -> AppRow:
    values = tuple(r[name] for name in _DECIDING)
    app = _deciding_app(values, last_seen=_time(r["last_seen"]), last_command=r["last_command"])
    return AppRow(
        app=app,
        secret=r["broker_secret"],
        rev=r["rev"],
        pending_sync=bool(r["pending_sync"]),
        sync_error=r["sync_error"],
        source=r["source"],
    )


def _deciding_app(
    values: tuple[Any, ...], *, last_seen: datetime | None = None, last_command: str | None = None
) -> App:
    app_id, name, scopes, created_at, enabled, home_assistant, rate_limit, cidrs = values
    return App(
        id=app_id,
        name=name,
        scopes=frozenset(Scope(s) for s in json.loads(scopes)),
        created_at=datetime.fromisoformat(created_at),
        enabled=bool(enabled),
        home_assistant=bool(home_assistant),
        rate_limit_per_minute=rate_limit,
        allow_cidrs=tuple(json.loads(cidrs)),
        last_seen=last_seen,
        last_command=last_command,
    )


class AppTable:
    """SQL for the registry; every method is one statement or one short transaction."""

    def __init__(self, store: Store, origin: str) -> None:
        self._store = store
        self._origin = origin  # tells our own change records from another process's
        # Per app id, the last row `deciding` read and the App parsed from it.
        self._parsed: dict[str, tuple[tuple[Any, ...], App]] = {}

    def migrate(self) -> None:
        self._store.migrate("apps", MIGRATIONS)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._store.transaction()

    def get(self, app_id: str) -> AppRow | None:
        rows = self._store.query("SELECT * FROM apps WHERE id = ?", (app_id,))
        return to_row(rows[0]) if rows else None

    def deciding(self, app_id: str) -> App | None:
        """The app as a command's decision needs it: one query each time (another process may
        have revoked it a moment ago), but the row is parsed only when it has changed, since
        `touch` rewrites the activity columns on every command and nothing else as often."""
        rows = self._store.query(_SELECT_DECIDING, (app_id,))
        if not rows:
            self._parsed.pop(app_id, None)
            return None
        values = tuple(rows[0])
        parsed = self._parsed.get(app_id)
        if parsed is not None and parsed[0] == values:
            return parsed[1]
        app = _deciding_app(values)
        self._parsed[app_id] = (values, app)
        return app

    def all(self) -> list[AppRow]:
        return [to_row(r) for r in self._store.query("SELECT * FROM apps ORDER BY id")]

    def exists_folded(self, app_id: str) -> str | None:
        """An existing id equal to `app_id` ignoring case (`Alice` vs `alice` confuse owners)."""
        rows = self._store.query("SELECT id FROM apps WHERE lower(id) = lower(?)", (app_id,))
        return str(rows[0]["id"]) if rows else None

    def home_assistant(self) -> AppRow | None:
        rows = self._store.query("SELECT * FROM apps WHERE home_assistant = 1")
        return to_row(rows[0]) if rows else None

    def removals(self) -> list[str]:
        """Revoked apps whose broker identity may still exist."""
        rows = self._store.query("SELECT app_id FROM app_removals WHERE broker_done = 0")
        return [str(r["app_id"]) for r in rows]

    def revoked_at(self, app_id: str) -> str | None:
        rows = self._store.query(
            "SELECT requested_at FROM app_removals WHERE app_id = ?", (app_id,)
        )
        return str(rows[0]["requested_at"]) if rows else None

    def removal_errors(self) -> dict[str, str | None]:
        rows = self._store.query(
            "SELECT app_id, sync_error FROM app_removals WHERE broker_done = 0"
        )
        return {str(r["app_id"]): r["sync_error"] for r in rows}

    def insert(self, conn: sqlite3.Connection, app: App, secret: str | None, source: str) -> None:
        conn.execute(
            "INSERT INTO apps (id, name, scopes, created_at, enabled, home_assistant, "
            "rate_limit_per_minute, allow_cidrs, broker_secret, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                app.id,
                app.name,
                scopes_json(app.scopes),
                app.created_at.isoformat(),
                int(app.enabled),
                int(app.home_assistant),
                app.rate_limit_per_minute,
                json.dumps(list(app.allow_cidrs)),
                secret,
                source,
            ),
        )
        conn.execute("DELETE FROM app_removals WHERE app_id = ?", (app.id,))
        self._record(conn, app.id, "app.added")

    def update(
        self, conn: sqlite3.Connection, app_id: str, kind: str, *, broker: bool, **fields: Any
    ) -> None:
        """Set fields, bump the revision; `broker` marks the change as not yet on the broker."""
        assert set(fields) <= MUTABLE, fields
        sets = "".join(f"{name} = ?, " for name in fields)
        conn.execute(
            f"UPDATE apps SET {sets}rev = rev + 1, "  # noqa: S608 - names checked against MUTABLE
            "pending_sync = CASE WHEN ? THEN 1 ELSE pending_sync END WHERE id = ?",
            (*fields.values(), int(broker), app_id),
        )
        self._record(conn, app_id, kind)
        if "scopes" in fields:
            conn.execute(
                "INSERT INTO app_scope_history (app_id, scopes) VALUES (?, ?)",
                (app_id, fields["scopes"]),
            )

    def delete(self, conn: sqlite3.Connection, app_id: str, requested_at: datetime) -> None:
        conn.execute("DELETE FROM apps WHERE id = ?", (app_id,))
        # Its tokens die with it (a client is tied to one registration), so its history may go.
        conn.execute("DELETE FROM app_scope_history WHERE app_id = ?", (app_id,))
        conn.execute(
            "INSERT OR REPLACE INTO app_removals (app_id, requested_at, broker_done) "
            "VALUES (?, ?, 0)",
            (app_id, requested_at.isoformat()),
        )
        self._record(conn, app_id, "app.revoked")

    def touch(self, app_id: str, seen: datetime, command: str | None) -> None:
        self._store.query(
            "UPDATE apps SET last_seen = ?, last_command = COALESCE(?, last_command) WHERE id = ?",
            (seen.isoformat(), command, app_id),
        )

    def mark_synced(self, revs: Sequence[tuple[str, int]], removed: Sequence[str]) -> None:
        """Clear pending flags for the revisions applied, and forget the removals done."""
        with self._store.transaction() as conn:
            conn.executemany(
                "UPDATE apps SET pending_sync = 0, sync_error = NULL WHERE id = ? AND rev = ?", revs
            )
            conn.executemany(
                "UPDATE app_removals SET broker_done = 1, sync_error = NULL WHERE app_id = ?",
                [(app_id,) for app_id in removed],
            )

    def mark_failed(self, app_ids: Sequence[str], error: str) -> None:
        with self._store.transaction() as conn:
            conn.executemany(
                "UPDATE apps SET pending_sync = 1, sync_error = ? WHERE id = ?",
                [(error, app_id) for app_id in app_ids],
            )
            conn.executemany(
                "UPDATE app_removals SET sync_error = ? WHERE app_id = ?",
                [(error, app_id) for app_id in app_ids],
            )

    def has_pending(self) -> bool:
        rows = self._store.query(
            "SELECT EXISTS (SELECT 1 FROM apps WHERE pending_sync = 1) "
            "OR EXISTS (SELECT 1 FROM app_removals WHERE broker_done = 0) AS pending"
        )
        return bool(rows[0]["pending"])

    def changes_after(self, seq: int) -> list[tuple[int, str, str]]:
        """Changes made by other processes after `seq`: (seq, app id, kind)."""
        rows = self._store.query(
            "SELECT seq, app_id, kind FROM app_changes WHERE seq > ? AND origin != ? ORDER BY seq",
            (seq, self._origin),
        )
        return [(int(r["seq"]), str(r["app_id"]), str(r["kind"])) for r in rows]

    def scope_mark(self) -> int:
        """The newest entry of the scope history (0 for none)."""
        rows = self._store.query("SELECT COALESCE(MAX(seq), 0) AS seq FROM app_scope_history")
        return int(rows[0]["seq"])

    def scopes_since(self, app_id: str, mark: int) -> list[frozenset[Scope]]:
        """What the app held after each change of its scopes newer than `mark`, oldest first."""
        rows = self._store.query(
            "SELECT scopes FROM app_scope_history WHERE app_id = ? AND seq > ? ORDER BY seq",
            (app_id, mark),
        )
        return [frozenset(Scope(s) for s in json.loads(r["scopes"])) for r in rows]

    def last_change(self) -> int:
        rows = self._store.query("SELECT COALESCE(MAX(seq), 0) AS seq FROM app_changes")
        return int(rows[0]["seq"])

    def _record(self, conn: sqlite3.Connection, app_id: str, kind: str) -> None:
        conn.execute(
            "INSERT INTO app_changes (app_id, kind, origin) VALUES (?, ?, ?)",
            (app_id, kind, self._origin),
        )
        # Only recent changes matter to a process polling every second; keep the table small.
        conn.execute(
            "DELETE FROM app_changes WHERE seq <= (SELECT MAX(seq) FROM app_changes) - ?",
            (KEEP_CHANGES,),
        )
