"""HTTP routes of the authorisation server's back channel: token, revocation, introspection.

Bodies are handed to oauthlib as they arrived; the only thing added is the peer address, under a
header name the client cannot set (any incoming copy is dropped), so the validator can apply the
app's IP allowlist to client authentication.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.model import Scope
from bridge.web.context import WebContext, ctx
from bridge.web.oauth.server import OAuthResponse, repeated_parameter
from bridge.web.oauth.validator import PEER_HEADER

router = APIRouter(prefix="/oauth", tags=["oauth"])

_FORM = "application/x-www-form-urlencoded"
# Token responses (code exchanges and refreshes) per client per minute. A well-behaved client
# needs one every ten minutes; each response stores new tokens, so one refreshing in a loop must
# not be able to grow the state database as fast as it can send.
TOKENS_PER_MINUTE = 10


def _form_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI request body for a form-encoded OAuth endpoint (parsed by oauthlib, not us)."""
    return {"requestBody": {"required": True, "content": {_FORM: {"schema": schema}}}}


def _fields(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": fields, "required": required}


_STR: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 512}
# Empty is not refused here: a client authenticating with HTTP Basic may send empty ones.
_OPTIONAL: dict[str, Any] = {"type": "string", "maxLength": 512}
_CLIENT = {"client_id": _OPTIONAL, "client_secret": _OPTIONAL}
# One variant per grant, each with what that grant cannot do without (RFC 6749 §4.1.3, §6).
TOKEN_BODY = _form_body(
    {
        "oneOf": [
            _fields(
                {
                    "grant_type": {"type": "string", "enum": ["authorization_code"]},
                    "code": _STR,
                    "redirect_uri": _STR,
                    "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$"},
                    **_CLIENT,
                },
                ["grant_type", "code", "code_verifier"],
            ),
            _fields(
                {
                    "grant_type": {"type": "string", "enum": ["refresh_token"]},
                    "refresh_token": _STR,
                    "scope": _OPTIONAL,
                    **_CLIENT,
                },
                ["grant_type", "refresh_token"],
            ),
        ]
    }
)
TOKEN_ONLY_BODY = _form_body(
    _fields(
        {
            "token": _STR,
            # Only a hint (RFC 7009 §2.1, RFC 7662 §2.1): an unknown one is ignored, not refused.
            "token_type_hint": {"type": "string", "examples": ["access_token", "refresh_token"]},
            **_CLIENT,
        },
        ["token"],
    )
)
_ERROR = {
    "application/json": {
        "schema": _fields(
            {"error": {"type": "string"}, "error_description": {"type": "string"}},
            ["error", "error_description"],
        )
    }
}
OAUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "OAuth error (invalid_request, invalid_grant, …)", "content": _ERROR},
    401: {"description": "invalid_client", "content": _ERROR},
}
TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **OAUTH_RESPONSES,
    429: {"description": "rate_limited: too many token responses a minute", "content": _ERROR},
}


async def _call(request: Request, endpoint: str) -> Response:
    context = ctx(request)
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        error = {"error": "invalid_request", "error_description": "the body is not UTF-8"}
        return JSONResponse(error, status_code=400)
    repeated = repeated_parameter(body)
    if repeated is not None:
        # The token limit here and oauthlib would each read the one they keep.
        text = f"the parameter {repeated[:40]!r} is given more than once"
        return JSONResponse({"error": "invalid_request", "error_description": text}, 400)
    headers = {k: v for k, v in request.headers.items() if k.lower() != PEER_HEADER.lower()}
    headers[PEER_HEADER] = request.client.host if request.client else ""
    uri = str(request.url)
    limited = _issuer_key(context, headers, body) if endpoint == "token" else None
    now = context.clock().timestamp()
    if limited is not None and not context.token_limits.allows(limited, TOKENS_PER_MINUTE, now):
        text = f"at most {TOKENS_PER_MINUTE} token responses a minute"
        error = {"error": "rate_limited", "error_description": text}
        return JSONResponse(error, status_code=429, headers={"Retry-After": "60"})
    handler = getattr(context.oauth, endpoint)
    out: OAuthResponse = handler(uri, body, headers)
    out_headers, out_body, status = out
    if limited is not None and status == 200:
        context.token_limits.record(limited, now)
    if status == 401:
        out_headers = _client_challenge(out_headers)
    # A revocation answers with an empty body; JSON clients still expect a JSON document.
    return Response(
        out_body or "{}", status_code=status, headers=out_headers, media_type="application/json"
    )


def _issuer_key(context: WebContext, headers: Mapping[str, str], body: str) -> str | None:
    """The registered client a token request names (HTTP Basic, else the body's client_id),
    whose token responses are counted; None for a name that is no client. Only tokens actually
    issued count: a stranger who knows a public client's id cannot use up its allowance."""
    client_id: str | None = None
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id = unquote_plus(decoded.partition(":")[0])
    else:
        named = parse_qs(body).get("client_id")
        client_id = named[0] if named else None
    if not client_id or context.oauth.store.client(client_id) is None:
        return None
    return client_id


def _client_challenge(headers: dict[str, str]) -> dict[str, str]:
    """A refused client is asked for HTTP Basic credentials, the scheme clients authenticate with
    here (RFC 6749 §5.2); oauthlib's own challenge names Bearer, the scheme of the API instead."""
    kept = {k: v for k, v in headers.items() if k.lower() != "www-authenticate"}
    return {**kept, "WWW-Authenticate": 'Basic realm="ownerlink", charset="UTF-8"'}


@router.post(
    "/token",
    openapi_extra=TOKEN_BODY,
    responses=TOKEN_RESPONSES,
    summary="Exchange a code (with PKCE) or rotate a refresh token",
)
async def token(request: Request) -> Response:
    return await _call(request, "token")


@router.post(
    "/revoke",
    openapi_extra=TOKEN_ONLY_BODY,
    responses=OAUTH_RESPONSES,
    summary="Revoke a token (RFC 7009); 200 for unknown tokens",
)
async def revoke(request: Request) -> Response:
    return await _call(request, "revoke")


@router.post(
    "/introspect",
    openapi_extra=TOKEN_ONLY_BODY,
    responses=OAUTH_RESPONSES,
    summary="Introspect one of your own tokens (RFC 7662)",
)
async def introspect(request: Request) -> Response:
    return await _call(request, "introspect")


def issuer(request: Request) -> str:
    """The server's own base URL: web.public_url when set, else the address it was called on."""
    public = ctx(request).settings.web.public_url
    return (public or str(request.base_url)).rstrip("/")


metadata_router = APIRouter(tags=["oauth"])


@metadata_router.get(
    "/.well-known/oauth-authorization-server", summary="Authorisation server metadata (RFC 8414)"
)
async def metadata(request: Request) -> dict[str, Any]:
    """Where the endpoints are and what they support."""
    base = issuer(request)
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "scopes_supported": sorted(s.value for s in Scope),
    }
