"""How far back a start reads the audit log: only past the point an earlier start settled.

A start looks in the log for two things (bridge.commands.recover): final results the broker may
not have taken (bridge.commands.delivery), and commands allowed without an outcome. The log is
kept forever, and reading all of it made every start slower, and bigger in memory, with every
month the bridge ran. Yet a start leaves nothing behind it to find: it answers every command
still open (an outcome record) and sends every result still owed again. So once one has done so,
the seq it read up to is remembered here, and the next start reads only the records after it.

What "settled up to S" promises: no allowed decision at or before S is without an outcome after
it, and no final result at or before S is owed (the broker confirmed it, or it was already older
than `REPUBLISH_WINDOW_S` and is never sent again). Both stay true as the log grows: a later
record cannot reopen a decision (a new decision is a new record, after S) nor make a result
younger. So S is the newest record the start read, but before any decision it left open (an
owner's command whose `ownerlink command` still runs: bridge.commands.inflight) and any result
it sent again, whose PUBACK a kill may still beat.

No S (the first start after an upgrade) or an S past the log's head (a log restored from an
older copy) means a read of the whole log, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.audit.read import NewestSeq, records_after
from bridge.commands.recover import after_a_stop
from bridge.store import Store

# state_meta: every record up to this seq was dealt with by a start (see the module docstring).
SETTLED_KEY = "audit_settled_through"

Reader = Callable[[Path, int], Iterable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class StartRead:
    """What a start found after the settled point: the final results recorded after the
    delivery mark, the allowed decisions without an outcome, and the newest seq it read."""

    results: list[Mapping[str, Any]]
    interrupted: list[Mapping[str, Any]]
    newest: int


def read_after(
    directory: Path,
    *,
    settled: int,
    mark: int,
    oldest: datetime | None = None,
    read: Reader = records_after,
) -> StartRead:
    """One pass, oldest first, over the records after `settled` (the files before it are not
    opened); the results kept are those after `mark` and not before `oldest`. Blocking file
    reads: call it off the event loop."""
    read_so_far = NewestSeq(read(directory, settled), settled)
    results, interrupted = after_a_stop(read_so_far, after_seq=mark, oldest=oldest)
    return StartRead(results, interrupted, read_so_far.newest)


def settled_through(newest: int, still_open: Iterable[int]) -> int:
    """The settled point after a start that read up to `newest`: just before the oldest of
    `still_open` (the seqs of decisions it left unanswered and of results it sent again)."""
    return max(0, min([newest, *(seq - 1 for seq in still_open)]))


def load_settled(store: Store, head_seq: int) -> int:
    """The settled point, or 0 (read everything) when there is none or it lies past the
    log's `head_seq`: a log shorter than the point is not the one it was taken from."""
    text = store.meta(SETTLED_KEY)
    settled = int(text) if text is not None and text.isdigit() else 0
    return settled if settled <= head_seq else 0


def save_settled(store: Store, seq: int) -> None:
    store.set_meta(SETTLED_KEY, str(seq))
