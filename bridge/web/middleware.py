"""ASGI middleware of the web app: security headers on every response, and the API access log."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.errors import AuditError
from bridge.logs import get_logger
from bridge.web.api.access_log import AccessLog
from bridge.web.ingress import prefix_of
from bridge.web.netguard import client_ip, refusal

log = get_logger(__name__)

# No scripts at all, styles and images from us only, never framed (clickjacking the consent page
# or the revoke button), no referrer (URLs can carry OAuth state). Inline SVG needs nothing more.
CSP = b"default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
SECURITY_HEADERS = (
    (b"content-security-policy", CSP + b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
# Through Home Assistant's Ingress the page lives in a frame of Home Assistant's own page, which
# is the same origin (the Supervisor proxies both): framing by that origin only.
INGRESS_HEADERS = (
    (b"content-security-policy", CSP + b"frame-ancestors 'self'"),
    (b"x-frame-options", b"SAMEORIGIN"),
    *SECURITY_HEADERS[2:],
)
# Only over TLS: a browser that saw it once refuses plain http to this host for a year, so a
# network attacker cannot strip TLS from a later visit. Sent over http it would mean nothing.
HSTS = (b"strict-transport-security", b"max-age=31536000")
# Pages show one-time secrets and personal data: never cache them. Static files may be cached.
NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response, HSTS to those sent over TLS, and
    `no-store` to all but static files. The outermost layer, so that the guards' own refusals
    (address, host, body size) carry them too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Read now, not on the way in: the Ingress layer inside sets the prefix.
                headers = INGRESS_HEADERS if prefix_of(scope) else SECURITY_HEADERS
                always = [*headers, HSTS] if scope.get("scheme") == "https" else headers
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [h for h in always if h[0] not in present]
                if not cacheable and NO_STORE[0] not in present:
                    extra.append(NO_STORE)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


# Every form and token request here is a few hundred bytes (a page's longest form, ten redirect
# URIs, is a few kilobytes). Starlette reads a body whole into memory, so without a cap anyone the
# address allowlist lets in could send hundreds of megabytes before any login or token check.
MAX_BODY_BYTES = 64 * 1024
TOO_LARGE = f"request body larger than {MAX_BODY_BYTES} bytes"


class BodyLimit:
    """Refuses (413) a request body over MAX_BODY_BYTES: by its Content-Length before reading
    anything, or, sent in chunks without one, as soon as the bytes read pass the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await refusal(scope, 413, "request_too_large", TOO_LARGE)(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.max_bytes:
                # Raised inside the handler reading the body: answered by the error handlers.
                raise HTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, counted, send)


OPENAPI_PATH = "/api/v1/openapi.json"  # the API's description, not an access to anything


class ApiAccessAudit:
    """Records every /api/v1 request (apart from the OpenAPI document) in the access log, with
    the app the bearer token belonged to, the matched route and the final status.

    The record is made when the response's status is known and before the response leaves: a
    read whose record cannot be written is answered 503 `audit_unavailable` instead, so no
    vehicle data goes out unaudited while the log is down. A command's answer still goes out:
    the pipeline has already recorded (or, with the log down, refused) the command itself, and
    hiding its result would only invite a retry of something that may have run."""

    def __init__(
        self, app: ASGIApp, *, access_log: AccessLog, touch: Callable[[str], None]
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.touch = touch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith("/api/v1/") or path == OPENAPI_PATH:
            await self.app(scope, receive, send)
            return
        started = refused = False
        reading = scope.get("method") in ("GET", "HEAD")
        seen: str | None = None

        async def record_first(message: Message) -> None:
            nonlocal started, refused, seen
            if message["type"] == "http.response.start":
                started = True
                try:
                    seen = self._record(scope, int(message["status"]))
                except AuditError as exc:
                    log.warning("api access record not written", error=str(exc))
                    if reading:
                        refused = True
                        await _unaudited(scope, receive, send)
                        return
                    seen = None
                await send(message)
            elif not refused:
                await send(message)

        try:
            await self.app(scope, receive, record_first)
        except BaseException:
            if not started:  # the app died before answering: the client sees a 500
                with contextlib.suppress(AuditError):
                    self._record(scope, 500)
            raise
        if seen is not None:  # once the answer is out: marking "last seen" must not hold it up
            self.touch(seen)

    def _record(self, scope: Scope, status: int) -> str | None:
        """Account for the request; the app to mark as seen, if it is time to."""
        route = scope.get("route")
        state = scope.get("state") or {}
        params = scope.get("path_params") or {}
        app_id = state.get("api_app")
        opened = self.access_log.record(
            app=app_id,
            ip=client_ip(scope) or "",
            method=str(scope.get("method", "")),
            route=str(getattr(route, "path", "unmatched")),
            vehicle=params.get("vehicle"),
            status=status,
        )
        # "Last seen" needs minute precision at most: one registry write per app per minute.
        return str(app_id) if opened and app_id and status < 400 else None


async def _unaudited(scope: Scope, receive: Receive, send: Send) -> None:
    """What cannot be audited is not served (the owner page's answer to the same failure)."""
    body = {"error": "audit_unavailable", "error_description": "the audit log cannot be written"}
    await JSONResponse(body, 503)(scope, receive, send)
