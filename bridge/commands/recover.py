"""After a crash: commands that were allowed (and may have reached the car) but have no outcome."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The outcome written for them: the car may or may not have run the command, so never "failed".
INTERRUPTED = "interrupted"
INTERRUPTED_DETAIL = "the daemon stopped before the car answered; the command may have run"


def unfinished(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`command.decision` records that allowed a command and were never followed by its
    `command.outcome` (pure: the records are the audit log, oldest first)."""
    waiting: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for record in records:
        key = (record.get("app"), record.get("id"))
        if record.get("kind") == "command.decision" and record.get("decision") == "allowed":
            waiting[key] = record
        elif record.get("kind") == "command.outcome":
            waiting.pop(key, None)
    return list(waiting.values())
