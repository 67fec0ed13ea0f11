"""Until when the car maker asked an account for no calls (a 429's Retry-After, a suspension),
kept across restarts: a daemon restarted during one (an upgrade, a reboot, systemd after a crash)
must not call a throttled or suspended account at start, which is how accounts get suspended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.polling.policy import Block, Mode
from bridge.store import Store

MIGRATIONS = (
    # One row per account: its block, and (for a 429) the car maker's own Retry-After instant.
    """CREATE TABLE provider_holds (
        account TEXT PRIMARY KEY,
        until REAL NOT NULL,
        mode TEXT NOT NULL,
        reason TEXT NOT NULL,
        retry_after REAL
    )""",
)


@dataclass(frozen=True, slots=True)
class Hold:
    """A block a run left behind, and the Retry-After inside it (commands wait for that only)."""

    block: Block
    retry_after: datetime | None


class AccountHolds:
    """The accounts' holds in the state database."""

    def __init__(self, *, store: Store) -> None:
        self._store = store

    def start(self) -> None:
        """Create or upgrade the table (idempotent)."""
        self._store.migrate("provider_holds", MIGRATIONS)

    def keep(self, account: str, block: Block, retry_after: datetime | None) -> None:
        """Remember the account's block (replacing the one before)."""
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO provider_holds (account, until, mode, reason, retry_after)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    account,
                    block.until.timestamp(),
                    block.mode.value,
                    block.reason,
                    None if retry_after is None else retry_after.timestamp(),
                ),
            )

    def forget(self, account: str) -> None:
        """The owner logged in again (or an operator says go): the hold is over."""
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM provider_holds WHERE account = ?", (account,))

    def current(self, account: str, now: datetime) -> Hold | None:
        """The account's hold if it still holds at `now`."""
        rows = self._store.query(
            "SELECT until, mode, reason, retry_after FROM provider_holds WHERE account = ?",
            (account,),
        )
        if not rows or float(rows[0]["until"]) <= now.timestamp():
            return None
        row = rows[0]
        block = Block(_at(float(row["until"])), Mode(row["mode"]), str(row["reason"]))
        retry_after = None if row["retry_after"] is None else _at(float(row["retry_after"]))
        return Hold(block, retry_after)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
