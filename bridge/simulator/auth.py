"""The simulator's OAuth 2.0 authority: consents, single-use codes, PKCE, rotating refresh tokens.

Code lifetimes are real (monotonic) seconds, because a person consents in real time; access and
refresh tokens live in simulated time, like everything else about the account.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random
from typing import Any


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """The one application the simulator knows: its OAuth client and its v1 Application-Id."""

    client_id: str = "ownerlink-sim"
    client_secret: str = "sim-secret"  # noqa: S105 - a well-known test credential, not a secret
    application_id: str = "sim-app-id"


@dataclass(slots=True)
class Account:
    """A Ford account as the simulator sees it: created by a consent, bound to its vehicles."""

    account_id: str
    login_hint: str | None
    vehicle_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    account_id: str
    scope: str
    expires_mono: float


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token stands for."""

    account_id: str
    client_id: str
    scope: str
    expires_at: datetime


class OAuthError(Exception):
    """A token-endpoint refusal, rendered as `{"error", "error_description"}`."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge for `verifier` (RFC 7636)."""
    # UTF-8, not ASCII: a verifier outside ASCII is only a wrong one (invalid_grant), not a 500.
    digest = hashlib.sha256(verifier.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same(presented: str, expected: str) -> bool:
    """Constant-time equality of two strings, as bytes: compare_digest raises TypeError for str
    with non-ASCII characters, which would turn a wrong client id or secret into a 500."""
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


class AuthServer:
    """Accounts, codes and tokens. Callers hold the simulator's lock."""

    def __init__(
        self,
        *,
        client: ClientRegistration,
        access_lifetime: timedelta,
        refresh_lifetime: timedelta,
        code_lifetime_s: float,
        rng: Random,
        monotonic: Callable[[], float],
    ) -> None:
        self.client = client
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.code_lifetime_s = code_lifetime_s
        self._rng = rng
        self._monotonic = monotonic
        self.accounts: dict[str, Account] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self._issued = 0

    def _token(self, prefix: str) -> str:
        return f"{prefix}.{self._rng.getrandbits(192):048x}"

    def client_matches(self, client_id: str, client_secret: str | None = None) -> bool:
        if not _same(client_id, self.client.client_id):
            return False
        return client_secret is None or _same(client_secret, self.client.client_secret)

    # -- consent ---------------------------------------------------------------------------

    def account_for(self, login_hint: str | None, vehicle_ids: list[str]) -> Account:
        """The account a consent lands in: the hinted one if it exists, else a new one."""
        if login_hint is not None:
            for account in self.accounts.values():
                if account.login_hint == login_hint:
                    account.vehicle_ids.extend(
                        v for v in vehicle_ids if v not in account.vehicle_ids
                    )
                    return account
        account = Account(f"acct-{len(self.accounts) + 1}", login_hint, list(vehicle_ids))
        self.accounts[account.account_id] = account
        return account

    def issue_code(
        self, *, account: Account, redirect_uri: str, challenge: str | None, scope: str
    ) -> str:
        code = self._token("code")
        expires = self._monotonic() + self.code_lifetime_s
        self._codes[code] = _Code(
            self.client.client_id, redirect_uri, challenge, account.account_id, scope, expires
        )
        return code

    # -- the token endpoint ------------------------------------------------------------------

    def exchange_code(self, form: dict[str, str], now: datetime) -> dict[str, Any]:
        """`grant_type=authorization_code`: single use, unexpired, same redirect, PKCE checked."""
        code = self._codes.pop(form.get("code", ""), None)  # single use, even when refused
        if code is None or self._monotonic() > code.expires_mono:
            raise OAuthError(
                400, "invalid_grant", "the authorization code is unknown, used or expired"
            )
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError(400, "invalid_grant", "redirect_uri does not match the authorization")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if not _same(pkce_challenge(verifier), code.challenge):
                raise OAuthError(400, "invalid_grant", "the PKCE code_verifier does not match")
        return self.issue_tokens(code.account_id, code.scope, now)

    def refresh(self, form: dict[str, str], now: datetime) -> dict[str, Any]:
        """`grant_type=refresh_token`: rotation — the presented token stops working at once."""
        grant = self._refresh.pop(form.get("refresh_token", ""), None)
        if grant is None or now >= grant.expires_at:
            raise OAuthError(400, "invalid_grant", "the refresh token is unknown, used or expired")
        return self.issue_tokens(grant.account_id, form.get("scope") or grant.scope, now)

    def issue_tokens(self, account_id: str, scope: str, now: datetime) -> dict[str, Any]:
        """A fresh access and refresh token pair for `account_id`, as the token endpoint answers."""
        self._prune(now)
        access, refresh = self._token("at"), self._token("rt")
        client_id = self.client.client_id
        expires = now + self.access_lifetime
        self._access[access] = Grant(account_id, client_id, scope, expires)
        self._refresh[refresh] = Grant(account_id, client_id, scope, now + self.refresh_lifetime)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(self.access_lifetime.total_seconds()),
            "expires_on": int(expires.timestamp()),
            "refresh_token": refresh,
            "refresh_token_expires_in": int(self.refresh_lifetime.total_seconds()),
            "id_token": self._token("id"),
            "scope": scope,
        }

    # -- bearer checks -------------------------------------------------------------------------

    def lookup(self, token: str, now: datetime) -> Grant | None:
        grant = self._access.get(token)
        return grant if grant is not None and now < grant.expires_at else None

    def expire(self, token: str) -> bool:
        return self._access.pop(token, None) is not None

    def expire_all(self) -> int:
        count = len(self._access)
        self._access.clear()
        return count

    def _prune(self, now: datetime) -> None:
        # Dead tokens are swept every so often as new ones are minted, so memory follows the
        # live set without a sweep on every request.
        self._issued += 1
        if self._issued % 64:
            return
        mono = self._monotonic()
        for code in [c for c, v in self._codes.items() if v.expires_mono < mono]:
            del self._codes[code]
        for table in (self._access, self._refresh):
            for token in [t for t, g in table.items() if g.expires_at <= now]:
                del table[token]
