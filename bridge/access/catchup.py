"""Registry changes the audit log holds and the state database does not (pure).

Every registry change writes its audit record and, in the same database transaction, that
record's seq (`REGISTRY_AT_SEQ`). The database can fall behind the log two ways: the owner
restores it from a backup older than the log (an SD card died), or the process dies between a
change's fsync'd record and its commit. Either way the log says what the owner did. What took
access away (a revocation, a pause, scopes withdrawn, a new password) must count again, or a
restore would quietly give a revoked app its access back; the owner's latest allowlist and rate
limit are set again as recorded. What gave access (an app added, scopes granted, an app resumed)
is left for the owner to do again: replaying a log must never open access by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.access.values import ChangeKind

REGISTRY_AT_SEQ = "registry_at_seq"

# The changes applied again from the log: all but those that gave access.
NARROWING = frozenset(
    {
        ChangeKind.REVOKED,
        ChangeKind.DISABLED,
        ChangeKind.SCOPES_WITHDRAWN,
        ChangeKind.PASSWORD_RESET,
        ChangeKind.ALLOWLIST_SET,
        ChangeKind.RATE_LIMIT_SET,
    }
)


@dataclass(frozen=True, slots=True)
class Missed:
    """One registry change in the log past the database's mark."""

    seq: int
    kind: ChangeKind
    app: str
    record: Mapping[str, Any]

    @property
    def narrowing(self) -> bool:
        return self.kind in NARROWING


def missed_changes(records: Iterable[Mapping[str, Any]], after_seq: int) -> list[Missed]:
    """The registry changes recorded after `after_seq`, oldest first."""
    kinds = {kind.value: kind for kind in ChangeKind}
    missed = []
    for record in records:
        seq, kind, app = record.get("seq"), kinds.get(str(record.get("kind"))), record.get("app")
        if isinstance(seq, int) and seq > after_seq and kind is not None and isinstance(app, str):
            missed.append(Missed(seq=seq, kind=kind, app=app, record=record))
    return missed
