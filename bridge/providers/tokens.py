"""Token files and the token lifecycle: refresh ahead of expiry, once, persisted before use.

Each account's tokens live in `<state_dir>/tokens/<account>.json` (0600, replaced atomically). A
refresh token Ford rotates is written to disk *before* the new access token is handed out: if we
crashed after using it but before saving it, the owner would have to log in again.

The daemon and a CLI command may refresh the same account at the same moment. Ford rotates the
refresh token for whichever arrives first and answers the other `invalid_grant`, so a refresh holds
an exclusive `flock` on `<account>.lock` from re-reading the file until the answer is saved: the
second process then finds the first one's tokens and uses them. A refresh that still ends in
`invalid_grant` adopts newer tokens another process saved meanwhile; only when there are none does
it set `relogin_needed` in the file, raise one alert, and from then on every call fails fast with
ReauthRequired, without touching the network, until a new login.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import (
    AuthUnavailable,
    LoginError,
    ProviderUnavailable,
    ReauthRequired,
    StateError,
)
from bridge.events import Alert, AlertKind, AlertSink
from bridge.files import open_lock, read_private, write_private_atomic
from bridge.logs import get_logger, register_secret
from bridge.providers.oauth import InvalidGrant, LoginRequest, OAuthClient, TokenSet
from bridge.store import ensure_private_dir

# Refresh this long before the access token expires (at most half its lifetime), so a request
# never leaves with a token that dies in flight (Ford's access tokens live 20 minutes).
REFRESH_AHEAD_S = 60.0
# When that early refresh fails (the login service is down), the token in hand is still used
# while it has at least this long to live, enough for a request to be answered.
KEEP_USING_S = 20.0
# A login the owner has not finished within this time is abandoned (Ford's codes expire sooner).
LOGIN_TTL_S = 15 * 60
FILE_VERSION = 1
# Another process holds an account's lock for one token request, which times out within 120 s
# (the largest `request_timeout_s`); a lock held much longer belongs to a process that hangs.
LOCK_WAIT_S = 150.0
# Waiting retries a non-blocking lock at this interval, so the event loop never blocks on it.
LOCK_RETRY_S = 0.05

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredTokens:
    """The token file's content."""

    access_token: str | None
    refresh_token: str | None
    expires_at: float
    refresh_expires_at: float | None = None
    obtained_at: float = 0.0
    relogin_needed: bool = False

    @classmethod
    def issued(cls, tokens: TokenSet, now: float) -> StoredTokens:
        return cls(
            tokens.access_token,
            tokens.refresh_token,
            tokens.expires_at,
            tokens.refresh_expires_at,
            now,
        )


class TokenStore:
    """The token files of all accounts under `<state_dir>/tokens/`."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "tokens"

    def path(self, account: str) -> Path:
        return self.directory / f"{account}.json"

    def login_path(self, account: str) -> Path:
        return self.directory / f"{account}.login.json"

    def lock_path(self, account: str) -> Path:
        return self.directory / f"{account}.lock"

    @asynccontextmanager
    async def exclusive(self, account: str) -> AsyncIterator[None]:
        """Hold the account's lock file against every other process (and manager) using it.

        Closing the descriptor releases the lock, also when the waiting task is cancelled.
        """
        path = self.lock_path(account)
        fd = self._open_lock(path)
        try:
            await _acquire(fd, path)
            yield
        finally:
            os.close(fd)

    def load(self, account: str) -> StoredTokens | None:
        """The account's tokens, or None before the first login."""
        doc = self._read(self.path(account))
        if doc is None:
            return None
        try:
            fields = {k: doc[k] for k in StoredTokens.__dataclass_fields__ if k in doc}
            stored = StoredTokens(**fields)
        except TypeError as exc:
            raise StateError(f"{self.path(account)}: not a token file") from exc
        register_secret(stored.access_token)
        register_secret(stored.refresh_token)
        return stored

    def save(self, account: str, tokens: StoredTokens) -> None:
        """Write the token file atomically (0600): a crash leaves the old file or the new one."""
        self._write(self.path(account), {"version": FILE_VERSION, **asdict(tokens)})

    def save_login(self, account: str, login: LoginRequest) -> None:
        """Remember a login in progress so another invocation (`--redirect-url`) can finish it."""
        self._write(self.login_path(account), {"version": FILE_VERSION, **asdict(login)})

    def load_login(self, account: str, now: float) -> LoginRequest:
        """The login in progress, or LoginError when there is none or it is too old."""
        doc = self._read(self.login_path(account))
        if doc is None:
            raise LoginError(
                f"no login in progress for account {account}; run `ownerlink login {account}` first"
            )
        doc.pop("version", None)
        try:
            login = LoginRequest(**doc)
        except TypeError as exc:
            raise LoginError(
                f"the login in progress for account {account} is unreadable; "
                f"run `ownerlink login {account}` again"
            ) from exc
        if now - login.created_at > LOGIN_TTL_S:
            raise LoginError(
                f"the login for account {account} started too long ago; "
                f"run `ownerlink login {account}` again"
            )
        register_secret(login.code_verifier)
        return login

    def forget_login(self, account: str) -> None:
        self.login_path(account).unlink(missing_ok=True)

    def _read(self, path: Path) -> dict[str, Any] | None:
        raw = read_private(path)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"{path}: unreadable ({exc.__class__.__name__})") from exc
        if not isinstance(doc, dict):
            raise StateError(f"{path}: not a JSON object")
        return doc

    def _write(self, path: Path, doc: dict[str, Any]) -> None:
        self._private_directory()
        write_private_atomic(path, json.dumps(doc, indent=2).encode())

    def _private_directory(self) -> None:
        # 0700: the directory listing already tells which accounts exist.
        ensure_private_dir(self.directory)
        self.directory.chmod(0o700)

    def _open_lock(self, path: Path) -> int:
        self._private_directory()
        fd = open_lock(path)
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask; be exact like the others
        return fd


async def _acquire(fd: int, path: Path) -> None:
    """Take the lock, retrying without blocking: the holder may be a task on this very loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_S
    while not _try_lock(fd, path):
        if loop.time() >= deadline:
            raise ProviderUnavailable(
                f"{path}: another process has held it for {LOCK_WAIT_S:.0f} s; retrying later"
            )
        await asyncio.sleep(LOCK_RETRY_S)


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise StateError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    return True


class TokenManager:
    """One account's tokens in the running process: valid on demand, refreshed once at a time."""

    def __init__(
        self,
        *,
        account: str,
        store: TokenStore,
        oauth: OAuthClient,
        alerts: AlertSink,
        clock: Callable[[], float] = time.time,
        refresh_ahead_s: float = REFRESH_AHEAD_S,
    ) -> None:
        self.account = account
        self._store = store
        self._oauth = oauth
        self._alerts = alerts
        self._clock = clock
        self._ahead = refresh_ahead_s
        self._tokens: StoredTokens | None = None
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        """A token valid for at least `refresh_ahead_s`; refreshes first when it is not."""
        tokens = self._current()
        if self._fresh(tokens):
            assert tokens.access_token is not None
            return tokens.access_token
        async with self._lock:  # concurrent callers wait here and reuse the one refresh
            tokens = self._current()
            if not self._fresh(tokens):
                tokens = await self._refresh_or_keep(tokens)
            assert tokens.access_token is not None
            return tokens.access_token

    async def _refresh_or_keep(self, tokens: StoredTokens) -> StoredTokens:
        """A refresh ahead of expiry; if the login service is down, the tokens in hand while
        their access token still lives: an outage costs nothing before it has to."""
        try:
            return await self._refresh(tokens)
        except AuthUnavailable:
            alive = tokens.access_token is not None and tokens.expires_at - KEEP_USING_S > (
                self._clock()
            )
            if not alive:
                raise
            log.info("provider.token_kept", account=self.account, reason="refresh failed")
            return tokens

    async def refresh_rejected(self, rejected: str) -> None:
        """The API said 401 to `rejected`: refresh, unless another caller already replaced it."""
        async with self._lock:
            tokens = self._current()
            if tokens.access_token == rejected:
                await self._refresh(tokens, rejected=rejected)

    async def complete_login(self, login: LoginRequest, code: str) -> None:
        """Exchange the code from the owner's redirect and store the tokens (clears the flag)."""
        issued = await self._oauth.exchange_code(code, code_verifier=login.code_verifier)
        # Under the file lock too: a refresh in the daemon then saves before us, never after.
        async with self._lock, self._store.exclusive(self.account):
            self._tokens = StoredTokens.issued(issued, self._clock())
            await asyncio.to_thread(self._store.save, self.account, self._tokens)  # see _renew
        log.info("provider.login_stored", account=self.account)

    @property
    def relogin_needed(self) -> bool:
        tokens = self._tokens or self._store.load(self.account)
        return tokens is not None and tokens.relogin_needed

    def _current(self) -> StoredTokens:
        """The tokens to use; re-reads the file when it may have changed (a login elsewhere)."""
        if self._tokens is None or self._tokens.relogin_needed:
            # Local file I/O only: this is how a daemon notices a `ownerlink login` run beside it.
            self._tokens = self._store.load(self.account)
        tokens = self._tokens
        if tokens is None:
            raise ReauthRequired(
                f"account {self.account} is not logged in; run `ownerlink login {self.account}`"
            )
        if tokens.relogin_needed:
            raise ReauthRequired(
                f"account {self.account} needs a new login; run `ownerlink login {self.account}`"
            )
        return tokens

    def _fresh(self, tokens: StoredTokens) -> bool:
        if tokens.access_token is None:
            return False
        # At most half the lifetime ahead: a token living under two minutes would otherwise be
        # stale as soon as it arrives, and every request would refresh first.
        ahead = min(self._ahead, (tokens.expires_at - tokens.obtained_at) / 2)
        return tokens.expires_at - ahead > self._clock()

    async def _refresh(self, tokens: StoredTokens, rejected: str | None = None) -> StoredTokens:
        """New tokens from the refresh token, unless the file already has usable newer ones."""
        # Held from the re-read to the save: a second process waits, then re-reads our answer
        # instead of spending the refresh token Ford is rotating for us.
        async with self._store.exclusive(self.account):
            tokens = self._adopt_newer_file(tokens)
            if self._fresh(tokens) and tokens.access_token != rejected:
                return tokens
            return await self._renew(tokens)

    async def _renew(self, tokens: StoredTokens) -> StoredTokens:
        """One refresh at the token endpoint, persisted before it is handed out."""
        if tokens.refresh_token is None:
            raise ReauthRequired(
                f"account {self.account} has no refresh token; run `ownerlink login {self.account}`"
            )
        try:
            issued = await self._oauth.refresh(tokens.refresh_token)
        except InvalidGrant as exc:
            return self._after_invalid_grant(tokens, exc)
        renewed = StoredTokens.issued(issued, self._clock())
        # Persist first: a rotated refresh token that only lived in memory dies with the process.
        # On a worker thread: the save fsyncs the file and its directory, which can take a good
        # part of a second on an SD card, and the event loop carries MQTT and commands meanwhile.
        await asyncio.to_thread(self._store.save, self.account, renewed)
        self._tokens = renewed
        log.info(
            "provider.token_refreshed",
            account=self.account,
            rotated=renewed.refresh_token != tokens.refresh_token,
            expires_in=round(renewed.expires_at - self._clock()),
        )
        return renewed

    def _after_invalid_grant(self, sent: StoredTokens, exc: InvalidGrant) -> StoredTokens:
        """Ford refused `sent`'s refresh token. A process that refreshed without the lock (an
        Ownerlink from before it) may have rotated it a moment ago: its saved tokens are alive."""
        newer = self._adopt_newer_file(sent)
        if newer.refresh_token != sent.refresh_token:
            log.info("provider.token_adopted_after_refusal", account=self.account)
            return newer
        self._mark_relogin(sent)
        raise ReauthRequired(
            f"account {self.account}: Ford refused the refresh token; "
            f"run `ownerlink login {self.account}`"
        ) from exc

    def _adopt_newer_file(self, tokens: StoredTokens) -> StoredTokens:
        """Another process (the CLI beside the daemon) may have refreshed and rotated already."""
        on_disk = self._store.load(self.account)
        if (
            on_disk is not None
            and not on_disk.relogin_needed
            and on_disk != tokens
            and on_disk.obtained_at >= tokens.obtained_at
        ):
            self._tokens = on_disk
            return on_disk
        return tokens

    def _mark_relogin(self, tokens: StoredTokens) -> None:
        flagged = replace(tokens, access_token=None, relogin_needed=True)
        self._tokens = flagged
        self._store.save(self.account, flagged)
        log.warning("provider.relogin_needed", account=self.account)
        self._alerts.emit(
            Alert(
                kind=AlertKind.RELOGIN_NEEDED,
                message=f"Ford refused the stored login for account {self.account}; "
                f"run `ownerlink login {self.account}`",
                ts=datetime.fromtimestamp(self._clock(), UTC),
                account=self.account,
            )
        )
