"""Everything a request handler needs, built once by `create_web_app` and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from bridge.commands.ratelimit import SlidingWindow
from bridge.config import Settings
from bridge.events import AuditSink
from bridge.store import Store
from bridge.web.api.access_log import AccessLog
from bridge.web.loginlimit import LoginLimiter
from bridge.web.oauth.server import OAuthServer
from bridge.web.ports import AuditReader, Clock, CommandSubmitter, Registry, StepUp, VehiclesView
from bridge.web.sessions import Sessions


class OnceBox:
    """Secrets shown exactly once (broker passwords, client secrets, the step-up QR code).

    Kept in memory only, keyed by the session that created them: never written to disk, gone
    after the first read, and unreadable from another browser.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], str] = {}

    def put(self, session_hash: str, key: str, value: str) -> None:
        self._items[(session_hash, key)] = value

    def take(self, session_hash: str, key: str) -> str | None:
        return self._items.pop((session_hash, key), None)


class SetupCode:
    """Asked for before the first owner password is chosen through Ingress (bridge.web.pages.login):
    made when first needed, shown only in the daemon's log, forgotten once used or at exit."""

    def __init__(self) -> None:
        self.value: str | None = None


@dataclass(frozen=True, slots=True)
class WebContext:
    """The collaborators and the per-process state of the web page and the API."""

    settings: Settings
    store: Store
    registry: Registry
    audit: AuditSink
    audit_reader: AuditReader
    pipeline: CommandSubmitter
    vehicles: VehiclesView
    stepup: StepUp
    clock: Clock
    sessions: Sessions
    limiter: LoginLimiter
    oauth: OAuthServer
    access_log: AccessLog
    templates: Jinja2Templates
    once: OnceBox = field(default_factory=OnceBox)
    read_limits: SlidingWindow = field(default_factory=SlidingWindow)
    token_limits: SlidingWindow = field(default_factory=SlidingWindow)  # tokens issued, per client
    setup: SetupCode = field(default_factory=SetupCode)

    @property
    def secure(self) -> bool:
        """Served over TLS: cookies get Secure and the `__Host-` prefix."""
        return self.settings.web.tls_cert is not None


def ctx(request: Request) -> WebContext:
    """The context of the app serving this request."""
    context: WebContext = request.app.state.ctx
    return context
