"""The app registry: the one implementation of add, grant, withdraw and revoke.

The CLI and the owner page both call AppRegistry. Each change is written to SQLite together with
its audit record (one transaction: if the audit write fails, nothing changed), then listeners and
alerts fire, then the broker is brought in step. A broker that cannot be changed leaves the app
marked `pending_sync`; the daemon's sync loop retries until the broker agrees with the registry.
Creating a broker login (add, reset-password) needs the password, which is never stored, so those
two fail cleanly with nothing written when the broker cannot be reached.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from bridge.access import validation as check
from bridge.access.broker import BrokerIdentity, Enforcement, SyncReport
from bridge.access.catchup import REGISTRY_AT_SEQ, Missed, missed_changes
from bridge.access.keeper import BrokerKeeper
from bridge.access.passwords import generate_password
from bridge.access.table import AppRow, AppTable, scopes_json
from bridge.access.values import AppChange, AppDetails, ChangeKind, Listener, NewApp
from bridge.audit.read import NewestSeq
from bridge.config import AppConfig
from bridge.errors import AccessError, StateError
from bridge.events import Alert, AlertKind, AlertSink, AuditSink
from bridge.logs import get_logger
from bridge.model import SENSITIVE_SCOPES, App, Scope
from bridge.store import Store, set_meta

__all__ = ["AppChange", "AppDetails", "AppRegistry", "ChangeKind", "Clock", "Listener", "NewApp"]

log = get_logger(__name__)

Clock = Callable[[], datetime]


class AppRegistry:
    """Apps, their scopes and broker identities. Thread-safe; calls block on broker I/O briefly.

    Satisfies the command pipeline's `get(app_id)` / `touch(app_id, command)` lookup protocol.
    """

    def __init__(
        self,
        *,
        store: Store,
        audit: AuditSink,
        alerts: AlertSink,
        enforcement: Enforcement,
        clock: Clock,
        reserved_ids: Iterable[str] = (),
        broker_attempts: int = 3,
        broker_backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._table = AppTable(store, origin=uuid.uuid4().hex)
        self._audit = audit
        self._alerts = alerts
        self._clock = clock
        self._reserved = tuple(reserved_ids)
        self._broker = BrokerKeeper(
            table=self._table,
            enforcement=enforcement,
            audit=audit,
            alerts=alerts,
            clock=clock,
            attempts=broker_attempts,
            backoff_s=broker_backoff_s,
            sleep=sleep,
        )
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()  # serialises changes so checks and writes do not interleave
        self._seen_change: int | None = None

    @property
    def enforcement(self) -> Enforcement:
        return self._broker.enforcement

    def migrate(self) -> None:
        """Create or upgrade the registry's tables; remember where the change feed stands."""
        self._table.migrate()
        self._seen_change = self._table.last_change()

    def catch_up(
        self, records_after: Callable[[int], Iterable[Mapping[str, Any]]], head_seq: int
    ) -> list[str]:
        """Apply again what the audit log says was taken from apps after the database's mark:
        a database restored from an older backup, or a crash between a change's record and its
        commit (bridge.access.catchup). `records_after(seq)` reads the log past a seq;
        `head_seq` is its newest record's. Returns one line per change missed, saying what was
        done or what the owner must do again; alerts when any."""
        mark = self._store.meta(REGISTRY_AT_SEQ)
        if mark is None or not mark.isdigit() or int(mark) > head_seq:
            # A database from before the mark, or a log started over since: nothing to compare
            # with, so the database is taken as it is and marked from here on.
            self._store.set_meta(REGISTRY_AT_SEQ, str(head_seq))
            return []
        read = NewestSeq(records_after(int(mark)), int(mark))
        missed = missed_changes(read, int(mark))
        notes = [self._reapply(change) for change in missed]
        # Past every record read: each change among them is held or was just applied again (or
        # noted). Else the mark stayed at the last app change, and every start read the whole
        # log written since, months of it. Past the records the re-applying wrote too, which
        # moved the mark already: the next start must not take those for missed ones.
        self._advance_mark(read.newest)
        if not missed:
            return []
        for note in notes:
            log.warning("registry_behind_audit_log", detail=note)
        self._alert(
            AlertKind.REGISTRY_BEHIND_LOG,
            f"the state database lacked {len(missed)} app change(s) the audit log holds "
            "(restored from an older backup?); what took access away was applied again",
            None,
            changes=notes,
        )
        return notes

    def _advance_mark(self, seq: int) -> None:
        """Move the registry's mark on to `seq`, never back (another process may have moved it
        further meanwhile: its change's record and commit share one transaction). Only when it
        moves, and never at the cost of the run: `ownerlink apps list` must read while another
        process holds the database, and a mark left behind costs the next run a longer read."""
        held = self._store.meta(REGISTRY_AT_SEQ) or "0"
        if held.isdigit() and seq <= int(held):
            return
        try:
            with self._store.transaction() as conn:
                row = conn.execute(
                    "SELECT value FROM state_meta WHERE key = ?", (REGISTRY_AT_SEQ,)
                ).fetchone()
                now = str(row[0]) if row is not None else "0"
                if not now.isdigit() or seq > int(now):
                    set_meta(conn, REGISTRY_AT_SEQ, str(seq))
        except StateError:
            log.warning("registry mark not moved on (the database is busy)", seq=seq)

    def _reapply(self, change: Missed) -> str:
        where = f"record {change.seq} ({change.kind.value} {change.app})"
        if not change.narrowing:
            return f"{where}: not applied again (it gave access): redo it if still wanted"
        row = self._table.get(change.app)
        if row is None:
            return f"{where}: the app is not in the database; nothing to take away"
        try:
            return f"{where}: {self._narrow(row.app, change)}"
        except (AccessError, ValueError, TypeError) as exc:
            return f"{where}: could not be applied again ({exc}); check the app by hand"

    def _narrow(self, app: App, change: Missed) -> str:
        """One change that took access away, applied to the app as the database has it."""
        actor, record = "audit-log", change.record
        if change.kind is ChangeKind.REVOKED:
            self.revoke(app.id, actor=actor)
            return "revoked again"
        if change.kind in (ChangeKind.DISABLED, ChangeKind.PASSWORD_RESET):
            # The database holds the password the reset replaced: pause the app instead.
            self.set_enabled(app.id, False, actor=actor)
            if change.kind is ChangeKind.PASSWORD_RESET:
                return "disabled: reset its password, then enable it"
            return "disabled again"
        if change.kind is ChangeKind.SCOPES_WITHDRAWN:
            gone = check.parse_scopes(record.get("scopes") or ()) & app.scopes
            if gone:
                self.withdraw(app.id, gone, actor=actor)
            return f"scopes withdrawn again: {', '.join(sorted(gone)) or 'none held'}"
        if change.kind is ChangeKind.ALLOWLIST_SET:
            self.set_allowlist(app.id, record.get("allow_cidrs") or (), actor=actor)
            return "allowlist set again"
        self.set_rate_limit(app.id, record.get("rate_limit_per_minute"), actor=actor)
        return "rate limit set again"

    # -- reading -------------------------------------------------------------------------------

    def get(self, app_id: str) -> App | None:
        """The app, or None if unknown or revoked. Read from the database every time, so a
        revocation by another process is refused at once."""
        row = self._table.get(app_id)
        return row.app if row else None

    def current(self, app_id: str) -> App | None:
        """The app for deciding a command (the command path's AppLookup): read from the database
        every time, as `get` is, but `last_seen` and `last_command` may lag."""
        return self._table.deciding(app_id)

    def require(self, app_id: str) -> App:
        return self._require(app_id).app

    def list(self) -> list[App]:
        return [row.app for row in self._table.all()]

    def details(self, app_id: str) -> AppDetails:
        return _details(self._require(app_id))

    def list_details(self) -> builtins.list[AppDetails]:
        return [_details(row) for row in self._table.all()]

    def home_assistant_app(self) -> App | None:
        """The app designated as Home Assistant: its scopes decide the discovery entities."""
        row = self._table.home_assistant()
        return row.app if row else None

    def scope_mark(self) -> int:
        """Where the history of scope changes stands now; `scopes_since` reads on from here."""
        return self._table.scope_mark()

    def scopes_since(self, app_id: str, mark: int) -> builtins.list[frozenset[Scope]]:
        """What the app held after each change of its scopes since `scope_mark()` gave `mark`,
        oldest first, whichever process made them: a moment when the app held nothing of some
        set shows here even if the scopes were given back since."""
        return self._table.scopes_since(app_id, mark)

    def pending(self) -> dict[str, str | None]:
        """App ids whose broker identity is behind the registry, with the last error."""
        out = {r.app.id: r.sync_error for r in self._table.all() if r.pending_sync}
        out.update(self._table.removal_errors())
        return out

    def has_pending(self) -> bool:
        return self._table.has_pending()

    # -- changes -------------------------------------------------------------------------------

    def add(
        self,
        app_id: str,
        *,
        name: str | None = None,
        scopes: Iterable[Scope | str] = (),
        home_assistant: bool = False,
        allow_location: bool = False,
        rate_limit_per_minute: int | None = None,
        allow_cidrs: Iterable[str] = (),
        actor: str = "owner",
    ) -> NewApp:
        """Register an app and create its broker login; the password is returned once."""
        with self._lock:
            app = self._new_app(
                app_id,
                name=name,
                scopes=scopes,
                home_assistant=home_assistant,
                allow_location=allow_location,
                rate_limit=rate_limit_per_minute,
                cidrs=allow_cidrs,
            )
            password = generate_password()
            identity = BrokerIdentity(app, self._broker.enforcement.stored_secret(password))
            self._broker.create(identity, password)
            self._insert(identity, actor, source="registry")
        self._changed(ChangeKind.ADDED, app)
        self._alert_added(app)
        return NewApp(app=app, password=password)

    def grant(
        self,
        app_id: str,
        scopes: Iterable[Scope | str],
        *,
        allow_location: bool = False,
        actor: str = "owner",
    ) -> App:
        """Add scopes; sensitive ones raise an alert. Granting held scopes changes nothing."""
        wanted = _some(check.parse_scopes(scopes))
        check.check_location_opt_in(wanted, allow_location)
        with self._lock:
            row = self._require(app_id)
            new = wanted - row.app.scopes
            if not new:
                return row.app
            app = replace(row.app, scopes=row.app.scopes | new)
            self._commit(
                ChangeKind.SCOPES_GRANTED,
                app,
                actor,
                broker=True,
                audit={"scopes": sorted(new)},
                scopes=scopes_json(app.scopes),
            )
        self._changed(ChangeKind.SCOPES_GRANTED, app)
        for scope in sorted(new & SENSITIVE_SCOPES):
            self._alert(
                AlertKind.SCOPE_GRANTED,
                f"app {app.id} was granted {scope}",
                app.id,
                scope=scope.value,
            )
        self._broker.update(app.id)
        return app

    def withdraw(self, app_id: str, scopes: Iterable[Scope | str], *, actor: str = "owner") -> App:
        """Remove scopes; effective for the app's next command and next message."""
        unwanted = _some(check.parse_scopes(scopes))
        with self._lock:
            row = self._require(app_id)
            gone = unwanted & row.app.scopes
            if not gone:
                return row.app
            app = replace(row.app, scopes=row.app.scopes - gone)
            self._commit(
                ChangeKind.SCOPES_WITHDRAWN,
                app,
                actor,
                broker=True,
                audit={"scopes": sorted(gone)},
                scopes=scopes_json(app.scopes),
            )
        self._changed(ChangeKind.SCOPES_WITHDRAWN, app)
        self._broker.update(app.id)
        return app

    def revoke(self, app_id: str, *, actor: str = "owner") -> None:
        """Delete the app and its broker identity (ending its sessions). Twice is an error."""
        with self._lock:
            row = self._require(app_id)
            with self._table.transaction() as conn:
                self._table.delete(conn, app_id, self._clock())
                self._record(
                    conn,
                    ChangeKind.REVOKED,
                    app=app_id,
                    actor=actor,
                    scopes=sorted(row.app.scopes),
                )
        self._changed(ChangeKind.REVOKED, None, app_id=app_id)
        self._alert(AlertKind.APP_REVOKED, f"app {app_id} ({row.app.name}) was revoked", app_id)
        self._broker.remove(app_id)

    def set_enabled(self, app_id: str, enabled: bool, *, actor: str = "owner") -> App:
        """Pause or resume an app without deleting it (a disabled app is refused everywhere)."""
        kind = ChangeKind.ENABLED if enabled else ChangeKind.DISABLED
        with self._lock:
            row = self._require(app_id)
            if row.app.enabled == enabled:
                return row.app
            app = replace(row.app, enabled=enabled)
            self._commit(kind, app, actor, broker=True, audit={}, enabled=int(enabled))
        self._changed(kind, app)
        self._broker.update(app.id)
        return app

    def set_rate_limit(self, app_id: str, per_minute: int | None, *, actor: str = "owner") -> App:
        """Commands per minute for this app; None falls back to commands.rate_limit_per_minute."""
        limit = check.check_rate_limit(per_minute)
        with self._lock:
            app = replace(self._require(app_id).app, rate_limit_per_minute=limit)
            self._commit(
                ChangeKind.RATE_LIMIT_SET,
                app,
                actor,
                broker=False,
                audit={"rate_limit_per_minute": limit},
                rate_limit_per_minute=limit,
            )
        self._changed(ChangeKind.RATE_LIMIT_SET, app)
        return app

    def set_allowlist(self, app_id: str, cidrs: Iterable[str], *, actor: str = "owner") -> App:
        """The networks the app's REST calls may come from; empty means no extra restriction."""
        networks = check.normalise_cidrs(cidrs)
        with self._lock:
            app = replace(self._require(app_id).app, allow_cidrs=networks)
            self._commit(
                ChangeKind.ALLOWLIST_SET,
                app,
                actor,
                broker=False,
                audit={"allow_cidrs": list(networks)},
                allow_cidrs=json.dumps(list(networks)),
            )
        self._changed(ChangeKind.ALLOWLIST_SET, app)
        return app

    def reset_password(self, app_id: str, *, actor: str = "owner") -> NewApp:
        """A new broker password (the old one stops working, live sessions end)."""
        with self._lock:
            row = self._require(app_id)
            password = generate_password()
            identity = BrokerIdentity(row.app, self._broker.enforcement.stored_secret(password))
            # Broker first: without the password no retry is possible later. If the audit write
            # below fails, the app is locked out (nobody saw the password) — the safe direction.
            self._broker.create(identity, password)
            rev = self._commit(
                ChangeKind.PASSWORD_RESET,
                row.app,
                actor,
                broker=False,
                audit={},
                broker_secret=identity.secret,
            )
            self._table.mark_synced([(app_id, rev)], [])
        self._changed(ChangeKind.PASSWORD_RESET, row.app)
        return NewApp(app=row.app, password=password)

    def touch(self, app_id: str, command: str | None = None) -> None:
        """Record the app's latest activity (called on each command; not an audited change)."""
        self._table.touch(app_id, self._clock(), str(command) if command is not None else None)

    def import_declared(
        self, declared: Mapping[str, AppConfig], *, actor: str = "config"
    ) -> builtins.list[str]:
        """Register apps declared in the config file that the registry lacks (never changes
        existing ones, never brings back a revoked one). They have no broker password:
        `reset_password` creates one."""
        added = []
        for app_id, spec in sorted(declared.items()):
            if self._table.get(app_id) is not None:
                continue
            if self._table.revoked_at(app_id) is not None:
                # A restart must not undo a revocation; the owner re-adds it deliberately.
                log.warning(
                    "declared_app_was_revoked",
                    app=app_id,
                    detail="remove it from the config file, or add it again by hand",
                )
                continue
            with self._lock:
                # Writing read:location into the config file is the owner's explicit opt-in.
                try:
                    app = self._new_app(
                        app_id,
                        name=spec.name,
                        scopes=spec.scopes,
                        home_assistant=spec.home_assistant,
                        allow_location=True,
                        rate_limit=None,
                        cidrs=(),
                    )
                except AccessError as exc:
                    # What the file cannot know: another app already Home Assistant, an id
                    # taken in another case. The daemon exited 1 here, restarted for good.
                    log.warning(
                        "declared_app_not_added",
                        app=app_id,
                        key=f"apps.{app_id}",
                        detail=f"{exc}; change the config file or the registry",
                    )
                    continue
                self._insert(BrokerIdentity(app), actor, source="config")
            self._changed(ChangeKind.ADDED, app)
            self._alert_added(app)
            added.append(app_id)
        return added

    # -- listeners and other processes -----------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` after every change (in the changing thread; it must not block).
        Returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def poll_changes(self) -> int:
        """Fire listeners for changes another process made since the last poll; returns how many."""
        if self._seen_change is None:
            self._seen_change = self._table.last_change()
            return 0
        changes = self._table.changes_after(self._seen_change)
        for seq, app_id, kind in changes:
            self._seen_change = seq
            self._notify(
                AppChange(kind=ChangeKind(kind), app_id=app_id, app=self.get(app_id), external=True)
            )
        return len(changes)

    def sync_broker(self) -> SyncReport:
        """Reconcile the broker with the registry (at start, and to retry pending changes).

        Raises BrokerError when the broker cannot be reached; pending flags then stay set.
        """
        return self._broker.sync()

    # -- helpers --------------------------------------------------------------------------------

    def _require(self, app_id: str) -> AppRow:
        row = self._table.get(app_id)
        if row is not None:
            return row
        revoked = self._table.revoked_at(app_id)
        if revoked is not None:
            raise AccessError(f"app {app_id!r} was already revoked ({revoked[:16]})")
        raise AccessError(f"no app {app_id!r} (see `ownerlink apps list`)")

    def _new_app(
        self,
        app_id: str,
        *,
        name: str | None,
        scopes: Iterable[Scope | str],
        home_assistant: bool,
        allow_location: bool,
        rate_limit: int | None,
        cidrs: Iterable[str],
    ) -> App:
        """Validate everything before anything is written."""
        check.check_app_id(app_id, self._reserved)
        granted = check.parse_scopes(scopes)
        check.check_location_opt_in(granted, allow_location)
        app = App(
            id=app_id,
            name=check.check_name(name or app_id),
            scopes=granted,
            created_at=self._clock(),
            home_assistant=home_assistant,
            rate_limit_per_minute=check.check_rate_limit(rate_limit),
            allow_cidrs=check.normalise_cidrs(cidrs),
        )
        self._check_free(app)
        return app

    def _check_free(self, app: App) -> None:
        taken = self._table.exists_folded(app.id)
        if taken is not None:
            # Naming the holder helps only when it differs (`Dash` against `dash`).
            holder = "" if taken == app.id else f" (by {taken!r})"
            raise AccessError(f"app id {app.id!r} is already taken{holder}")
        current = self._table.home_assistant()
        if app.home_assistant and current is not None:
            raise AccessError(
                f"app {current.app.id!r} is already the Home Assistant app; "
                "revoke it first (only one app drives discovery)"
            )

    def _insert(self, identity: BrokerIdentity, actor: str, source: str) -> None:
        app = identity.app
        try:
            with self._table.transaction() as conn:
                self._table.insert(conn, app, identity.secret, source)
                self._record(
                    conn,
                    ChangeKind.ADDED,
                    app=app.id,
                    name=app.name,
                    scopes=sorted(app.scopes),
                    home_assistant=app.home_assistant,
                    actor=actor,
                    source=source,
                    rate_limit_per_minute=app.rate_limit_per_minute,
                    allow_cidrs=list(app.allow_cidrs),
                )
        except Exception:
            # The broker login exists but the registry refused the app: take the login back.
            self._broker.undo_create(app.id)
            raise

    def _commit(
        self,
        kind: ChangeKind,
        app: App,
        actor: str,
        *,
        broker: bool,
        audit: dict[str, Any],
        **columns: Any,
    ) -> int:
        """Write the change and its audit record in one transaction; returns the new revision."""
        with self._table.transaction() as conn:
            self._table.update(conn, app.id, kind.value, broker=broker, **columns)
            rev = int(conn.execute("SELECT rev FROM apps WHERE id = ?", (app.id,)).fetchone()[0])
            self._record(conn, kind, app=app.id, actor=actor, **audit)
        return rev

    def _record(self, conn: sqlite3.Connection, kind: ChangeKind, **fields: Any) -> None:
        """Append a change's audit record inside its transaction, and mark the database as
        holding every registry change up to that record (bridge.access.catchup)."""
        seq = self._audit.append(kind.value, **fields).get("seq")
        if isinstance(seq, int):
            set_meta(conn, REGISTRY_AT_SEQ, str(seq))

    def _changed(self, kind: ChangeKind, app: App | None, app_id: str | None = None) -> None:
        self._notify(AppChange(kind=kind, app_id=app_id or (app.id if app else ""), app=app))

    def _notify(self, change: AppChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # one broken listener must not stop the others or the change
                log.exception("app_listener_failed", app=change.app_id, change=change.kind.value)

    def _alert_added(self, app: App) -> None:
        scopes = sorted(s.value for s in app.scopes)
        self._alert(
            AlertKind.APP_ADDED,
            f"app {app.id} ({app.name}) was added with scopes: {', '.join(scopes) or 'none'}",
            app.id,
            scopes=scopes,
            home_assistant=app.home_assistant,
        )
        for scope in sorted(app.scopes & SENSITIVE_SCOPES):
            self._alert(
                AlertKind.SCOPE_GRANTED,
                f"app {app.id} was granted {scope}",
                app.id,
                scope=scope.value,
            )

    def _alert(self, kind: AlertKind, message: str, app_id: str | None, **details: Any) -> None:
        self._alerts.emit(
            Alert(kind=kind, message=message, ts=self._clock(), app=app_id, details=details)
        )


def _details(row: AppRow) -> AppDetails:
    return AppDetails(
        app=row.app, broker_pending=row.pending_sync, broker_error=row.sync_error, source=row.source
    )


def _some(scopes: frozenset[Scope]) -> frozenset[Scope]:
    if not scopes:
        raise AccessError("name at least one scope")
    return scopes
