"""`create_api_app`: the REST API and the OAuth back channel on FastAPI, with its OpenAPI text.

Built by `bridge.web.app` when an app first calls one of `API_PATHS`, never for the owner pages;
the middleware of the app in front of it (allowlist, body limit, host check, headers, access log)
has run by then.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge import __version__
from bridge.web.api import routes as api_routes
from bridge.web.api.auth import ApiError
from bridge.web.context import WebContext
from bridge.web.handlers import add_error_handlers, error_response
from bridge.web.oauth import endpoints

API_DESCRIPTION = (
    "Local REST API of Ownerlink. Authenticate with an OAuth 2.0 access token from the "
    "authorization-code flow with PKCE (S256) at /oauth/authorize and /oauth/token."
)


def create_api_app(context: WebContext) -> FastAPI:
    """The API's routes with the shared error answers, and the API's own (RFC 6750 errors, 422)."""
    app = FastAPI(
        title="Ownerlink API",
        version=__version__,
        description=API_DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = context
    for router in (endpoints.router, api_routes.router, endpoints.metadata_router):
        app.include_router(router)
    add_error_handlers(app)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    return app


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body = {"error": exc.error, "error_description": exc.description}
    return JSONResponse(body, exc.status, headers=exc.headers)


async def invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
    )
    return error_response(request, 422, "invalid_request", problems[:500])
