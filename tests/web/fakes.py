"""Fakes implementing bridge.web.ports, for testing the web layer without the rest of the daemon."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp

from bridge.errors import AccessError, AuditWriteError
from bridge.model import (
    OPERATIONS,
    App,
    Command,
    Health,
    Location,
    LockState,
    Scope,
    Status,
    VehicleState,
)
from bridge.web.ports import BudgetView, ChainStatus, VehicleView


class MutableClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class MemoryAudit:
    """AuditSink and AuditReader over a list; `tamper()` makes verification fail."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self.items: list[dict[str, Any]] = []
        self.broken = False
        self.unwritable = False  # as the real log after a write or fsync error
        self.read_back = 0  # records pulled through newest_first()

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        if self.unwritable:
            raise AuditWriteError("simulated fsync error")
        record = {
            "seq": len(self.items) + 1,
            "ts": self.clock().isoformat(),
            "kind": kind,
            **fields,
        }
        self.items.append(record)
        return record

    def records(self) -> Iterable[Mapping[str, Any]]:
        return list(self.items)

    def newest_first(self) -> Iterator[Mapping[str, Any]]:
        """Newest first, counting in `read_back` how many records a reader pulled."""
        for record in reversed(list(self.items)):
            self.read_back += 1
            yield record

    def verify(self) -> ChainStatus:
        if self.broken:
            return ChainStatus(ok=False, records=len(self.items), head=None, problem="seq 1 edited")
        return ChainStatus(ok=True, records=len(self.items), head="ab" * 32)

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.items]


APP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class NewApp:
    app: App
    password: str


class FakeRegistry:
    """The app registry's contract (bridge.access.apps.AppRegistry): validates ids, audits each
    change with the same kinds, demands the location opt-in, returns a password once."""

    def __init__(self, audit: MemoryAudit, clock: MutableClock) -> None:
        self.audit = audit
        self.clock = clock
        self.apps: dict[str, App] = {}
        self.touched: list[str] = []
        # (sequence number, app id, what it held after a change of its scopes)
        self.history: list[tuple[int, str, frozenset[Scope]]] = []
        self.changes = 0

    def add(
        self,
        app_id: str,
        *,
        name: str | None = None,
        scopes: Iterable[Scope | str] = (),
        allow_location: bool = False,
        actor: str = "owner",
    ) -> NewApp:
        wanted = frozenset(Scope(s) for s in scopes)
        if not APP_ID.match(app_id):
            raise AccessError(f"invalid app id {app_id!r}")
        if app_id in self.apps:
            raise AccessError(f"app id {app_id!r} is already taken")
        self._location(wanted, allow_location)
        app = App(id=app_id, name=name or app_id, scopes=wanted, created_at=self.clock())
        self.apps[app_id] = app
        self.audit.append("app.added", app=app_id, scopes=sorted(wanted), actor=actor)
        return NewApp(app=app, password=secrets.token_urlsafe(24))

    @staticmethod
    def _location(scopes: frozenset[Scope], allowed: bool) -> None:
        if Scope.READ_LOCATION in scopes and not allowed:
            raise AccessError("read:location needs the explicit opt-in")

    def list(self) -> list[App]:
        return list(self.apps.values())

    def get(self, app_id: str) -> App | None:
        return self.apps.get(app_id)

    def _known(self, app_id: str) -> App:
        if app_id not in self.apps:
            raise AccessError(f"no app {app_id!r}")
        return self.apps[app_id]

    def grant(
        self,
        app_id: str,
        scopes: Iterable[Scope | str],
        *,
        allow_location: bool = False,
        actor: str = "owner",
    ) -> App:
        wanted = frozenset(Scope(s) for s in scopes)
        self._location(wanted, allow_location)
        app = replace(self._known(app_id), scopes=self._known(app_id).scopes | wanted)
        self._changed(app)
        self.audit.append("app.scopes_granted", app=app_id, scopes=sorted(wanted), actor=actor)
        return app

    def withdraw(self, app_id: str, scopes: Iterable[Scope | str], *, actor: str = "owner") -> App:
        gone = frozenset(Scope(s) for s in scopes)
        app = replace(self._known(app_id), scopes=self._known(app_id).scopes - gone)
        self._changed(app)
        self.audit.append("app.scopes_withdrawn", app=app_id, scopes=sorted(gone), actor=actor)
        return app

    def _changed(self, app: App) -> None:
        if app.scopes != self.apps[app.id].scopes:
            self.changes += 1
            self.history.append((self.changes, app.id, app.scopes))
        self.apps[app.id] = app

    def scope_mark(self) -> int:
        return self.changes

    def scopes_since(self, app_id: str, mark: int) -> list[frozenset[Scope]]:
        return [held for seq, owner, held in self.history if owner == app_id and seq > mark]

    def revoke(self, app_id: str, *, actor: str = "owner") -> None:
        self._known(app_id)
        del self.apps[app_id]
        # As the registry does: its tokens die with it, a new app of that id starts afresh.
        self.history = [entry for entry in self.history if entry[1] != app_id]
        self.audit.append("app.revoked", app=app_id, actor=actor)

    def set_enabled(self, app_id: str, enabled: bool, *, actor: str = "owner") -> App:
        app = self._known(app_id)
        if app.enabled == enabled:
            return app
        self.apps[app_id] = replace(app, enabled=enabled)
        kind = "app.enabled" if enabled else "app.disabled"
        self.audit.append(kind, app=app_id, actor=actor)
        return self.apps[app_id]

    def set_rate_limit(self, app_id: str, per_minute: int | None, *, actor: str = "owner") -> App:
        self.apps[app_id] = replace(self._known(app_id), rate_limit_per_minute=per_minute)
        self.audit.append("app.rate_limit_set", app=app_id, rate_limit_per_minute=per_minute)
        return self.apps[app_id]

    def set_allowlist(self, app_id: str, cidrs: Iterable[str], *, actor: str = "owner") -> App:
        self.apps[app_id] = replace(self._known(app_id), allow_cidrs=tuple(cidrs))
        self.audit.append("app.allowlist_set", app=app_id, allow_cidrs=list(cidrs))
        return self.apps[app_id]

    def touch(self, app_id: str, command: str | None = None) -> None:
        self.touched.append(app_id)

    def require(self, app_id: str) -> App:
        """Test helper: the app, which must exist."""
        return self._known(app_id)

    def set(self, app: App) -> None:
        """Test helper: replace an app's record directly."""
        if app.id in self.apps:
            self._changed(app)
        self.apps[app.id] = app


class FakeStepUp:
    """TOTP over pyotp on the injected clock: one step of drift, no code accepted twice."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self.secret: str | None = None
        self._last_step: int | None = None

    def enrolled(self) -> bool:
        return self.secret is not None

    def enroll(self) -> str:
        self.secret = pyotp.random_base32()
        return pyotp.TOTP(self.secret).provisioning_uri(name="owner", issuer_name="Ownerlink")

    def propose(self) -> str:
        return pyotp.random_base32()

    def install(self, secret: str, code: str) -> bool:
        if not pyotp.TOTP(secret).verify(
            "".join(code.split()), for_time=self.clock(), valid_window=1
        ):
            return False
        self.secret = secret
        self.verify("".join(code.split()))
        return True

    def code(self) -> str:
        assert self.secret is not None
        return pyotp.TOTP(self.secret).at(self.clock())

    def verify(self, code: str) -> bool:
        if self.secret is None:
            return False
        totp, step = pyotp.TOTP(self.secret), int(self.clock().timestamp() // 30)
        if step == self._last_step or not totp.verify(code, for_time=self.clock(), valid_window=1):
            return False
        self._last_step = step
        return True


STEPUP_SCOPES = frozenset({Scope.COMMAND_UNLOCK, Scope.COMMAND_REMOTE_START})


@dataclass(frozen=True)
class FakeResult:
    doc: dict[str, Any]

    def as_document(self) -> dict[str, Any]:
        return dict(self.doc)


class FakePipeline:
    """decide → audit → result, with the real pipeline's reasons (no car behind it)."""

    def __init__(
        self,
        *,
        registry: FakeRegistry,
        stepup: FakeStepUp,
        audit: MemoryAudit,
        clock: MutableClock,
        vehicles: Iterable[str],
    ) -> None:
        self.registry, self.stepup, self.audit, self.clock = registry, stepup, audit, clock
        self.vehicles = set(vehicles)
        self.forwarded: list[tuple[str, str, str, str]] = []

    async def submit_api(
        self,
        app_id: str,
        vehicle: str,
        command: str,
        action: str,
        *,
        code: str | None = None,
        id: str | None = None,  # noqa: A002
        issued_at: Any = None,
        granted: frozenset[Scope] | None = None,
    ) -> FakeResult:
        reason = self._decide(app_id, vehicle, Command(command), action, code, granted)
        status = "rejected" if reason != "ok" else "succeeded"
        self.audit.append(
            "command.decision",
            app=app_id,
            vehicle=vehicle,
            command=command,
            action=action,
            decision="refused" if reason != "ok" else "allowed",
            reason=reason,
        )
        if reason == "ok":
            self.forwarded.append((app_id, vehicle, command, action))
        return FakeResult(
            {
                "id": id or "generated",
                "command": command,
                "action": action,
                "status": status,
                "reason": reason,
                "ts": self.clock().isoformat(),
            }
        )

    def _decide(
        self,
        app_id: str,
        vehicle: str,
        command: Command,
        action: str,
        code: str | None,
        granted: frozenset[Scope] | None,
    ) -> str:
        entry = OPERATIONS.get((command, action.strip().upper()))
        app = self.registry.get(app_id)
        if entry is None:
            return "unknown_action"
        if app is None:
            return "unknown_app"
        if vehicle not in self.vehicles:
            return "unknown_vehicle"
        if not app.has(entry[1]) or (granted is not None and entry[1] not in granted):
            return "scope_missing"
        if entry[1] in STEPUP_SCOPES and action != "STOP":
            if not code:
                return "stepup_required"
            if not self.stepup.verify(code):
                return "stepup_failed"
        return "ok"


class FakeVehicles:
    """One vehicle with full state (location included) and a budget."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self.views = [
            VehicleView(
                slug="family-car",
                name="Family car",
                state=VehicleState(
                    vehicle_id="hash-1",
                    updated_at=clock(),
                    status=Status(lock=LockState.LOCKED, fuel_level_pct=61.5, odometer_km=12034),
                    health=Health(oil_life_pct=80, battery_12v_pct=90),
                    location=Location(latitude=51.501, longitude=-0.142, heading_deg=90),
                ),
                available=True,
                next_poll=clock() + timedelta(minutes=15),
            )
        ]

    def vehicles(self) -> Sequence[VehicleView]:
        return self.views

    def budget(self) -> BudgetView:
        per_hour = [0] * 24
        per_hour[8], per_hour[9], per_hour[12] = 5, 3, 7
        return BudgetView(calls_per_day=250, used_today=15, per_hour=per_hour)
