"""After a crash: commands that were allowed (and may have reached the car) but have no outcome."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bridge.commands.delivery import is_final_result

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
    records: Iterable[Mapping[str, Any]], *, after_seq: int
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """In one pass over the audit log (oldest first, read as it goes): the final results
    recorded after `after_seq` (for `delivery.undelivered`) and the `unfinished` decisions.
    The log is never pruned: a list of all of it, built at every start, took memory that grew
    with every month the bridge ran (185 MB for a log of 30 MB)."""
    results: list[Mapping[str, Any]] = []

    def noting_results() -> Iterator[Mapping[str, Any]]:
        for record in records:
            seq = record.get("seq")
            if isinstance(seq, int) and seq > after_seq and is_final_result(record):
                results.append(record)
            yield record

    interrupted = unfinished(noting_results())
    return results, interrupted
