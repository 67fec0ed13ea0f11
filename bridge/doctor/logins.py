"""Login checks: each account's token file and whether polling can go on with it."""

from __future__ import annotations

from datetime import datetime, timedelta

from bridge.doctor.model import AS_DAEMON_USER, Check, failed, passed, relogin, span, warning
from bridge.errors import StateError
from bridge.providers.tokens import StoredTokens, TokenStore

# Warn this long before a refresh token dies, so the owner can log in before polling stops.
RELOGIN_WARNING = timedelta(days=2)


def check_tokens(account: str, store: TokenStore, now: datetime) -> Check:
    """The account's token file: present, readable, and whether polling can go on."""
    try:
        stored = store.load(account)
    except StateError as exc:
        return failed(
            f"tokens: {account}",
            str(exc),
            f"chmod 600 {store.path(account)}; if the file is damaged: {relogin(account)}",
        )
    except OSError as exc:  # the state directory belongs to someone else
        return failed(f"tokens: {account}", f"cannot read: {exc.strerror}", AS_DAEMON_USER)
    return judge_tokens(account, stored, now)


def judge_tokens(account: str, stored: StoredTokens | None, now: datetime) -> Check:
    """Pure: what a token file means for the daemon at `now`."""
    name, at = f"tokens: {account}", now.timestamp()
    if stored is None:
        return failed(name, "not logged in (no token file)", relogin(account))
    if stored.relogin_needed:
        return failed(name, "re-login needed: Ford refused the stored login", relogin(account))
    dead = _unusable(stored, at)
    if dead is not None:
        return failed(name, dead, relogin(account))
    detail = f"{_access_text(stored, at)}; {_refresh_text(stored, at)}"
    ends = stored.refresh_expires_at
    if ends is not None and ends - at < RELOGIN_WARNING.total_seconds():
        return warning(name, detail, f"log in again before it expires: ownerlink login {account}")
    return passed(name, detail)


def _unusable(stored: StoredTokens, at: float) -> str | None:
    """Why these tokens cannot get the daemon a working access token, or None."""
    access_dead = stored.access_token is None or stored.expires_at <= at
    if stored.refresh_token is None and access_dead:
        return "the access token has expired and there is no refresh token"
    ends = stored.refresh_expires_at
    if ends is not None and ends <= at:
        return f"the refresh token expired {span(at - ends)} ago"
    return None


def _access_text(stored: StoredTokens, at: float) -> str:
    if stored.access_token is None or stored.expires_at <= at:
        # Normal: access tokens live 20 minutes and are refreshed when next needed.
        return "access token expired (renewed on next use)"
    return f"access token valid for {span(stored.expires_at - at)}"


def _refresh_text(stored: StoredTokens, at: float) -> str:
    if stored.refresh_expires_at is None:
        return "refresh token present (Ford did not say when it expires)"
    return f"refresh token expires in {span(stored.refresh_expires_at - at)}"
