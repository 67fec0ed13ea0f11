"""After a stop: commands that were allowed (and may have reached the car) but have no outcome,
and the commands of the last minute that the rate limits must still count."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from bridge.commands.delivery import is_final_result, record_time
from bridge.commands.reasons import BEFORE_RATE_LIMIT

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


def after_a_stop(
    records: Iterable[Mapping[str, Any]], *, after_seq: int, oldest: datetime | None = None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """In one pass over the audit log (oldest first, read as it goes): the final results
    recorded after `after_seq` and not before `oldest` (for `delivery.undelivered`, which sends
    none older than its window) and the `unfinished` decisions. Nothing else is kept: a list of
    all the log, built at every start, took memory that grew with every month the bridge ran
    (185 MB for a log of 30 MB), and so did every result of a long log read after a mark far
    behind (the first start after an upgrade: 240 MB at its peak for 20,000 results)."""
    results: list[Mapping[str, Any]] = []

    def recent(record: Mapping[str, Any]) -> bool:
        at = record_time(record)
        return oldest is None or at is None or at >= oldest

    def noting_results() -> Iterator[Mapping[str, Any]]:
        for record in records:
            seq = record.get("seq")
            if (
                isinstance(seq, int)
                and seq > after_seq
                and is_final_result(record)
                and recent(record)
            ):
                results.append(record)
            yield record

    interrupted = unfinished(noting_results())
    return results, interrupted


def recent_charges(
    newest_first: Iterable[Mapping[str, Any]], since: datetime
) -> list[tuple[str, str, float]]:
    """(app, vehicle, epoch seconds) of every command decided from `since` on that used up a
    rate allowance, oldest first. The records are read newest first and only until one is older
    than `since`, so a long log costs no more than its last minute."""
    charges: list[tuple[str, str, float]] = []
    for record in newest_first:
        at = record_time(record)
        if at is None:
            continue
        if at < since:
            break
        if _charged(record):
            charges.append((str(record["app"]), str(record["vehicle"]), at.timestamp()))
    charges.reverse()
    return charges


def _charged(record: Mapping[str, Any]) -> bool:
    """A decision that got past the rate-limit check counted against it (see `_spend`)."""
    return (
        record.get("kind") == "command.decision"
        and isinstance(record.get("app"), str)
        and isinstance(record.get("vehicle"), str)
        and record.get("reason") not in BEFORE_RATE_LIMIT
    )
