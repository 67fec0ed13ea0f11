"""Alert events: raised by any part, delivered by the alerts sink (MQTT event topic, webhook)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge.audit.pending import Pending


class AlertKind(enum.StrEnum):
    APP_ADDED = "app_added"
    SCOPE_GRANTED = "sensitive_scope_granted"
    APP_REVOKED = "app_revoked"
    COMMAND_REFUSED = "command_refused"
    STEPUP_FAILED = "stepup_failed"
    STEPUP_LOCKOUT = "stepup_lockout"
    RELOGIN_NEEDED = "relogin_needed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    ACCOUNT_SUSPENDED = "account_suspended"
    AUDIT_TAMPERED = "audit_tampered"
    AUDIT_FAILED = "audit_failed"
    BROKER_DRIFT = "broker_drift"
    REGISTRY_BEHIND_LOG = "registry_behind_log"
    CLOCK_JUMPED = "clock_jumped"


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    message: str
    ts: datetime
    app: str | None = None
    vehicle: str | None = None
    account: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "event_type": self.kind.value,
            "message": self.message,
            "ts": self.ts.isoformat(),
        }
        for key in ("app", "vehicle", "account"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.details:
            doc["details"] = self.details
        return doc


class AlertSink(Protocol):
    """Takes an alert without blocking; delivery (MQTT, webhook) happens elsewhere."""

    def emit(self, alert: Alert) -> None: ...


class CollectingAlerts:
    """An AlertSink that keeps alerts in a list (tests, one-off commands)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


class AuditSink(Protocol):
    """The audit log as other parts see it: `append` returns once the record is durable (fsync'd).

    Record kinds are dotted: `app.added`, `app.scopes_changed`, `app.revoked`, `command.decision`,
    `command.outcome`, `api.access`, `owner.login`, `audit.repaired`, … Fields are plain JSON values
    and never secrets. Raises bridge.errors.AuditWriteError if it cannot be made durable.
    """

    def append(self, kind: str, **fields: Any) -> dict[str, Any]: ...


class CommandAudit(AuditSink, Protocol):
    """The audit log as the command pipeline uses it: also `append_pending`, for a decision whose
    request may be prepared while the record is flushed (`bridge.audit.log.AuditLog`)."""

    def append_pending(self, kind: str, **fields: Any) -> Pending: ...


class CollectingAudit:
    """An AuditSink that keeps records in a list (tests only; not durable, not chained)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"seq": len(self.records) + 1, "kind": kind, **fields}
        self.records.append(record)
        return record

    def append_pending(self, kind: str, **fields: Any) -> Pending:
        return Pending.durable_now(self.append(kind, **fields))
