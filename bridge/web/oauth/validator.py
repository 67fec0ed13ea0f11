"""oauthlib's RequestValidator over our store: the policy decisions of the authorisation server.

oauthlib does the protocol (parameter parsing, error responses, PKCE maths); this class answers
its questions. The rules that are ours: every client is a registry app that must still be enabled;
PKCE is required of every client, S256 only; redirect URIs match exactly; codes live 60 seconds
and work once (a second use revokes what the first one produced); refresh tokens rotate on every
use, and presenting a rotated one again revokes the whole grant (RFC 9700 §4.14). A code or token
is good only for the scopes the app still holds, and not at all once every scope it carries has
been withdrawn, at any moment since it was issued: the registry's scope history says so whichever
process withdrew them, so giving a scope back later never revives a grant without new consent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any
from urllib.parse import unquote_plus

from oauthlib.common import Request
from oauthlib.oauth2 import RequestValidator

from bridge.events import AuditSink
from bridge.model import Scope
from bridge.web.netguard import ip_allowed, parse_ip
from bridge.web.oauth import grants
from bridge.web.oauth.store import Client, Code, OAuthStore, Token, digest, scopes_text
from bridge.web.ports import Clock, Registry

CODE_TTL_S = 60
# Set by our HTTP layer to the socket's peer address (a client-sent copy is dropped first).
PEER_HEADER = "X-Ownerlink-Peer"
OWNER = "owner"  # the one resource owner of a personal daemon
KNOWN_SCOPES = frozenset(s.value for s in Scope)


class Validator(RequestValidator):  # type: ignore[misc]  # oauthlib ships no type hints
    """Answers oauthlib's questions from the OAuth tables and the app registry."""

    def __init__(
        self,
        *,
        store: OAuthStore,
        registry: Registry,
        audit: AuditSink,
        clock: Clock,
        refresh_ttl_s: float,
    ) -> None:
        self.store = store
        self.registry = registry
        self.audit = audit
        self.clock = clock
        self.refresh_ttl_s = refresh_ttl_s

    def _now(self) -> float:
        return self.clock().timestamp()

    # Clients -------------------------------------------------------------------------------

    def _live_client(self, client_id: str | None, request: Request | None = None) -> Client | None:
        """The client, if it exists and its registry app is still enabled (revocation is live)
        and, when authenticating a request, the app's IP allowlist admits the caller."""
        if not client_id:
            return None
        client = self.store.client(client_id)
        app = self.registry.get(client_id) if client else None
        if client is None or app is None or not client.belongs_to(app):
            return None
        if request is not None and app.allow_cidrs:
            peer = parse_ip((request.headers or {}).get(PEER_HEADER))
            if not ip_allowed(peer, app.allow_cidrs):
                return None
        return client

    def client_authentication_required(self, request: Request, *args: Any, **kw: Any) -> bool:
        client_id, _ = _client_credentials(request)
        client = self._live_client(client_id)
        # Unknown clients go down the confidential path, which fails with invalid_client.
        return client is None or client.confidential

    def authenticate_client(self, request: Request, *args: Any, **kw: Any) -> bool:
        """A confidential client: its secret, from Basic or the body, in constant time."""
        client_id, secret = _client_credentials(request)
        client = self._live_client(client_id, request)
        if client is None or not client.confidential or not secret or not client.secret_hash:
            return False
        if request.client_id and request.client_id != client_id:
            return False  # Basic and body disagree: refuse rather than guess
        if _basic_header(request) and request.client_secret:
            # Two authentication methods at once (RFC 6749 §2.3); the body's secret would go
            # unchecked, whatever it said.
            return False
        # Both are hex digests, but as bytes like every other comparison here: compare_digest
        # raises TypeError for str with non-ASCII characters.
        if not hmac.compare_digest(digest(secret).encode(), client.secret_hash.encode()):
            return False
        request.client = client
        request.client_id = client_id
        return True

    def authenticate_client_id(self, client_id: str, request: Request, *a: Any, **kw: Any) -> bool:
        client = self._live_client(client_id, request)
        if client is None or client.confidential:
            return False
        request.client = client
        return True

    def validate_client_id(self, client_id: str, request: Request, *a: Any, **kw: Any) -> bool:
        client = self._live_client(client_id)
        request.client = client
        return client is not None

    def validate_redirect_uri(
        self, client_id: str, redirect_uri: str, request: Request, *a: Any, **kw: Any
    ) -> bool:
        client = self._live_client(client_id)
        # Exact string comparison, no prefix or pattern matching (RFC 9700 §4.1.3).
        return client is not None and redirect_uri in client.redirect_uris

    def get_default_redirect_uri(self, client_id: str, request: Request, *a: Any, **kw: Any) -> Any:
        client = self._live_client(client_id)
        # Only unambiguous: with several registered URIs the client must say which.
        if client is not None and len(client.redirect_uris) == 1:
            return client.redirect_uris[0]
        return None

    def validate_response_type(
        self, client_id: str, response_type: str, client: Any, request: Request, *a: Any, **kw: Any
    ) -> bool:
        return response_type == "code"

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Request, *a: Any, **kw: Any
    ) -> bool:
        return grant_type in {"authorization_code", "refresh_token"}

    def validate_scopes(
        self, client_id: str, scopes: list[str], client: Any, request: Request, *a: Any, **kw: Any
    ) -> bool:
        return bool(scopes) and all(s in KNOWN_SCOPES for s in scopes)

    def get_default_scopes(self, client_id: str, request: Request, *a: Any, **kw: Any) -> Any:
        # Location is never part of a default: it must be asked for and ticked by the owner.
        app = self.registry.get(client_id)
        scopes = (app.scopes - {Scope.READ_LOCATION}) if app else frozenset()
        return sorted(s.value for s in scopes)

    def is_pkce_required(self, client_id: str, request: Request) -> bool:
        return True

    # Authorisation codes -------------------------------------------------------------------

    def save_authorization_code(
        self, client_id: str, code: dict[str, Any], request: Request, *a: Any, **kw: Any
    ) -> None:
        """Keep the code with everything the token request must match."""
        record = Code(
            client_id=client_id,
            redirect_uri=request.redirect_uri,
            scopes=scopes_text(request.scopes),
            challenge=request.code_challenge,
            challenge_method=request.code_challenge_method,
            expires_at=self._now() + CODE_TTL_S,
            used_at=None,
            grant_id=None,
            # Read by the consent route before it checked the app's scopes (OAuthServer.authorize).
            scope_mark=int(request.ownerlink_mark),
            redirect_named=not request.using_default_redirect_uri,
        )
        self.store.save_code(code["code"], record)

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Request, *a: Any, **kw: Any
    ) -> bool:
        """A live code of this client, for the consented scopes the app still holds (none left,
        now or at any moment since the consent: invalid_grant); a second use revokes what the
        first made."""
        mark = self.registry.scope_mark()  # first: a withdrawal after it is seen next time
        stored = self.store.code(code)
        if stored is None or stored.client_id != client_id:
            return False
        if stored.used_at is not None:
            self._code_reused(stored)
            return False
        if stored.expires_at <= self._now():
            return False
        if grants.lost_all(self.registry, stored.client_id, stored.scopes, stored.scope_mark):
            return False
        held = self._still_held(stored.client_id, stored.scopes)
        if not held:
            return False
        request.scopes = held
        request.user = OWNER
        request.ownerlink_code = stored
        request.ownerlink_mark = mark
        return True

    def _code_reused(self, stored: Code) -> None:
        """A code presented twice was intercepted or replayed: end what it already produced."""
        if stored.grant_id is not None and self.store.revoke_grant(
            stored.grant_id, reason="code_reused", now=self._now()
        ):
            self.audit.append("oauth.code_reused", app=stored.client_id, grant=stored.grant_id)

    def get_code_challenge(self, code: str, request: Request) -> str | None:
        stored = self.store.code(code)
        return stored.challenge if stored else None

    def get_code_challenge_method(self, code: str, request: Request) -> str | None:
        stored = self.store.code(code)
        return stored.challenge_method if stored else None

    def confirm_redirect_uri(
        self,
        client_id: str,
        code: str,
        redirect_uri: str,
        client: Any,
        request: Request,
        *a: Any,
        **kw: Any,
    ) -> bool:
        """The token request names the redirect URI the code was issued for; it may leave it
        out (oauthlib then fills in the only registered one) only if the authorisation request
        did too (RFC 6749 §4.1.3)."""
        stored = self.store.code(code)
        if stored is None or stored.redirect_uri != redirect_uri:
            return False
        return not (stored.redirect_named and request.using_default_redirect_uri)

    def invalidate_authorization_code(
        self, client_id: str, code: str, request: Request, *a: Any, **kw: Any
    ) -> None:
        # Already marked used, with its grant, in save_bearer_token (same request).
        return None

    # Tokens --------------------------------------------------------------------------------

    def save_bearer_token(
        self, token: dict[str, Any], request: Request, *a: Any, **kw: Any
    ) -> None:
        """Store new tokens in the grant: a new one for a code, the same on refresh."""
        now = self._now()
        scopes = scopes_text(request.scopes)
        grant_id = self._grant_for(request, scopes, now)
        client_id = request.client.client_id
        mark = int(request.ownerlink_mark)  # read before the scopes were (validate_*)
        self.store.save_token(
            token["access_token"],
            kind="access",
            grant_id=grant_id,
            client_id=client_id,
            scopes=scopes,
            scope_mark=mark,
            now=now,
            ttl_s=float(token["expires_in"]),
        )
        if "refresh_token" in token:
            self.store.save_token(
                token["refresh_token"],
                kind="refresh",
                grant_id=grant_id,
                client_id=client_id,
                scopes=self._refresh_scopes(request, scopes),
                scope_mark=mark,
                now=now,
                ttl_s=self.refresh_ttl_s,
            )

    def _refresh_scopes(self, request: Request, scopes: str) -> str:
        """A new refresh token keeps the old one's scopes (RFC 6749 section 6), less any the owner
        withdrew since: a refresh asking for fewer narrows only the access token it returns."""
        if request.grant_type != "refresh_token":
            return scopes
        return scopes_text(
            self._still_held(request.client.client_id, request.ownerlink_refresh.scopes)
        )

    def _grant_for(self, request: Request, scopes: str, now: float) -> int:
        """The grant new tokens join: a fresh one for a code, the old token's for a refresh."""
        if request.grant_type == "refresh_token":
            old = request.ownerlink_refresh
            self.store.mark_used(old.token_hash, now=now)
            return int(old.grant_id)
        grant_id = self.store.new_grant(request.client.client_id, scopes, now=now)
        self.store.use_code(request.code, grant_id=grant_id, now=now)
        return grant_id

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *a: Any, **kw: Any
    ) -> bool:
        """A live, unused refresh token of this client; reuse revokes its grant, and so does
        every scope it carries having been withdrawn since it was issued."""
        mark = self.registry.scope_mark()  # first: a withdrawal after it is seen next time
        stored = self.store.token(refresh_token)
        if stored is None or stored.kind != "refresh" or stored.client_id != client.client_id:
            return False
        if stored.used_at is not None:
            self._refresh_reused(stored.grant_id, stored.client_id)
            return False
        if stored.revoked or stored.expires_at <= self._now() or self.withdrawn(stored):
            return False
        request.ownerlink_refresh = stored
        request.ownerlink_mark = mark
        return True

    def ended(self, stored: Token) -> bool:
        """True when every scope `stored` carries has been withdrawn from the app at some moment
        since it was issued, given back since or not (the owner must consent again)."""
        return grants.ended(self.registry, stored)

    def withdrawn(self, stored: Token) -> bool:
        """`ended`, and if so its grant revoked (once, audited) so that it stays so."""
        if not self.ended(stored):
            return False
        if self.store.revoke_grant(stored.grant_id, reason="scopes_withdrawn", now=self._now()):
            self.audit.append(
                "oauth.revoked",
                app=stored.client_id,
                grant=stored.grant_id,
                reason="scopes_withdrawn",
            )
        return True

    def _refresh_reused(self, grant_id: int, client_id: str) -> None:
        """Either the client or a thief holds a rotated token; revoking the grant stops both."""
        if self.store.revoke_grant(grant_id, reason="refresh_reused", now=self._now()):
            self.audit.append("oauth.refresh_reused", app=client_id, grant=grant_id)

    def get_original_scopes(self, refresh_token: str, request: Request, *a: Any, **kw: Any) -> Any:
        # What the grant had and the app still holds: a refresh never brings back a withdrawn
        # scope, in the token or in the response's `scope`.
        stored = self.store.token(refresh_token)
        return self._still_held(stored.client_id, stored.scopes) if stored else []

    def _still_held(self, client_id: str, scopes: str) -> list[str]:
        """The scopes of `scopes` the app holds now (none when it is gone or disabled)."""
        app = self.registry.get(client_id)
        if app is None or not app.enabled:
            return []
        held = {scope.value for scope in app.scopes}
        return [scope for scope in scopes.split() if scope in held]

    def rotate_refresh_token(self, request: Request) -> bool:
        return True

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: Request, *a: Any, **kw: Any
    ) -> None:
        """RFC 7009: a refresh token takes its grant along, an access token goes alone."""
        stored = self.store.token(token)
        # A client may only revoke its own tokens; anything else is silently ignored (RFC 7009).
        if stored is None or stored.client_id != request.client.client_id or stored.revoked:
            return
        now = self._now()
        if stored.kind == "refresh":
            self.store.revoke_grant(stored.grant_id, reason="revoked_by_client", now=now)
        else:
            self.store.revoke_token(stored.token_hash, now=now)
        self.audit.append(
            "oauth.revoked", app=stored.client_id, grant=stored.grant_id, token_kind=stored.kind
        )

    def introspect_token(
        self, token: str, token_type_hint: str | None, request: Request, *a: Any, **kw: Any
    ) -> dict[str, Any] | None:
        """RFC 7662 claims for a live token of the calling client, else None."""
        stored = self.store.token(token)
        if stored is None or stored.client_id != request.client.client_id:
            return None
        if stored.revoked or stored.used_at is not None or stored.expires_at <= self._now():
            return None
        if self.withdrawn(stored):
            return None
        return {
            # What a call with the token may do now (the API checks the app's scopes each time).
            "scope": " ".join(self._still_held(stored.client_id, stored.scopes)),
            "client_id": stored.client_id,
            "token_type": "Bearer" if stored.kind == "access" else "refresh_token",
            "exp": int(stored.expires_at),
            "iat": int(stored.issued_at),
            "sub": OWNER,
        }


def _client_credentials(request: Request) -> tuple[str | None, str | None]:
    """(client_id, secret) from HTTP Basic (RFC 6749 §2.3.1, form-encoded parts) or the body."""
    header = _basic_header(request)
    if header:
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        user, sep, password = decoded.partition(":")
        return (unquote_plus(user), unquote_plus(password)) if sep else (None, None)
    return request.client_id, request.client_secret


def _basic_header(request: Request) -> str:
    """The request's HTTP Basic Authorization header, or ""."""
    header = str((request.headers or {}).get("Authorization", ""))
    return header if header.lower().startswith("basic ") else ""
