"""How errors are answered: JSON (RFC 6750 style) for API clients, a page for the owner."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match

from bridge.errors import AccessError, AuditError, StateError
from bridge.logs import get_logger
from bridge.web.guards import CsrfRejected, LoginRequired
from bridge.web.netguard import is_api_path
from bridge.web.render import page

log = get_logger(__name__)

HTTP_ERROR_NAMES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def error_response(
    request: Request,
    status: int,
    error: str,
    description: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """JSON for API clients, a page for the owner's browser."""
    if is_api_path(request.url.path):
        body = {"error": error, "error_description": description}
        return JSONResponse(body, status, headers=headers)
    answer = page(
        request,
        "message.html",
        status,
        heading="Not possible",
        message=description,
        link="/apps",
        link_label="Back to Connected apps",
    )
    answer.headers.update(headers or {})
    return answer


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
    if exc.status_code == 405 and request.method in {"GET", "HEAD"} and not is_api_path(path):
        # A form refused with an error is shown at its POST address; Enter in the address bar
        # there asks for it with GET. Send the owner to the page that holds the form, not to
        # "Not possible: Method Not Allowed".
        return RedirectResponse(path.rstrip("/").rsplit("/", 1)[0] or "/", status_code=303)
    name = HTTP_ERROR_NAMES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(request, exc.status_code, name, str(exc.detail), headers)


def _allowed_methods(request: Request) -> str:
    """A 405 must name every method the path takes (RFC 9110 §15.5.6). Starlette's own `Allow`
    names only the first route on the path, and a page's GET and POST are two routes."""
    routes = request.app.router.routes

    def takes(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in routes)

    return ", ".join(method for method in METHODS if takes(method))


def add_error_handlers(app: Starlette) -> None:
    """The answers shared by the pages and the API (`bridge.web.api.app` adds the API's own)."""
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(CsrfRejected, csrf_rejected)
    app.add_exception_handler(AccessError, access_error)
    app.add_exception_handler(AuditError, audit_down)
    app.add_exception_handler(StateError, state_damaged)
    app.add_exception_handler(HTTPException, http_error)
