"""What the web page and the REST API need from the rest of the daemon, as small protocols.

The web layer never reaches into another part's internals: the daemon passes in objects that
satisfy these protocols (the real registry, audit log, command pipeline, step-up verifier and
poller, wrapped by `bridge.web.adapters` where their shapes differ), and tests pass in fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bridge.model import App, Scope, VehicleState

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC). Injected so tests can move time."""


class AddedApp(Protocol):
    """A newly registered app and its broker password, which is shown once and never stored."""

    @property
    def app(self) -> App: ...

    @property
    def password(self) -> str: ...


class Registry(Protocol):
    """The app registry (bridge.access.apps.AppRegistry): the functions `ownerlink apps` calls.

    Changes raise bridge.errors.AccessError for a bad request (invalid or duplicate id, unknown
    app, location without its opt-in) and write their own audit records and alerts. They may
    block briefly on the broker, so the web layer calls them from a worker thread.
    """

    def add(
        self,
        app_id: str,
        *,
        name: str | None = None,
        scopes: Iterable[Scope | str] = (),
        allow_location: bool = False,
        actor: str = "owner",
    ) -> AddedApp:
        """Register an app; returns it with its one-time broker password."""
        ...

    def list(self) -> Sequence[App]: ...

    def get(self, app_id: str) -> App | None: ...

    def grant(
        self,
        app_id: str,
        scopes: Iterable[Scope | str],
        *,
        allow_location: bool = False,
        actor: str = "owner",
    ) -> App: ...

    def withdraw(
        self, app_id: str, scopes: Iterable[Scope | str], *, actor: str = "owner"
    ) -> App: ...

    def revoke(self, app_id: str, *, actor: str = "owner") -> None: ...

    def scope_mark(self) -> int:
        """Where the history of scope changes stands now (to pass to `scopes_since` later)."""
        ...

    def scopes_since(self, app_id: str, mark: int) -> Sequence[frozenset[Scope]]:
        """What the app held after each change of its scopes since `mark`, oldest first, made
        by any process: shows a moment when every scope of a grant was withdrawn even once
        they have been given back."""
        ...

    def set_enabled(self, app_id: str, enabled: bool, *, actor: str = "owner") -> App:
        """Pause or resume the app without deleting it; audited as app.enabled / app.disabled
        (nothing is written when it already is as asked)."""
        ...

    def set_rate_limit(
        self, app_id: str, per_minute: int | None, *, actor: str = "owner"
    ) -> App: ...

    def set_allowlist(self, app_id: str, cidrs: Iterable[str], *, actor: str = "owner") -> App: ...

    def touch(self, app_id: str, command: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """The audit chain's verification result: `head` is the newest record's hash."""

    ok: bool
    records: int
    head: str | None
    problem: str | None = None


class AuditReader(Protocol):
    """Read access to the audit log (the writer is bridge.events.AuditSink)."""

    def records(self) -> Iterable[Mapping[str, Any]]:
        """Every record, oldest first, as the JSON objects stored in the log."""
        ...

    def newest_first(self) -> Iterable[Mapping[str, Any]]:
        """Every record, newest first, produced as it is read (never the whole log at once)."""
        ...

    def verify(self) -> ChainStatus: ...


class CommandResultLike(Protocol):
    """A command's final result (bridge.commands.results.CommandResult)."""

    def as_document(self) -> dict[str, Any]:
        """`{id, command, action, status, reason, ts}` (plus `detail` when there is one)."""
        ...


class CommandSubmitter(Protocol):
    """The command pipeline (bridge.commands.pipeline.CommandPipeline), REST entry point: the
    same parse → decide → audit → forward as MQTT. Never raises for a refused command; a
    refusal is a result with status `rejected` and a reason."""

    async def submit_api(
        self,
        app_id: str,
        vehicle: str,
        command: str,
        action: str,
        *,
        code: str | None = None,
        id: str | None = None,  # noqa: A002 - the pipeline's name for the command id
        issued_at: Any = None,
        granted: frozenset[Scope] | None = None,
    ) -> CommandResultLike:
        """Submit a REST app's command and wait for its final result. `granted`: the scopes
        the caller's token carries; the command is decided on what both the app and the token
        hold."""
        ...


class StepUp(Protocol):
    """The owner's TOTP second factor (the secret lives in <state_dir>/stepup.secret)."""

    def enrolled(self) -> bool: ...

    def propose(self) -> str:
        """A new secret (base32), not stored: the current one stays in force until `install`."""
        ...

    def install(self, secret: str, code: str) -> bool:
        """Store `secret` as the step-up secret if `code` is its current code (proof the owner's
        authenticator has it); False, changing nothing, otherwise."""
        ...

    def verify(self, code: str) -> bool:
        """Check a code: one step of drift, never the same code twice, lockout after failures."""
        ...


@dataclass(frozen=True, slots=True)
class VehicleView:
    """What the owner page shows about one vehicle; `slug` is never the VIN."""

    slug: str
    name: str | None
    state: VehicleState | None
    available: bool
    next_poll: datetime | None


@dataclass(frozen=True, slots=True)
class BudgetView:
    """Today's use of the provider call budget; `per_hour` has 24 counts, midnight first (UTC)."""

    calls_per_day: int
    used_today: int
    per_hour: Sequence[int]
    calls_per_hour: int = 0  # the hourly cap over the same accounts (0: none to draw)


class VehiclesView(Protocol):
    """The poller's latest knowledge: state per vehicle, budget use, next poll."""

    def vehicles(self) -> Sequence[VehicleView]: ...

    def budget(self) -> BudgetView: ...
