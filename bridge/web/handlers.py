"""How errors are answered: JSON (RFC 6750 style) for API clients, a page for the owner."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bridge.errors import AccessError, AuditError, StateError
from bridge.logs import get_logger
from bridge.web.guards import CsrfRejected, LoginRequired
from bridge.web.render import page

log = get_logger(__name__)

HTTP_ERROR_NAMES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}
API_PREFIXES = ("/api/", "/oauth/token", "/oauth/revoke", "/oauth/introspect")


def error_response(request: Request, status: int, error: str, description: str) -> Response:
    """JSON for API clients, a page for the owner's browser."""
    if request.url.path.startswith(API_PREFIXES):
        return JSONResponse({"error": error, "error_description": description}, status)
    return page(
        request,
        "message.html",
        status,
        heading="Not possible",
        message=description,
        link="/apps",
        link_label="Back to Connected apps",
    )


async def login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    query = {"next": exc.next_path} | ({"ended": "1"} if exc.ended else {})
    return RedirectResponse("/login?" + urlencode(query), status_code=303)


async def csrf_rejected(request: Request, exc: Exception) -> Response:
    return page(
        request,
        "message.html",
        403,
        heading="Form refused",
        message="The form's security token is missing or stale. Reload the page and try again.",
    )


async def access_error(request: Request, exc: Exception) -> Response:
    """The registry (or our own checks) refused a request; its message says why."""
    return error_response(request, 400, "invalid_request", str(exc))


async def audit_down(request: Request, exc: Exception) -> Response:
    # Fail closed: what cannot be audited is not done.
    return error_response(request, 503, "audit_unavailable", "the audit log cannot be written")


STATE_DAMAGED = (
    "The bridge cannot read its state. On the bridge, `ownerlink doctor` says what to mend."
)


async def state_damaged(request: Request, exc: Exception) -> Response:
    # Fail closed (a damaged step-up secret must not let a login through without its code). The
    # detail names files and paths: it goes to the log, not to whoever asked.
    log.error("state unavailable", path=request.url.path, error=str(exc))
    return error_response(request, 503, "state_unavailable", STATE_DAMAGED)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if (
        exc.status_code == 405
        and request.method in {"GET", "HEAD"}
        and not path.startswith(API_PREFIXES)
    ):
        # A form refused with an error is shown at its POST address; Enter in the address bar
        # there asks for it with GET. Send the owner to the page that holds the form, not to
        # "Not possible: Method Not Allowed".
        return RedirectResponse(path.rstrip("/").rsplit("/", 1)[0] or "/", status_code=303)
    name = HTTP_ERROR_NAMES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, name, str(exc.detail))


def add_error_handlers(app: Starlette) -> None:
    """The answers shared by the pages and the API (`bridge.web.api.app` adds the API's own)."""
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(CsrfRejected, csrf_rejected)
    app.add_exception_handler(AccessError, access_error)
    app.add_exception_handler(AuditError, audit_down)
    app.add_exception_handler(StateError, state_damaged)
    app.add_exception_handler(HTTPException, http_error)
