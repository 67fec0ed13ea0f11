"""`create_web_app`: the owner page, the OAuth 2.0 server and the REST API as one ASGI app.

The pages are plain Starlette (`bridge.web.pagerouter`). The REST API and the OAuth back channel
(`API_PATHS`) are a FastAPI app of their own (`bridge.web.api.app`), built when an app first
calls them: FastAPI, the pydantic models it makes at import and OpenTelemetry, which it imports,
are about 7 MB an owner who only opens the page does not need. Both sit behind the same
middleware and share one `WebContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.config import Settings
from bridge.errors import AuditError
from bridge.events import AuditSink
from bridge.logs import get_logger
from bridge.store import Store
from bridge.web import schema
from bridge.web.api.access_log import AccessLog
from bridge.web.context import WebContext
from bridge.web.handlers import add_error_handlers
from bridge.web.ingress import Ingress
from bridge.web.lazy import Deferred
from bridge.web.loginlimit import LoginLimiter
from bridge.web.middleware import ApiAccessAudit, BodyLimit, SecurityHeaders
from bridge.web.netguard import AllowlistMiddleware, HostGuard, allowed_hosts
from bridge.web.oauth import consent
from bridge.web.oauth.server import OAuthServer
from bridge.web.oauth.store import OAuthStore
from bridge.web.pages import apps as apps_pages
from bridge.web.pages import audit as audit_pages
from bridge.web.pages import login as login_pages
from bridge.web.pages import security as security_pages
from bridge.web.pages import vehicles as vehicle_pages
from bridge.web.ports import AuditReader, Clock, CommandSubmitter, Registry, StepUp, VehiclesView
from bridge.web.render import STATIC, make_templates
from bridge.web.sessions import Sessions

log = get_logger(__name__)

# Served by the API app. The consent page (/oauth/authorize) is the owner's: it is a page.
API_PATHS = (
    "/api/",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/.well-known/oauth-authorization-server",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_web_app(
    *,
    settings: Settings,
    store: Store,
    registry: Registry,
    audit: AuditSink,
    audit_reader: AuditReader,
    pipeline: CommandSubmitter,
    vehicles_view: VehiclesView,
    stepup: StepUp,
    clock: Clock = utc_now,
) -> Starlette:
    """Build the ASGI app; creates or upgrades the web and OAuth tables in `store`."""
    schema.migrate(store)
    context = _context(
        settings=settings,
        store=store,
        registry=registry,
        audit=audit,
        audit_reader=audit_reader,
        pipeline=pipeline,
        vehicles_view=vehicles_view,
        stepup=stepup,
        clock=clock,
    )
    pages = (login_pages, apps_pages, audit_pages, vehicle_pages, security_pages, consent)
    app = Starlette(
        routes=[
            *(route for module in pages for route in module.router.routes),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/", _home, methods=["GET"]),
        ],
        lifespan=_lifespan(context.access_log),
    )
    app.state.ctx = context
    app.router.default = ApiOrNotFound(context)
    add_error_handlers(app)
    # Added innermost first: the allowlist sees every request before anything else decides on
    # it; only the security headers wrap it, so its refusals carry them too.
    web = settings.web
    app.add_middleware(ApiAccessAudit, access_log=context.access_log, touch=registry.touch)
    app.add_middleware(HostGuard, hosts=allowed_hosts(web.allowed_hosts, web.public_url))
    app.add_middleware(Ingress, trusted=web.ingress_from)
    app.add_middleware(BodyLimit)
    app.add_middleware(AllowlistMiddleware, allow_cidrs=web.allow_cidrs)
    app.add_middleware(SecurityHeaders)
    return app


def _context(
    *,
    settings: Settings,
    store: Store,
    registry: Registry,
    audit: AuditSink,
    audit_reader: AuditReader,
    pipeline: CommandSubmitter,
    vehicles_view: VehiclesView,
    stepup: StepUp,
    clock: Clock,
) -> WebContext:
    web = settings.web
    oauth = OAuthServer(
        store=OAuthStore(store),
        registry=registry,
        audit=audit,
        clock=clock,
        access_ttl_s=web.access_token_ttl_s,
        refresh_ttl_s=web.refresh_token_ttl_s,
    )
    return WebContext(
        settings=settings,
        store=store,
        registry=registry,
        audit=audit,
        audit_reader=audit_reader,
        pipeline=pipeline,
        vehicles=vehicles_view,
        stepup=stepup,
        clock=clock,
        oauth=oauth,
        sessions=Sessions(store=store, clock=clock, minutes=web.session_minutes),
        limiter=LoginLimiter(
            store=store,
            clock=clock,
            max_failures=web.login_max_failures,
            window_s=web.login_failure_window_s,
        ),
        access_log=AccessLog(audit=audit, clock=clock),
        templates=make_templates(),
    )


async def _home(request: Request) -> Response:
    return RedirectResponse("/apps", status_code=303)


class ApiOrNotFound:
    """What no page route matched: `API_PATHS` go to the API app (built on the first such
    request), anything else is the page's 404."""

    def __init__(self, context: WebContext) -> None:
        self._api = Deferred(lambda: _build_api(context))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(API_PATHS):
            raise HTTPException(404)
        await self._api(scope, receive, send)


async def _build_api(context: WebContext) -> ASGIApp:
    # Importing FastAPI is most of the cost: off the event loop, which keeps polling meanwhile.
    return await run_in_threadpool(_make_api, context)


def _make_api(context: WebContext) -> ASGIApp:
    from bridge.web.api.app import create_api_app

    context.oauth.load()  # oauthlib too, here on the worker thread
    return create_api_app(context)


def _lifespan(access_log: AccessLog) -> Callable[[Starlette], Any]:
    """Flush the access log's per-minute summaries once a minute, and everything at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        """Run the once-a-minute flush while the server is up."""
        task = asyncio.create_task(_flush_every_minute(access_log))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            _flush(access_log, everything=True)

    return lifespan


async def _flush_every_minute(access_log: AccessLog) -> None:
    while True:
        await asyncio.sleep(60)
        _flush(access_log, everything=False)


def _flush(access_log: AccessLog, *, everything: bool) -> None:
    try:
        access_log.flush(everything=everything)
    except AuditError as exc:
        log.warning("api access summary not written", error=str(exc))
