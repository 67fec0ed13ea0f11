"""Bearer-token authentication for /api/v1: who is calling, with which scopes, from where.

A token's effective scopes are the ones the owner consented to *and* the app still holds in the
registry, looked up on every request: withdrawing a scope or revoking the app takes effect on the
very next call, without waiting for the token to expire. Once every scope of the token has been
withdrawn its grant is over, even if a scope has been given back since.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2AuthorizationCodeBearer
from starlette.requests import Request

from bridge.model import App, Scope
from bridge.web.context import WebContext, ctx
from bridge.web.netguard import ip_allowed, parse_ip
from bridge.web.scopes_ui import SCOPE_INFO

REALM = 'Bearer realm="ownerlink"'
_SCOPES = {scope.value: scope for scope in Scope}
# Declares the API's authentication in the OpenAPI document, which without it showed every
# operation as open to anyone. It checks nothing (`auto_error=False`): `authenticate` does.
DECLARED_AUTH = OAuth2AuthorizationCodeBearer(
    authorizationUrl="/oauth/authorize",
    tokenUrl="/oauth/token",
    refreshUrl="/oauth/token",
    scheme_name="ownerlink",
    scopes={name: info.label for name, info in SCOPE_INFO.items()},
    description="Authorization code with PKCE (S256 only); see docs/api.md",
    auto_error=False,
)


class ApiError(Exception):
    """An error answer of the API: JSON `{error, error_description}` (RFC 6750 style)."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the app, its effective scopes, and where it called from."""

    app: App
    scopes: frozenset[Scope]
    ip: str

    def require(self, scope: Scope) -> None:
        """Raise 403 insufficient_scope unless the token carries `scope`."""
        if scope not in self.scopes:
            raise insufficient_scope(scope)


def insufficient_scope(scope: Scope) -> ApiError:
    """RFC 6750's answer to a token without `scope`: 403, naming the scope in the challenge."""
    return ApiError(
        403,
        "insufficient_scope",
        f"this call needs the {scope.value} scope",
        {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope.value}"'},
    )


def _invalid_token(description: str) -> ApiError:
    header = f'{REALM}, error="invalid_token", error_description="{description}"'
    return ApiError(401, "invalid_token", description, {"WWW-Authenticate": header})


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "invalid_request", "a bearer token is required", {"WWW-Authenticate": REALM}
        )
    return token.strip()


def _app_for(context: WebContext, token: str) -> tuple[App, frozenset[Scope]]:
    stored = context.oauth.store.token(token)
    now = context.clock().timestamp()
    if stored is None or stored.kind != "access" or stored.revoked or stored.expires_at <= now:
        raise _invalid_token("the access token is invalid, expired or revoked")
    app = context.registry.get(stored.client_id)
    client = context.oauth.store.client(stored.client_id)
    if app is not None and not app.enabled:
        raise _invalid_token("the app is disabled; the owner can enable it again")
    if app is None or client is None or not client.belongs_to(app):
        raise _invalid_token("the app has been revoked")
    if context.oauth.validator.withdrawn(stored):
        raise _invalid_token("every scope of this grant was withdrawn; ask the owner again")
    granted = frozenset(_SCOPES[s] for s in stored.scopes.split() if s in _SCOPES)
    return app, granted & app.scopes


def _rate_limit(context: WebContext, app: App) -> None:
    now = context.clock().timestamp()
    limit = context.settings.web.api_reads_per_minute
    window = context.read_limits
    if not window.allows(app.id, limit, now):
        raise ApiError(
            429, "rate_limited", f"at most {limit} requests a minute", {"Retry-After": "60"}
        )
    window.record(app.id, now)


async def authenticate(
    request: Request, _declared: Annotated[str | None, Depends(DECLARED_AUTH)]
) -> Principal:
    """FastAPI dependency: the caller behind the bearer token, after its app's IP allowlist and
    request rate limit. Stores the app id on `request.state` for the access log."""
    context = ctx(request)
    app, scopes = _app_for(context, _bearer(request))
    request.state.api_app = app.id
    ip = request.client.host if request.client else ""
    if app.allow_cidrs and not ip_allowed(parse_ip(ip), app.allow_cidrs):
        raise ApiError(403, "ip_not_allowed", "this app may not call from this address")
    _rate_limit(context, app)
    return Principal(app=app, scopes=scopes, ip=ip)


Caller = Annotated[Principal, Depends(authenticate)]
