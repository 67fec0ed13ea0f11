"""The audit log as witness that the state database was lost or replaced.

The database holds what makes refusals stick: revoked apps, command ids already executed, the
API budget's count, OAuth grants, the owner's password. Delete it (or empty it) and the daemon
would start as if none of that had happened: an app revoked by the owner but still declared in
the config file would be back with every scope, and an id already executed would run again.

A database remembers how far the audit log had got when it was created (`Store.open`). Records
up to there that only a database could have produced (an app registered, a command decided, a
token issued, an owner login) mean an older database existed: this one replaced it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bridge.audit.chain import read_records
from bridge.store import BORN_AT_AUDIT_HEAD, Store

# Record kinds written only while a state database existed (registry, pipeline, OAuth, page).
DATABASE_KINDS = ("app.", "command.", "oauth.", "owner.", "api.")


def replaced_database(store: Store, directory: Path) -> str | None:
    """Why the database looks replaced, naming the record that proves it; None if it does not."""
    return replaced_by_mark(store.meta(BORN_AT_AUDIT_HEAD), directory, store.path)


def replaced_by_mark(mark: str | None, directory: Path, database: Path) -> str | None:
    """`replaced_database` for a database read elsewhere (doctor reads it read-only).

    A database from before this check existed has no birth mark and is taken as it is; so is
    one born beside a chain that has since been moved aside (a new start, on purpose).
    """
    born = _mark(mark)
    if born is None:
        return None
    born_seq, born_hash = born
    proof: tuple[int, str] | None = None  # the first record only a database could have written
    last: dict[str, object] = {}
    for record in read_records(directory):
        seq, kind = record.get("seq"), record.get("kind")
        if not isinstance(seq, int) or seq > born_seq:
            break
        if proof is None and isinstance(kind, str) and kind.startswith(DATABASE_KINDS):
            proof = (seq, kind)
        last = record
    if last.get("seq") != born_seq or last.get("hash") != born_hash:
        return None  # not the chain it was born beside: the owner started a new one since
    if proof is None:
        return None
    return (
        f"the state database {database} is newer than the audit log beside it: record "
        f"{proof[0]} ({proof[1]}) was written by an earlier database, so this one replaced it, "
        "and app revocations, executed command ids and the API budget's count went with it. "
        "Restore the database from a backup; or, to start over on purpose, stop Ownerlink, move "
        "the audit files into a dated folder (keep them: they are the evidence), run "
        "`ownerlink audit forget-head` (the broker still holds the old log's head), and start again"
    )


def lost_database(directory: Path, database: Path) -> str | None:
    """Why a database made now would be refused: the log beside it has records only a database
    writes, so the one that wrote them is gone. Doctor asks this of a missing database file,
    which the daemon would create (born at the log's head) and then refuse to run on."""
    proof = _first_database_record(read_records(directory))
    if proof is None:
        return None
    return (
        f"the state database {database} is missing, but record {proof[0]} ({proof[1]}) of the "
        "audit log beside it was written by a database: the daemon would make a new one and "
        "refuse to start on it, as app revocations, executed command ids and the API budget's "
        "count went with the old one. Restore the database from a backup; or, to start over on "
        "purpose, stop Ownerlink, move the audit files into a dated folder (keep them: they are "
        "the evidence), run `ownerlink audit forget-head` (the broker still holds the old log's "
        "head), and start again"
    )


def _first_database_record(records: Iterable[dict[str, object]]) -> tuple[int, str] | None:
    for record in records:
        seq, kind = record.get("seq"), record.get("kind")
        if isinstance(seq, int) and isinstance(kind, str) and kind.startswith(DATABASE_KINDS):
            return seq, kind
    return None


def _mark(text: str | None) -> tuple[int, str] | None:
    """`seq:hash` → (seq, hash); None for no mark, or a database born beside an empty log."""
    seq, _, digest = (text or "").partition(":")
    if not seq.isdigit() or int(seq) == 0:
        return None
    return int(seq), digest
