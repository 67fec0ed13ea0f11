"""How the pipeline learns who an app is: the AppLookup protocol, apps from config, the owner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from bridge.config import AppConfig
from bridge.model import App, Scope

Clock = Callable[[], datetime]
OWNER_ID = "owner"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The owner at the command line: every scope, but still step-up for sensitive commands (a shell
# on the box is not proof the owner is present) and still audited and rate-limited. Only reached
# through `CommandPipeline.submit_owner`, never through a topic, whatever apps are registered.
OWNER_APP = App(id=OWNER_ID, name="Owner", scopes=frozenset(Scope), created_at=_EPOCH)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AppLookup(Protocol):
    """The app registry as the command path sees it. Called on the event loop: keep it quick."""

    def current(self, app_id: str) -> App | None:
        """The app registered under this broker username as it is now, or None: exact in
        everything a decision reads (a revocation or a scope change counts at once), while
        `last_seen` and `last_command` may lag."""
        ...

    def touch(self, app_id: str, command: str) -> None:
        """Note that the app just sent `command` (for the owner page's "last seen")."""
        ...


class ConfigApps:
    """Apps declared in the config file (`apps:`); last-seen is kept in memory only."""

    def __init__(self, apps: Mapping[str, AppConfig], *, clock: Clock = _utcnow) -> None:
        self._apps = {app_id: _from_config(app_id, cfg) for app_id, cfg in apps.items()}
        self._clock = clock
        self._lock = threading.Lock()

    def current(self, app_id: str) -> App | None:
        return self._apps.get(app_id)

    def touch(self, app_id: str, command: str) -> None:
        with self._lock:
            app = self._apps.get(app_id)
            if app is not None:
                self._apps[app_id] = replace(app, last_seen=self._clock(), last_command=command)


def _from_config(app_id: str, cfg: AppConfig) -> App:
    return App(
        id=app_id,
        name=cfg.name or app_id,
        scopes=cfg.scopes,
        created_at=_EPOCH,
        home_assistant=cfg.home_assistant,
    )
