"""The audit page: newest first, filtered by app, vehicle, kind and decision; chain; export."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bridge.web.context import ctx
from bridge.web.pagerouter import PageRouter
from bridge.web.render import page
from bridge.web.sessions import Session

router = PageRouter()

PAGE_ROWS = 200
EXPORT_BATCH = 500  # records per chunk of an export
# Shown in their own columns; everything else is listed as details.
COLUMNS = ("seq", "ts", "kind", "app", "vehicle")
HIDDEN = frozenset({"hash", "prev"})


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Empty fields match everything. `kind` matches exactly or as a dotted prefix (`app`)."""

    app: str = ""
    vehicle: str = ""
    kind: str = ""
    decision: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AuditFilter:
        def get(key: str) -> str:
            return str(query.get(key, "")).strip()[:100]

        return cls(get("app"), get("vehicle"), get("kind"), get("decision"))

    def matches(self, record: Mapping[str, Any]) -> bool:
        kind = str(record.get("kind", ""))
        return (
            (not self.app or record.get("app") == self.app)
            and (not self.vehicle or record.get("vehicle") == self.vehicle)
            and (not self.kind or kind == self.kind or kind.startswith(self.kind + "."))
            and (not self.decision or decision_of(record) == self.decision)
        )

    def query_string(self) -> str:
        """The filter as a query string, for the export link."""
        pairs = {
            "app": self.app,
            "vehicle": self.vehicle,
            "kind": self.kind,
            "decision": self.decision,
        }
        return urlencode({k: v for k, v in pairs.items() if v})


def decision_of(record: Mapping[str, Any]) -> str:
    """Command decisions say `decision`; logins and outcomes say `outcome` or `status`."""
    for key in ("decision", "outcome", "status"):
        if isinstance(record.get(key), str):
            return str(record[key])
    return ""


def details(record: Mapping[str, Any]) -> str:
    rest = {k: v for k, v in record.items() if k not in COLUMNS and k not in HIDDEN}
    return json.dumps(rest, sort_keys=True, default=str)


class _Choices:
    """The values present in the log, for the filter drop-downs."""

    def __init__(self) -> None:
        self.found: dict[str, set[str]] = {k: set() for k in ("app", "vehicle", "kind", "decision")}

    def add(self, record: Mapping[str, Any]) -> None:
        for key in ("app", "vehicle", "kind"):
            if isinstance(record.get(key), str):
                self.found[key].add(str(record[key]))
        if decision_of(record):
            self.found["decision"].add(decision_of(record))

    def sorted(self) -> dict[str, list[str]]:
        return {key: sorted(values) for key, values in self.found.items()}


def _with_active(choices: dict[str, list[str]], wanted: AuditFilter) -> dict[str, list[str]]:
    """The choices plus each active filter value the log does not hold as such (a kind prefix
    like `app`, an app no longer in the log), so the drop-down shows the filter that is on
    instead of "any"."""
    out = {}
    for key, values in choices.items():
        active = str(getattr(wanted, key))
        out[key] = values if not active or active in values else [active, *values]
    return out


@router.get("/audit")
async def audit_page(request: Request, session: Session) -> Response:
    """Matching records newest first, the chain status and filter choices."""
    context = ctx(request)
    wanted = AuditFilter.from_query(request.query_params)
    # Reading and re-hashing the whole log is file I/O and CPU: keep it off the event loop.
    found = await run_in_threadpool(lambda: _scan(context.audit_reader.newest_first(), wanted))
    chain = await run_in_threadpool(context.audit_reader.verify)
    rows = [{"record": r, "decision": decision_of(r), "details": details(r)} for r in found.shown]
    return page(
        request,
        "audit.html",
        rows=rows,
        total=found.total,
        shown=len(rows),
        wanted=wanted,
        choices=_with_active(found.choices, wanted),
        chain=chain,
        export_query=wanted.query_string(),
    )


@dataclass(frozen=True, slots=True)
class _Scan:
    shown: list[Mapping[str, Any]]  # the newest PAGE_ROWS matching records, newest first
    total: int  # how many records match
    choices: dict[str, list[str]]


def _scan(newest_first: Iterable[Mapping[str, Any]], wanted: AuditFilter) -> _Scan:
    """One pass that keeps only what the page shows: a list of every record, built on every
    view, held memory that grew with every month the bridge ran (185 MB for a 30 MB log)."""
    shown: list[Mapping[str, Any]] = []
    total = 0
    choices = _Choices()
    for record in newest_first:
        choices.add(record)
        if wanted.matches(record):
            total += 1
            if len(shown) < PAGE_ROWS:
                shown.append(record)
    return _Scan(shown, total, choices.sorted())


@router.get("/audit/export")
async def export(request: Request, session: Session) -> Response:
    """The matching records as JSON lines, oldest first and complete (hashes included), so the
    export can be checked against the chain."""
    context = ctx(request)
    wanted = AuditFilter.from_query(request.query_params)

    def lines() -> Iterator[str]:
        # Produced as the log is read (Starlette pulls a plain iterator on a worker thread), so
        # the export of a log grown over years is never held whole in memory; in batches, as
        # each pull is a trip to a worker thread.
        batch: list[str] = []
        for record in context.audit_reader.records():
            if wanted.matches(record):
                batch.append(json.dumps(record, sort_keys=True, separators=(",", ":"), default=str))
            if len(batch) >= EXPORT_BATCH:
                yield "\n".join(batch) + "\n"
                batch = []
        if batch:
            yield "\n".join(batch) + "\n"

    headers = {"Content-Disposition": 'attachment; filename="ownerlink-audit.jsonl"'}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)
