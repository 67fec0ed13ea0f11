"""Values the registry hands out: change notices for listeners, new credentials, app details."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.model import App


class ChangeKind(enum.StrEnum):
    """What changed; the values are the audit record kinds."""

    ADDED = "app.added"
    SCOPES_GRANTED = "app.scopes_granted"
    SCOPES_WITHDRAWN = "app.scopes_withdrawn"
    REVOKED = "app.revoked"
    ENABLED = "app.enabled"
    DISABLED = "app.disabled"
    RATE_LIMIT_SET = "app.rate_limit_set"
    ALLOWLIST_SET = "app.allowlist_set"
    PASSWORD_RESET = "app.password_reset"  # noqa: S105 - an audit kind, not a password


@dataclass(frozen=True, slots=True)
class AppChange:
    """Passed to listeners after a change. `app` is None once revoked."""

    kind: ChangeKind
    app_id: str
    app: App | None
    external: bool = False  # made by another process (`ownerlink apps`), seen by poll_changes


Listener = Callable[[AppChange], None]


@dataclass(frozen=True, slots=True)
class NewApp:
    """A new (or re-keyed) app and its broker password: shown once, never stored."""

    app: App
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppDetails:
    """An app with the registry's view of its broker identity."""

    app: App
    broker_pending: bool
    broker_error: str | None
    source: str

    def as_document(self) -> dict[str, Any]:
        """JSON-ready view for `apps list --json` and the owner page (no secrets in it)."""
        app = self.app
        return {
            "id": app.id,
            "name": app.name,
            "scopes": sorted(s.value for s in app.scopes),
            "enabled": app.enabled,
            "home_assistant": app.home_assistant,
            "rate_limit_per_minute": app.rate_limit_per_minute,
            "allow_cidrs": list(app.allow_cidrs),
            "created_at": app.created_at.isoformat(),
            "last_seen": app.last_seen.isoformat() if app.last_seen else None,
            "last_command": app.last_command,
            "broker_pending": self.broker_pending,
            "broker_error": self.broker_error,
            "source": self.source,
        }
