"""Command-id de-duplication persisted in SQLite, so a replayed id is refused even after a restart.

Ids are kept per app (one app cannot block another's ids) for the configured window. Only ids of
commands that were allowed are remembered: the promise is "the same id executes at most once", and
a refused command (a missing step-up code, a rate limit) may be sent again under the same id. So
may one allowed but then rejected without reaching the car (`forget`).
"""

from __future__ import annotations

from bridge.commands.storage import reading, writing
from bridge.store import Store

MIGRATIONS = (
    "CREATE TABLE command_ids (app TEXT NOT NULL, id TEXT NOT NULL, seen_at REAL NOT NULL,"
    " PRIMARY KEY (app, id)) WITHOUT ROWID;"
    "CREATE INDEX command_ids_seen_at ON command_ids (seen_at)",
)
# Expired rows are swept every this many inserts; cheap enough and keeps the table small.
PRUNE_EVERY = 200


class DedupStore:
    """`seen` and `remember` command ids; times are epoch seconds from the caller's clock."""

    def __init__(self, *, store: Store, window_s: float) -> None:
        self.store = store
        self.window_s = window_s
        self._inserts = 0

    def start(self) -> None:
        """Create the table if needed."""
        self.store.migrate("commands", MIGRATIONS)

    def seen(self, app: str, command_id: str, now: float) -> bool:
        """Was this id executed for this app within the window?"""
        rows = reading(
            self.store,
            "command ids",
            "SELECT 1 FROM command_ids WHERE app = ? AND id = ? AND seen_at > ?",
            (app, command_id, now - self.window_s),
        )
        return bool(rows)

    def remember(self, app: str, command_id: str, now: float) -> None:
        """Record the id durably (the commit is fsync'd) before the command is forwarded."""
        with writing(self.store, "command ids") as conn:
            conn.execute(
                "INSERT INTO command_ids (app, id, seen_at) VALUES (?, ?, ?) "
                "ON CONFLICT (app, id) DO UPDATE SET seen_at = excluded.seen_at",
                (app, command_id, now),
            )
            self._inserts += 1
            if self._inserts % PRUNE_EVERY == 0:
                conn.execute("DELETE FROM command_ids WHERE seen_at <= ?", (now - self.window_s,))

    def forget(self, app: str, command_id: str) -> None:
        """Free an id whose command never reached the car after all (refused in its vehicle's
        queue, or rejected unsent): "at most once" is kept, and the client may retry with it."""
        with writing(self.store, "command ids") as conn:
            conn.execute("DELETE FROM command_ids WHERE app = ? AND id = ?", (app, command_id))
