"""When each vehicle started moving or charging, kept so the activity prior survives restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.store import Store

KEEP = timedelta(days=28)  # four weeks: enough to learn a routine, short enough to follow a change

MIGRATIONS = (
    """CREATE TABLE polling_starts (
        vehicle TEXT NOT NULL,
        ts REAL NOT NULL
    );
    CREATE INDEX polling_starts_by_vehicle ON polling_starts (vehicle, ts)""",
    # When polling of a vehicle was first seen: the span the start counts are spread over.
    "CREATE TABLE polling_since (vehicle TEXT PRIMARY KEY, ts REAL NOT NULL)",
)


class ActivityHistory:
    """Activity starts per vehicle slug, kept for four weeks."""

    def __init__(self, *, store: Store) -> None:
        self._store = store

    def start(self) -> None:
        """Create or upgrade the tables (idempotent)."""
        self._store.migrate("polling_history", MIGRATIONS)

    def observing(self, vehicle: str, now: datetime) -> datetime:
        """Note that `vehicle` is polled from `now` on (kept if earlier); returns since when."""
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO polling_since (vehicle, ts) VALUES (?, ?) "
                "ON CONFLICT(vehicle) DO NOTHING",
                (vehicle, now.timestamp()),
            )
            row = conn.execute(
                "SELECT ts FROM polling_since WHERE vehicle = ?", (vehicle,)
            ).fetchone()
        return datetime.fromtimestamp(float(row[0]), UTC)

    def vehicles(self) -> list[str]:
        """Every vehicle slug ever polled from this state directory (every version kept this)."""
        return [str(r["vehicle"]) for r in self._store.query("SELECT vehicle FROM polling_since")]

    def record(self, vehicle: str, at: datetime) -> None:
        """Remember that `vehicle` started driving or charging at `at`; forget what is too old."""
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO polling_starts (vehicle, ts) VALUES (?, ?)", (vehicle, at.timestamp())
            )
            conn.execute(
                "DELETE FROM polling_starts WHERE vehicle = ? AND ts < ?",
                (vehicle, (at - KEEP).timestamp()),
            )

    def starts(self, vehicle: str, since: datetime) -> list[datetime]:
        rows = self._store.query(
            "SELECT ts FROM polling_starts WHERE vehicle = ? AND ts >= ? ORDER BY ts",
            (vehicle, since.timestamp()),
        )
        return [datetime.fromtimestamp(float(r["ts"]), UTC) for r in rows]
