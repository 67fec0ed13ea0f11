"""The owner's OAuth 2.0 login at Ford: authorise URL, PKCE, code exchange and token refresh.

Both Ford surfaces use the authorisation-code grant against an Azure AD B2C token endpoint. They
differ in the authorise URL's parameters, the `scope` the token endpoint wants and the `state`
length (FordConnect Query accepts at most 16 bytes).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from bridge.config import AccountConfig
from bridge.errors import (
    AuthUnavailable,
    LoginError,
    NotFound,
    ProviderUnavailable,
    ReauthRequired,
)
from bridge.logs import get_logger, register_secret
from bridge.providers.base import CallKind
from bridge.providers.http import Edge, check_status, error_detail, json_object
from bridge.providers.values import number

V1_AUTHORIZE_URL = "https://fordconnect.cv.ford.com/common/login/"
# Token endpoints are URLs, not secrets (S105 reads "TOKEN" in the name).
V1_TOKEN_URL = (
    "https://dah2vb2cprod.b2clogin.com/914d88b1-3523-4bf6-9be4-1b96b4f6f919/oauth2/v2.0/token"  # noqa: S105
    "?p=B2C_1A_signup_signin_common"
)
QUERY_AUTHORIZE_URL = "https://api.vehicle.ford.com/fcon-public/v1/auth/init"
QUERY_TOKEN_URL = (
    "https://api.vehicle.ford.com/dah2vb2cprod.onmicrosoft.com/oauth2/v2.0/token"  # noqa: S105
    "?p=B2C_1A_FCON_AUTHORIZE"
)
# FordConnect Query rejects a `state` longer than 16 bytes; 12 random bytes encode to 16 chars.
QUERY_MAX_STATE = 16
QUERY_STATE_BYTES = 12
V1_STATE_BYTES = 24
# 48 random bytes → a 64-character verifier, inside RFC 7636's 43..128.
VERIFIER_BYTES = 48

log = get_logger(__name__)


class InvalidGrant(ReauthRequired):
    """The token endpoint said `invalid_grant`: the code or refresh token is dead for good."""


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens as issued, with absolute expiry times (epoch seconds)."""

    access_token: str
    refresh_token: str | None
    expires_at: float
    refresh_expires_at: float | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """One login in progress: what the owner opens, and what we must remember to finish it."""

    url: str
    state: str
    code_verifier: str | None
    redirect_uri: str
    created_at: float


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_v1(config: AccountConfig) -> bool:
    return config.provider == "fordconnect"


def authorize_endpoint(config: AccountConfig) -> str:
    """The configured authorise URL, else Ford's for the account's provider."""
    default = V1_AUTHORIZE_URL if is_v1(config) else QUERY_AUTHORIZE_URL
    return config.authorize_url or default


def token_endpoint(config: AccountConfig) -> str:
    """The configured token URL, else Ford's for the account's provider."""
    return config.token_url or (V1_TOKEN_URL if is_v1(config) else QUERY_TOKEN_URL)


def start_login(config: AccountConfig, now: float) -> LoginRequest:
    """A fresh random `state` (and PKCE verifier) and the authorise URL carrying them."""
    state = secrets.token_urlsafe(V1_STATE_BYTES if is_v1(config) else QUERY_STATE_BYTES)
    verifier = secrets.token_urlsafe(VERIFIER_BYTES) if config.use_pkce else None
    register_secret(verifier)
    url = build_authorize_url(config, state=state, code_verifier=verifier)
    return LoginRequest(url, state, verifier, config.redirect_uri, now)


def build_authorize_url(config: AccountConfig, *, state: str, code_verifier: str | None) -> str:
    """The URL the owner opens to log in at Ford and consent."""
    if not is_v1(config) and len(state.encode()) > QUERY_MAX_STATE:
        raise ValueError(f"FordConnect Query accepts a state of at most {QUERY_MAX_STATE} bytes")
    params = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": config.redirect_uri,
        "state": state,
    }
    if is_v1(config):
        params = {
            "make": "F",
            "application_id": config.application_id or "",
            **params,
            "scope": "access",
        }
    if code_verifier is not None:
        params["code_challenge"] = pkce_challenge(code_verifier)
        params["code_challenge_method"] = "S256"
    base = authorize_endpoint(config)
    return f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"


class OAuthClient:
    """Talks to the token endpoint for one account: code exchange and refresh."""

    def __init__(
        self,
        *,
        config: AccountConfig,
        edge: Edge,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._edge = edge
        self._clock = clock

    @property
    def token_endpoint(self) -> str:
        return token_endpoint(self._config)

    @property
    def _is_v1(self) -> bool:
        return is_v1(self._config)

    def start_login(self) -> LoginRequest:
        """A new login for this account (see `start_login`)."""
        return start_login(self._config, self._clock())

    async def exchange_code(self, code: str, *, code_verifier: str | None) -> TokenSet:
        """Trade the authorisation code for tokens; a dead code raises LoginError."""
        register_secret(code)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._config.redirect_uri,
        }
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        try:
            return await self._token_request(form, previous_refresh=None)
        except InvalidGrant as exc:
            raise LoginError(
                "Ford refused the authorisation code (wrong, already used or expired); "
                "run `ownerlink login` again and use the new redirect URL promptly"
            ) from exc

    async def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens from a refresh token; keeps the old refresh token if none was rotated in."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            return await self._token_request(form, previous_refresh=refresh_token)
        except (ProviderUnavailable, NotFound) as exc:
            # No token to be had: an authentication outage, which makes the account's cars
            # unavailable (a 400 or 404 here is the login service's, no vehicle's "not found").
            raise AuthUnavailable(f"the token endpoint failed: {exc}") from exc

    async def _token_request(
        self, form: dict[str, str], *, previous_refresh: str | None
    ) -> TokenSet:
        body = {
            **form,
            "client_id": self._config.client_id,
            "client_secret": self._config.client_secret.get_secret_value(),
        }
        if not self._is_v1:
            # `offline_access` is what makes the Query token endpoint return a refresh token.
            body["scope"] = f"{self._config.client_id} offline_access openid"
        response = await self._edge.send(
            "POST", self.token_endpoint, kind=CallKind.TOKEN, form=body
        )
        if response.status_code in (400, 401) and _is_invalid_grant(response):
            raise InvalidGrant(
                f"account {self._edge.account}: the token endpoint answered "
                f"invalid_grant ({error_detail(response)})"
            )
        check_status(response)
        return self._token_set(json_object(response), previous_refresh)

    def _token_set(self, doc: dict[str, Any], previous_refresh: str | None) -> TokenSet:
        access = doc.get("access_token")
        if not isinstance(access, str) or not access:
            raise ProviderUnavailable("the token endpoint answered without an access_token")
        refresh = doc.get("refresh_token")
        for secret in (access, refresh, doc.get("id_token")):
            register_secret(secret if isinstance(secret, str) else None)
        now = self._clock()
        return TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else previous_refresh,
            expires_at=_expires_at(doc, now),
            refresh_expires_at=_refresh_expires_at(doc, now),
            scope=doc.get("scope") if isinstance(doc.get("scope"), str) else None,
        )


def _is_invalid_grant(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == "invalid_grant"


# Without a usable lifetime in the answer, assume Ford's documented 20 minutes for an access token.
_DEFAULT_ACCESS_LIFETIME_S = 20 * 60


def _expires_at(doc: dict[str, Any], now: float) -> float:
    """When the access token dies. A lifetime that is NaN, infinite or not positive counts as
    missing: with such an expiry every request would refresh first (and the tokens are fine)."""
    expires_in = number(doc.get("expires_in"))
    if expires_in is not None and expires_in > 0:
        return now + expires_in
    expires_on = number(doc.get("expires_on"))
    if expires_on is not None and expires_on > now:
        return expires_on
    return now + _DEFAULT_ACCESS_LIFETIME_S


def _refresh_expires_at(doc: dict[str, Any], now: float) -> float | None:
    lifetime = number(doc.get("refresh_token_expires_in"))
    return None if lifetime is None else now + lifetime


def parse_redirect(redirect_url: str, *, expected_state: str) -> str:
    """The `code` from the URL Ford redirected the owner to, after checking `state`."""
    query = parse_qs(urlsplit(redirect_url.strip()).query)
    if "error" in query:
        reason = query.get("error_description", query["error"])[0]
        raise LoginError(f"Ford did not grant access: {reason}")
    state = query.get("state", [""])[0]
    if not secrets.compare_digest(state.encode(), expected_state.encode()):
        raise LoginError(
            "the redirect URL's state does not match this login (a stale or foreign URL); "
            "start `ownerlink login` again"
        )
    code = query.get("code", [""])[0]
    if not code:
        raise LoginError("the redirect URL carries no authorisation code")
    register_secret(code)
    return code
