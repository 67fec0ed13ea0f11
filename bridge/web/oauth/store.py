"""OAuth clients, authorisation codes, grants and tokens in SQLite, every secret stored hashed.

A *grant* is one consent: the code it started from, and every access and refresh token issued
from it, belong to it. Revoking the grant (refresh-token reuse, code reuse, RFC 7009 revocation
of a refresh token, removing the client, every scope it carries withdrawn) ends all of them at
once. Codes and tokens keep the registry's scope mark of their issue, from which on the
withdrawals that count against them are read.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.model import App, Scope
from bridge.store import Store

SAME_INSTANT_S = 1e-3  # created_at round-trips through a float; microseconds survive that


def digest(secret: str) -> str:
    """SHA-256 of a token, code or client secret: what the database keeps instead of it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def scopes_text(scopes: Sequence[str] | frozenset[Scope]) -> str:
    return " ".join(sorted(str(s) for s in scopes))


@dataclass(frozen=True, slots=True)
class Client:
    """A registered REST client; `client_id` is the registry app id it acts as.

    `app_created` pins the client to one registration of that id: a revoked app's id can be
    registered again, and the new app must not inherit the old one's client and tokens.
    """

    client_id: str
    kind: str  # "public" or "confidential"
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    app_created: float

    @property
    def confidential(self) -> bool:
        return self.kind == "confidential"

    def belongs_to(self, app: App | None) -> bool:
        """True while `app` is the live, enabled registration this client was made for."""
        return (
            app is not None
            and app.enabled
            and abs(app.created_at.timestamp() - self.app_created) < SAME_INSTANT_S
        )


@dataclass(frozen=True, slots=True)
class Code:
    client_id: str
    redirect_uri: str
    scopes: str
    challenge: str
    challenge_method: str
    expires_at: float
    used_at: float | None
    grant_id: int | None
    scope_mark: int
    redirect_named: bool  # the authorisation request named redirect_uri (not the default)


@dataclass(frozen=True, slots=True)
class Token:
    """A stored access or refresh token (by hash), with its grant's revocation folded in."""

    token_hash: str
    kind: str
    grant_id: int
    client_id: str
    scopes: str
    issued_at: float
    expires_at: float
    used_at: float | None
    revoked: bool
    scope_mark: int


class OAuthStore:
    """Plain reads and writes; the protocol rules live in the request validator."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # Clients -------------------------------------------------------------------------------

    def add_client(
        self, app: App, *, kind: str, secret: str | None, uris: Sequence[str], now: float
    ) -> None:
        """Store a client for the current registration of `app` (secret hashed)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO oauth_clients (client_id, kind, secret_hash, redirect_uris, "
                "app_created, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    app.id,
                    kind,
                    digest(secret) if secret else None,
                    json.dumps(list(uris)),
                    app.created_at.timestamp(),
                    now,
                ),
            )

    def client(self, client_id: str) -> Client | None:
        """The client registered under this id, whatever its app has become since."""
        rows = self.store.query(
            "SELECT client_id, kind, secret_hash, redirect_uris, app_created FROM oauth_clients "
            "WHERE client_id = ?",
            (client_id,),
        )
        if not rows:
            return None
        row = rows[0]
        uris = tuple(json.loads(row["redirect_uris"]))
        return Client(row["client_id"], row["kind"], row["secret_hash"], uris, row["app_created"])

    def remove_client(self, client_id: str, *, now: float) -> None:
        """Delete the client and revoke everything it was ever issued, codes not yet exchanged
        included: a code is tied to the client id alone, so one left behind would still be
        good if the owner turned REST access back on (or re-added the app) within its minute."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM oauth_clients WHERE client_id = ?", (client_id,))
            conn.execute("DELETE FROM oauth_codes WHERE client_id = ?", (client_id,))
            conn.execute(
                "UPDATE oauth_grants SET revoked_at = ?, revoked_reason = 'client_removed' "
                "WHERE client_id = ? AND revoked_at IS NULL",
                (now, client_id),
            )

    # Codes ---------------------------------------------------------------------------------

    def save_code(self, code: str, record: Code) -> None:
        """Store a new authorisation code (hashed) with its PKCE challenge."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, scopes, challenge, "
                "challenge_method, expires_at, scope_mark, redirect_named) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    digest(code),
                    record.client_id,
                    record.redirect_uri,
                    record.scopes,
                    record.challenge,
                    record.challenge_method,
                    record.expires_at,
                    record.scope_mark,
                    int(record.redirect_named),
                ),
            )

    def code(self, code: str) -> Code | None:
        rows = self.store.query(
            "SELECT client_id, redirect_uri, scopes, challenge, challenge_method, expires_at, "
            "used_at, grant_id, scope_mark, redirect_named FROM oauth_codes WHERE code_hash = ?",
            (digest(code),),
        )
        if not rows:
            return None
        row = rows[0]
        return Code(
            client_id=row["client_id"],
            redirect_uri=row["redirect_uri"],
            scopes=row["scopes"],
            challenge=row["challenge"],
            challenge_method=row["challenge_method"],
            expires_at=row["expires_at"],
            used_at=row["used_at"],
            grant_id=row["grant_id"],
            scope_mark=row["scope_mark"],
            redirect_named=bool(row["redirect_named"]),
        )

    def use_code(self, code: str, *, grant_id: int, now: float) -> None:
        """Mark a code spent and remember the grant it became, for reuse detection."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE oauth_codes SET used_at = ?, grant_id = ? WHERE code_hash = ?",
                (now, grant_id, digest(code)),
            )

    # Grants and tokens ---------------------------------------------------------------------

    def new_grant(self, client_id: str, scopes: str, *, now: float) -> int:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO oauth_grants (client_id, scopes, created_at) VALUES (?, ?, ?)",
                (client_id, scopes, now),
            )
            return int(cur.lastrowid or 0)

    def save_token(
        self,
        token: str,
        *,
        kind: str,
        grant_id: int,
        client_id: str,
        scopes: str,
        scope_mark: int,
        now: float,
        ttl_s: float,
    ) -> None:
        """Store an access or refresh token (hashed) in its grant.

        Expired tokens are deleted first: each refresh adds rows, and without the sweep an app
        refreshing in a loop would grow the state database without end. An expired token is
        worthless (a used refresh token is kept until then, for reuse detection)."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM oauth_tokens WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO oauth_tokens (token_hash, kind, grant_id, client_id, scopes, "
                "scope_mark, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (digest(token), kind, grant_id, client_id, scopes, scope_mark, now, now + ttl_s),
            )

    def token(self, token: str) -> Token | None:
        """A stored token by its value, with its grant's revocation folded in."""
        rows = self.store.query(f"{_SELECT_TOKENS} WHERE t.token_hash = ?", (digest(token),))
        return _token(rows[0]) if rows else None

    def live_tokens(self, client_id: str, *, now: float) -> list[Token]:
        """The client's unexpired, unrevoked, unused tokens (of grants not revoked)."""
        rows = self.store.query(
            f"{_SELECT_TOKENS} WHERE t.client_id = ? AND g.revoked_at IS NULL "
            "AND t.revoked_at IS NULL AND t.used_at IS NULL AND t.expires_at > ?",
            (client_id, now),
        )
        return [_token(row) for row in rows]

    def mark_used(self, token_hash: str, *, now: float) -> None:
        """A rotated refresh token: kept (not deleted) so that presenting it again is noticed."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE oauth_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                (now, token_hash),
            )

    def revoke_token(self, token_hash: str, *, now: float) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE oauth_tokens SET revoked_at = ? WHERE token_hash = ? "
                "AND revoked_at IS NULL",
                (now, token_hash),
            )

    def revoke_grant(self, grant_id: int, *, reason: str, now: float) -> bool:
        """Revoke a grant (and so all its tokens); False when it already was."""
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE oauth_grants SET revoked_at = ?, revoked_reason = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (now, reason, grant_id),
            )
            return cur.rowcount > 0


_SELECT_TOKENS = (
    "SELECT t.token_hash, t.kind, t.grant_id, t.client_id, t.scopes, t.issued_at, t.expires_at, "
    "t.used_at, (t.revoked_at IS NOT NULL OR g.revoked_at IS NOT NULL), t.scope_mark "
    "FROM oauth_tokens t JOIN oauth_grants g ON g.id = t.grant_id"
)


def _token(row: sqlite3.Row) -> Token:
    return Token(
        token_hash=row[0],
        kind=row[1],
        grant_id=int(row[2]),
        client_id=row[3],
        scopes=row[4],
        issued_at=float(row[5]),
        expires_at=float(row[6]),
        used_at=row[7],
        revoked=bool(row[8]),
        scope_mark=int(row[9]),
    )
