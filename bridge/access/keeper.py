"""The broker side of the registry: apply each change with retries, remember what is pending.

Every push reads the newest rows and runs under one lock, so the last push always carries the
last change; `pending_sync` is cleared only for the revision that was pushed. Anything the broker
could not take stays pending (retried by the daemon's sync loop) and is reported as BROKER_DRIFT.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.access.broker import BrokerIdentity, Enforcement, SyncReport
from bridge.access.table import AppTable
from bridge.errors import BrokerError, StateError
from bridge.events import Alert, AlertKind, AlertSink, AuditSink
from bridge.logs import get_logger

log = get_logger(__name__)

# What can go wrong while changing the broker: it is unreachable/refuses, or a file write failed.
ENFORCEMENT_ERRORS = (BrokerError, StateError)
# A sync that raced with another process's change is repeated, at most this often.
SYNC_ROUNDS = 3


class BrokerKeeper:
    """Applies registry changes to an Enforcement and tracks what the broker has not taken."""

    def __init__(
        self,
        *,
        table: AppTable,
        enforcement: Enforcement,
        audit: AuditSink,
        alerts: AlertSink,
        clock: Callable[[], datetime],
        attempts: int,
        backoff_s: float,
        sleep: Callable[[float], None],
    ) -> None:
        self.enforcement = enforcement
        self._table = table
        self._audit = audit
        self._alerts = alerts
        self._clock = clock
        self._attempts = max(1, attempts)
        self._backoff = backoff_s
        self._sleep = sleep
        self._lock = threading.RLock()
        self._last_drift: tuple[str, ...] = ()

    def create(self, identity: BrokerIdentity, password: str) -> None:
        """Create the login, or raise BrokerError: without the password there is no retry later."""
        desired = [*self.identities(exclude=identity.app.id), identity]
        with self._lock:
            error = self._attempt(lambda: self.enforcement.create(identity, password, desired))
        if error is not None:
            raise BrokerError(
                f"could not create the broker login for {identity.app.id}: {error}"
                " (nothing was changed)"
            )

    def update(self, app_id: str) -> None:
        """Push the app's newest state (not a caller's copy: a later change may have landed)."""
        with self._lock:
            row = self._table.get(app_id)
            if row is None:
                return  # revoked meanwhile; the removal takes care of the broker
            identity = BrokerIdentity(row.app, row.secret)
            error = self._attempt(lambda: self.enforcement.update(identity, self.identities()))
            if error is None:
                self._table.mark_synced([(app_id, row.rev)], [])
            else:
                self._behind(app_id, error)

    def remove(self, app_id: str) -> None:
        with self._lock:
            error = self._attempt(lambda: self.enforcement.remove(app_id, self.identities()))
            if error is None:
                self._table.mark_synced([], [app_id])
            else:
                self._behind(app_id, error)

    def undo_create(self, app_id: str) -> None:
        """Take back a login whose registration failed (best effort, logged)."""
        with self._lock:
            error = self._attempt(lambda: self.enforcement.remove(app_id, self.identities()))
        if error is not None:
            log.warning("broker_undo_failed", app=app_id, error=error)

    def sync(self) -> SyncReport:
        """Reconcile the whole broker; raises BrokerError (pending flags stay) when it is down."""
        with self._lock:
            for _ in range(SYNC_ROUNDS):
                report, raced = self._sync_once()
                if not raced:
                    break
        self._report_drift(report)
        return report

    def identities(self, exclude: str | None = None) -> list[BrokerIdentity]:
        return [BrokerIdentity(r.app, r.secret) for r in self._table.all() if r.app.id != exclude]

    def _sync_once(self) -> tuple[SyncReport, bool]:
        """One reconcile; the flag says another process changed an app meanwhile (go again)."""
        rows = self._table.all()
        ids = {row.app.id for row in rows}
        removals = [app_id for app_id in self._table.removals() if app_id not in ids]
        desired = [BrokerIdentity(row.app, row.secret) for row in rows]
        try:
            report = self.enforcement.sync(desired, removals)
        except ENFORCEMENT_ERRORS as exc:
            self._table.mark_failed([r.app.id for r in rows if r.pending_sync] + removals, str(exc))
            raise BrokerError(f"broker sync failed: {exc}") from exc
        self._table.mark_synced([(row.app.id, row.rev) for row in rows], removals)
        now = {(row.app.id, row.rev) for row in self._table.all()}
        return report, now != {(row.app.id, row.rev) for row in rows}

    def _attempt(self, action: Callable[[], None]) -> str | None:
        """Run a broker change, retrying with exponential backoff; the last error or None."""
        delay, error = self._backoff, None
        for attempt in range(1, self._attempts + 1):
            try:
                action()
            except ENFORCEMENT_ERRORS as exc:
                error = str(exc)
                log.warning("broker_change_failed", attempt=attempt, error=error)
                if attempt < self._attempts:
                    self._sleep(delay)
                    delay *= 2
            else:
                return None
        return error

    def _behind(self, app_id: str, error: str) -> None:
        """The registry changed but the broker did not: remember, report, retry later."""
        self._table.mark_failed([app_id], error)
        log.warning("broker_change_pending", app=app_id, error=error)
        self._alert(
            f"the broker could not be updated for app {app_id}; Ownerlink keeps retrying",
            app_id,
            error=error,
        )

    def _report_drift(self, report: SyncReport) -> None:
        """Alert and audit what does not match, once per distinct set of findings."""
        findings = (*report.drift, *(f"no broker login for {m}" for m in report.missing))
        if findings and findings != self._last_drift:
            log.warning("broker_drift", findings=list(findings))
            self._audit.append("broker.drift", findings=list(findings))
            self._alert(
                "the broker does not match the app registry: " + "; ".join(findings),
                None,
                findings=list(findings),
            )
        self._last_drift = findings

    def _alert(self, message: str, app_id: str | None, **details: Any) -> None:
        self._alerts.emit(
            Alert(
                kind=AlertKind.BROKER_DRIFT,
                message=message,
                ts=self._clock(),
                app=app_id,
                details=details,
            )
        )
