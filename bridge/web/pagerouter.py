"""`PageRouter`: the owner pages' routes on plain Starlette, the owner's session checked first.

The pages need no request validation or OpenAPI document, which is what FastAPI (with the
pydantic models it builds at import, and OpenTelemetry) would cost: about 7 MB that an owner who
only opens the page would carry. So the pages are Starlette routes, and FastAPI is loaded for the
REST API and the OAuth back channel only when an app first calls them (`bridge.web.app`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.web.guards import require_owner

Handler = Callable[..., Awaitable[Response]]


class PageRouter:
    """Collects routes. A handler is called with the request and the path's parameters by name;
    unless the route is `public`, the owner's session is checked first and passed as `session`
    (no session: `LoginRequired`, answered with the login page), so a page is closed by default."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def get(self, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
        return self._add(path, "GET", public=public)

    def post(self, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
        return self._add(path, "POST", public=public)

    def _add(self, path: str, method: str, *, public: bool) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                params: dict[str, Any] = dict(request.path_params)
                if not public:
                    params["session"] = await require_owner(request)
                return await handler(request, **params)

            route = Route(path, endpoint, methods=[method], name=handler.__name__)
            # Starlette lets HEAD run every GET handler; a page's GET can have effects (a location
            # reveal is audited), and FastAPI, which served the pages before, answered HEAD 405.
            route.methods = {method}
            self.routes.append(route)
            return handler

        return register
