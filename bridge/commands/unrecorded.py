"""Endings the audit log could not take, kept in SQLite until it can.

A command's outcome record is appended when its ending is known. If the log fails just then, the
pipeline halts and the app still gets its result (the failure named in `detail`), but the log
holds the decision only. The next start answers every allowed decision without an outcome as
interrupted ("may have run"), which would contradict the result the app already has, or say
"may have run" of a command that was never sent. So the ending is kept here under its decision
record's seq, and that start writes it as the outcome (with `ended_at`, when it was known) and
sends the same result again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from bridge.commands.storage import reading, writing
from bridge.model import CommandStatus
from bridge.store import Store

MIGRATIONS = ("CREATE TABLE unrecorded_endings (seq INTEGER PRIMARY KEY, ending TEXT NOT NULL)",)


@dataclass(frozen=True, slots=True)
class KeptEnding:
    """A final result sent while its outcome record could not be written."""

    status: CommandStatus
    reason: str
    detail: str
    ended_at: datetime


class UnrecordedEndings:
    """`keep`, `take` and `drop` endings by their decision record's seq. StateError on failure."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self) -> None:
        """Create the table if needed."""
        self.store.migrate("unrecorded_endings", MIGRATIONS)

    def keep(self, seq: int, ending: KeptEnding) -> None:
        doc = {
            "status": ending.status.value,
            "reason": ending.reason,
            "detail": ending.detail,
            "ended_at": ending.ended_at.isoformat(),
        }
        with writing(self.store, "unrecorded endings") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO unrecorded_endings (seq, ending) VALUES (?, ?)",
                (seq, json.dumps(doc)),
            )

    def take(self, seq: int) -> KeptEnding | None:
        """The ending kept for the decision record `seq` (None: none, or not readable)."""
        rows = reading(
            self.store,
            "unrecorded endings",
            "SELECT ending FROM unrecorded_endings WHERE seq = ?",
            (seq,),
        )
        if not rows:
            return None
        try:
            doc = json.loads(rows[0]["ending"])
            return KeptEnding(
                CommandStatus(doc["status"]),
                str(doc["reason"]),
                str(doc["detail"]),
                datetime.fromisoformat(doc["ended_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # a damaged row: the command is answered as interrupted, as before

    def drop(self, seq: int) -> None:
        with writing(self.store, "unrecorded endings") as conn:
            conn.execute("DELETE FROM unrecorded_endings WHERE seq = ?", (seq,))
