"""The authorisation server assembled: oauthlib's WebApplicationServer plus our stricter rules.

Only the authorization-code grant (with PKCE, S256) and the refresh-token grant exist: no implicit,
no password, no client-credentials grant (RFC 9700 §2.1.2, §2.4). Registering a client links it to
a registry app, so scopes, rate limits, IP allowlists and revocation are the app's.

oauthlib (58 modules, about 1 MB) is loaded when the protocol is first needed: a consent page or
an app's call to the API. The owner's everyday pages only read and change clients and grants.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from bridge.errors import AccessError
from bridge.events import AuditSink
from bridge.web.oauth import grants
from bridge.web.oauth.store import Client, OAuthStore
from bridge.web.ports import Clock, Registry

if TYPE_CHECKING:
    from oauthlib.common import Request
    from oauthlib.oauth2 import WebApplicationServer

    from bridge.web.oauth.validator import Validator

# oauthlib's debug logging prints codes and tokens through the standard logging module, which our
# structlog redaction never sees; keep it quiet whatever the daemon's level.
logging.getLogger("oauthlib").setLevel(logging.WARNING)


def repeated_parameter(query: str) -> str | None:
    """The first parameter of a form or query given more than once, which RFC 6749 (section
    3.1) forbids: readers differ on which of the two they keep, and a request must mean one
    thing to every check that reads it."""
    seen: set[str] = set()
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name in seen:
            return name
        seen.add(name)
    return None


# RFC 7636 §4.1: 43-128 characters from the unreserved set.
VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# An S256 challenge is a SHA-256 digest in base64url without padding: 43 characters, exactly.
S256_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MAX_REDIRECT_URIS = 10

OAuthResponse = tuple[dict[str, str], str | None, int]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What a valid authorisation request asks for, as oauthlib validated it."""

    client_id: str
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]

    def denied(self) -> str:
        """RFC 6749 §4.1.2.1: `access_denied` at the validated redirect URI, with the state."""
        from oauthlib.common import add_params_to_uri

        pairs = [("error", "access_denied")] + ([("state", self.state)] if self.state else [])
        return str(add_params_to_uri(self.redirect_uri, pairs))


def redirect_uri_problem(uri: str) -> str | None:
    """Why a redirect URI cannot be registered, or None when it can.

    https anywhere; plain http only to a loopback address (RFC 8252 §7.3); a private-use scheme
    with a dot, such as `com.example.app:/cb` (RFC 8252 §7.1); never a fragment or user info.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "is not a valid URI"
    if "#" in uri or parts.username or parts.password:
        return "must not contain a fragment or user information"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return "may use http only for a loopback address"
    acceptable = (
        (parts.scheme == "https" and bool(parts.hostname))
        or parts.scheme == "http"
        or "." in parts.scheme
    )
    if not acceptable:
        return "must be https, http to loopback, or a private-use scheme like com.example.app:/cb"
    return None


def _require_s256(request: Request) -> dict[str, Any]:
    """`plain` PKCE protects nothing once the request is seen; accept S256 only."""
    from oauthlib.oauth2.rfc6749 import errors

    if request.code_challenge is not None and request.code_challenge_method != "S256":
        raise errors.InvalidRequestError(
            description="code_challenge_method must be S256", request=request
        )
    if request.code_challenge is not None and not S256_CHALLENGE.match(request.code_challenge):
        # No verifier could ever match it: say so now, not after the owner has consented.
        raise errors.InvalidRequestError(
            description="code_challenge must be the 43-character base64url SHA-256 of the verifier",
            request=request,
        )
    return {}


def _verifier_shape(request: Request) -> None:
    from oauthlib.oauth2.rfc6749 import errors

    if request.code_verifier is not None and not VERIFIER.match(request.code_verifier):
        raise errors.InvalidRequestError(
            description="code_verifier must be 43-128 unreserved characters", request=request
        )


class OAuthServer:
    """The OAuth endpoints' logic, called by the thin HTTP routes in `endpoints` and `consent`."""

    def __init__(
        self,
        *,
        store: OAuthStore,
        registry: Registry,
        audit: AuditSink,
        clock: Clock,
        access_ttl_s: int,
        refresh_ttl_s: int,
    ) -> None:
        self.store = store
        self.registry = registry
        self.audit = audit
        self.clock = clock
        self._ttls = (access_ttl_s, refresh_ttl_s)
        self._protocol: tuple[Validator, WebApplicationServer] | None = None
        self._loading = threading.Lock()  # the API's build (a thread) and a consent page may race

    @property
    def validator(self) -> Validator:
        return self.load()[0]

    @property
    def server(self) -> WebApplicationServer:
        return self.load()[1]

    def load(self) -> tuple[Validator, WebApplicationServer]:
        """oauthlib's server over our validator, made (and oauthlib imported) on first use."""
        protocol = self._protocol
        if protocol is None:
            with self._loading:
                protocol = self._protocol = self._protocol or self._make_protocol()
        return protocol

    async def ready(self) -> None:
        """`load`, with the first one's imports off the event loop."""
        if self._protocol is None:
            await asyncio.to_thread(self.load)

    def _make_protocol(self) -> tuple[Validator, WebApplicationServer]:
        from oauthlib.oauth2 import WebApplicationServer

        from bridge.web.oauth.validator import Validator

        access_ttl_s, refresh_ttl_s = self._ttls
        validator = Validator(
            store=self.store,
            registry=self.registry,
            audit=self.audit,
            clock=self.clock,
            refresh_ttl_s=refresh_ttl_s,
        )
        server = WebApplicationServer(validator, token_expires_in=access_ttl_s)
        server.auth_grant.custom_validators.pre_auth.append(_require_s256)
        server.auth_grant.custom_validators.pre_token.append(_verifier_shape)
        return validator, server

    def check_authorization(self, uri: str, headers: Mapping[str, str]) -> AuthRequest:
        """A validated authorisation request; raises oauthlib's FatalClientError (show it to the
        owner) or another OAuth2Error (send it back to the app)."""
        scopes, info = self.server.validate_authorization_request(uri, "GET", None, dict(headers))
        return AuthRequest(
            client_id=str(info["client_id"]),
            redirect_uri=str(info["redirect_uri"]),
            state=info.get("state"),
            scopes=tuple(str(s) for s in scopes),
        )

    def authorize(
        self, uri: str, headers: Mapping[str, str], scopes: list[str], *, scope_mark: int
    ) -> OAuthResponse:
        """Issue a code for the scopes the owner left ticked; the response redirects to the app.
        `scope_mark`: the registry's scope mark, read before the scopes were checked against
        the app's (a withdrawal after it counts against the code)."""
        out_headers, body, status = self.server.create_authorization_response(
            uri,
            "GET",
            None,
            dict(headers),
            scopes=scopes,
            credentials={"ownerlink_mark": scope_mark},
        )
        return out_headers, body, status

    def token(self, uri: str, body: str, headers: Mapping[str, str]) -> OAuthResponse:
        return _safely(lambda: self.server.create_token_response(uri, "POST", body, dict(headers)))

    def revoke(self, uri: str, body: str, headers: Mapping[str, str]) -> OAuthResponse:
        return _safely(
            lambda: self.server.create_revocation_response(uri, "POST", body, dict(headers))
        )

    def introspect(self, uri: str, body: str, headers: Mapping[str, str]) -> OAuthResponse:
        return _safely(
            lambda: self.server.create_introspect_response(uri, "POST", body, dict(headers))
        )

    # Client registration (by the owner, on the app's page) ---------------------------------

    def register_client(self, app_id: str, *, kind: str, uris: Sequence[str]) -> str | None:
        """Make a registry app an OAuth client; returns the client secret (confidential only),
        which is shown once and stored only as a hash."""
        app = self.registry.get(app_id)
        if app is None:
            raise AccessError(f"unknown app {app_id!r}")
        if self.client_of(app_id) is not None:
            raise AccessError(f"app {app_id!r} already has REST access")
        _check_registration(kind, uris)
        # Left over from an earlier app with this id (revoked outside the page): end it first.
        self.remove_client(app_id)
        secret = secrets.token_urlsafe(32) if kind == "confidential" else None
        self.store.add_client(app, kind=kind, secret=secret, uris=uris, now=self._now())
        self.audit.append(
            "oauth.client_registered", app=app_id, client_type=kind, redirect_uris=list(uris)
        )
        return secret

    def client_of(self, app_id: str) -> Client | None:
        """The app's OAuth client, if it has one made for its current registration."""
        client = self.store.client(app_id)
        return (
            client if client is not None and client.belongs_to(self.registry.get(app_id)) else None
        )

    def active_grants(self, app_id: str) -> int:
        """How many grants still hold a live token (for the owner page): a grant whose scopes
        were all withdrawn is not counted, though the app has not tried it since."""
        live = self.store.live_tokens(app_id, now=self._now())
        return len({token.grant_id for token in live if not grants.ended(self.registry, token)})

    def remove_client(self, app_id: str) -> None:
        """Remove REST access: the client goes and every token it holds stops working."""
        if self.store.client(app_id) is None:
            return
        self.store.remove_client(app_id, now=self._now())
        self.audit.append("oauth.client_removed", app=app_id)

    def _now(self) -> float:
        return self.clock().timestamp()


def _check_registration(kind: str, uris: Sequence[str]) -> None:
    if kind not in {"public", "confidential"}:
        raise AccessError("client type must be public or confidential")
    if not uris or len(uris) > MAX_REDIRECT_URIS:
        raise AccessError(f"give between 1 and {MAX_REDIRECT_URIS} redirect URIs")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem:
            raise AccessError(f"redirect URI {uri!r} {problem}")


def _safely(call: Any) -> OAuthResponse:
    """The client's mistakes that oauthlib raises rather than answers become its answer: a body
    it cannot decode (ValueError), and checks made before the grant runs (a query string on the
    token endpoint, say, which must not carry credentials)."""
    from oauthlib.oauth2.rfc6749 import errors

    try:
        headers, body, status = call()
    except errors.OAuth2Error as exc:
        headers = {**exc.headers, "Content-Type": "application/json"}
        body, status = exc.json, exc.status_code
    except ValueError:
        err = errors.InvalidRequestError(description="malformed request body")
        return {"Content-Type": "application/json"}, err.json, 400
    return dict(headers), described(body) if int(status) >= 400 else body, int(status)


# oauthlib leaves error_description out of most refusals (invalid_grant, invalid_client,
# unsupported_grant_type, invalid_scope). RFC 6749 §5.2 makes it optional, but it is what a
# developer reads, and the API's own errors always carry one.
ERROR_DESCRIPTIONS = {
    "invalid_request": "the request is missing a parameter or is otherwise malformed",
    "invalid_client": "client authentication failed (unknown, disabled or revoked client, wrong "
    "secret, or an address its allowlist does not admit)",
    "invalid_grant": "the code or refresh token is invalid, expired, already used, revoked, or "
    "was issued to another client or redirect URI",
    "unauthorized_client": "this client may not use this grant type",
    "unsupported_grant_type": "only the authorization_code and refresh_token grants exist here",
    "invalid_scope": "the scope is unknown or wider than the grant",
    "unsupported_token_type": "this token type cannot be revoked here",
}


def described(body: str | None) -> str | None:
    """An error body with `error_description` filled in when oauthlib left it out."""
    try:
        doc = json.loads(body or "")
    except ValueError:
        return body
    if not isinstance(doc, dict) or "error" not in doc or doc.get("error_description"):
        return body
    doc["error_description"] = ERROR_DESCRIPTIONS.get(str(doc["error"]), "the request was refused")
    return json.dumps(doc)
