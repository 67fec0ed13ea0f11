"""Final results that outlive a crash: published again after a restart until the broker took them.

A command's final result is decided by an audit record (`command.outcome`, or a refusing
`command.decision`) and published right after it. A `kill -9` between the two used to lose the
result: the record said how the command ended, but the app waiting on its result topic never
heard. So every final result goes out at QoS 1 and its PUBACK is remembered as a watermark in
SQLite: every final-result record up to `seq` has been taken by the broker. On start, the final
results recorded after the watermark are published again, rebuilt from their records.

The price is the other side of the same window: a result the broker took just before the kill
(its PUBACK not yet written down) is published twice. The copy is the same document (same id,
status, reason and `ts`), so an app that keys on `id` sees nothing new; MQTT QoS 1 makes the same
promise, at least once. Only results from the last `REPUBLISH_WINDOW_S` are sent again: an answer
older than that has no one left waiting for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from bridge.commands.results import CommandResult
from bridge.commands.storage import reading, writing
from bridge.logs import get_logger
from bridge.model import CommandStatus
from bridge.mqtt.topics import Publish, Topics
from bridge.store import Store

MIGRATIONS = (
    "CREATE TABLE result_delivery (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)",
)
REPUBLISH_WINDOW_S = 15 * 60

log = get_logger(__name__)


class ConfirmingSink(Protocol):
    """Publishes at QoS 1 and calls `on_confirmed` on the event loop once the broker has it."""

    def publish_confirmed(self, message: Publish, on_confirmed: Callable[[], None]) -> None: ...


def is_final_result(record: Mapping[str, Any]) -> bool:
    """Does this audit record end a command whose result an MQTT app is waiting for?"""
    if record.get("source") != "mqtt" or not record.get("app") or not record.get("vehicle"):
        return False
    kind = record.get("kind")
    return kind == "command.outcome" or (
        kind == "command.decision" and record.get("decision") == "refused"
    )


def record_time(record: Mapping[str, Any] | None) -> datetime | None:
    """The `ts` of an audit record, or None when it has none (test sinks write none)."""
    ts = record.get("ts") if record is not None else None
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def result_time(record: Mapping[str, Any] | None) -> datetime | None:
    """The `ts` of the result a final-result record stands for: the record's own, or, for an
    ending recorded late (`bridge.commands.unrecorded`), when it was known and first sent."""
    ended_at = record.get("ended_at") if record is not None else None
    if isinstance(ended_at, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(ended_at)
    return record_time(record)


def result_of(record: Mapping[str, Any]) -> CommandResult:
    """The result a final-result record stands for: what was, or should have been, sent."""
    ts = result_time(record)
    if ts is None:
        raise ValueError("the record has no time")
    refused = record.get("kind") == "command.decision"
    status = CommandStatus.REJECTED if refused else CommandStatus(str(record.get("status")))
    return CommandResult(
        id=str(record.get("id", "")),
        command=str(record.get("command", "")),
        action=record.get("action"),
        status=status,
        reason=str(record.get("reason", "")),
        ts=ts,
        app=record.get("app"),
        vehicle=record.get("vehicle"),
        detail=str(record.get("detail") or ""),
    )


def oldest_owed(now: datetime) -> datetime:
    """The time before which no final result is sent again (`REPUBLISH_WINDOW_S`)."""
    return now - timedelta(seconds=REPUBLISH_WINDOW_S)


def undelivered(
    records: Iterable[Mapping[str, Any]], *, after_seq: int, now: datetime
) -> list[tuple[int, CommandResult]]:
    """(seq, result) for final results recorded after `after_seq` and not older than the window
    (pure: `records` are the audit log, oldest first)."""
    oldest = oldest_owed(now)
    found = []
    for record in records:
        seq = record.get("seq")
        if not isinstance(seq, int) or seq <= after_seq or not is_final_result(record):
            continue
        try:
            result = result_of(record)
        except ValueError:  # a record we did not write: verify reports it, not us
            continue
        if result.ts >= oldest:
            found.append((seq, result))
    return found


class ResultDelivery:
    """Sends final results and keeps the watermark of the ones the broker confirmed.

    Call on the event loop only. `start(head)` before the first `send`.
    """

    def __init__(self, *, store: Store, sink: ConfirmingSink, topics: Topics) -> None:
        self.store = store
        self.sink = sink
        self.topics = topics
        self._mark = 0  # every final result with seq <= this was confirmed
        self._pending: set[int] = set()  # sent, not yet confirmed
        self._highest = 0  # the highest seq sent

    def start(self, head_seq: int) -> int:
        """Load the watermark and return it. The first start (or a log that is shorter than the
        mark, restored from elsewhere) begins at the log's head: nothing older is owed."""
        self.store.migrate("delivery", MIGRATIONS)
        rows = reading(self.store, "result delivery", "SELECT seq FROM result_delivery", ())
        mark = int(rows[0][0]) if rows else -1
        if mark < 0 or mark > head_seq:
            mark = head_seq
            self._save(mark)
        self._mark = self._highest = mark
        return mark

    def republish(self, owed: Iterable[tuple[int, CommandResult]]) -> int:
        """Send again what `undelivered` found; returns how many."""
        count = 0
        for seq, result in owed:
            self.send(result, seq)
            count += 1
        return count

    def send(self, result: CommandResult, seq: int) -> None:
        """Publish a final result recorded as audit record `seq`."""
        assert result.app is not None and result.vehicle is not None
        message = Publish(self.topics.result(result.app, result.vehicle), result.payload(), qos=1)
        self._pending.add(seq)
        self._highest = max(self._highest, seq)
        self.sink.publish_confirmed(message, lambda: self._confirmed(seq))

    def _confirmed(self, seq: int) -> None:
        self._pending.discard(seq)
        # Records are written and sent in seq order, but a reconnect can confirm them out of it.
        mark = min(self._pending) - 1 if self._pending else self._highest
        if mark > self._mark:
            self._mark = mark
            try:
                self._save(mark)
            except Exception:  # a lost mark means a duplicate after a crash, never a loss
                log.exception("could not record delivered command results", seq=mark)

    def _save(self, mark: int) -> None:
        with writing(self.store, "result delivery") as conn:
            conn.execute(
                "INSERT INTO result_delivery (id, seq) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                (mark,),
            )
