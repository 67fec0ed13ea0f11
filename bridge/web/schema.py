"""The web part's tables: the owner's login, sessions, and the OAuth server's clients and tokens.

Secrets are never stored in the clear: the owner password as a scrypt hash, session ids, codes,
tokens and client secrets as SHA-256 hashes (they are long random strings, so a fast hash is
enough; a stolen database copy cannot be replayed).
"""

from __future__ import annotations

from bridge.store import Store

WEB_STEPS = (
    """
    CREATE TABLE web_owner (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        password_hash TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE web_sessions (
        id_hash TEXT PRIMARY KEY,
        csrf TEXT NOT NULL,
        owner INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE web_login_failures (ip TEXT NOT NULL, ts REAL NOT NULL);
    CREATE INDEX web_login_failures_ip ON web_login_failures (ip, ts)
    """,
    # Addresses the owner logged in from: the bound on failures from all addresses together
    # never applies to them (bridge.web.loginlimit).
    """
    CREATE TABLE web_login_known (ip TEXT PRIMARY KEY, ts REAL NOT NULL);
    CREATE INDEX web_login_failures_ts ON web_login_failures (ts)
    """,
)

OAUTH_STEPS = (
    """
    CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('public', 'confidential')),
        secret_hash TEXT,
        redirect_uris TEXT NOT NULL,
        app_created REAL NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE oauth_grants (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        revoked_reason TEXT
    );
    CREATE TABLE oauth_codes (
        code_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        scopes TEXT NOT NULL,
        challenge TEXT NOT NULL,
        challenge_method TEXT NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        grant_id INTEGER
    );
    CREATE TABLE oauth_tokens (
        token_hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
        grant_id INTEGER NOT NULL REFERENCES oauth_grants (id),
        client_id TEXT NOT NULL,
        scopes TEXT NOT NULL,
        issued_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        revoked_at REAL
    );
    CREATE INDEX oauth_tokens_grant ON oauth_tokens (grant_id)
    """,
    # Where the registry's scope history stood when a code or token was issued: a grant ends
    # once every scope it carries has been withdrawn since, even if given back before its use.
    """
    ALTER TABLE oauth_codes ADD COLUMN scope_mark INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE oauth_tokens ADD COLUMN scope_mark INTEGER NOT NULL DEFAULT 0
    """,
    # Expired tokens are swept as new ones are stored (OAuthStore.save_token).
    """
    CREATE INDEX oauth_tokens_expiry ON oauth_tokens (expires_at)
    """,
    # Whether the authorisation request named its redirect URI: the token request must then
    # name it too (RFC 6749 §4.1.3). Codes live a minute, so older rows hardly matter.
    """
    ALTER TABLE oauth_codes ADD COLUMN redirect_named INTEGER NOT NULL DEFAULT 1
    """,
)


def migrate(store: Store) -> None:
    """Create or upgrade the web and OAuth tables (a no-op when they are current)."""
    store.migrate("web", WEB_STEPS)
    store.migrate("oauth", OAUTH_STEPS)
