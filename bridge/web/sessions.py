"""Owner sessions: random ids in an HttpOnly cookie, stored only as hashes, with a CSRF token each.

A visitor gets an anonymous session before logging in so the login form carries a CSRF token too;
logging in replaces it with a fresh owner session (a fixated id never becomes an owner's).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from bridge.store import Store
from bridge.web.ports import Clock


@dataclass(frozen=True, slots=True)
class Session:
    """One browser session. `csrf` is the synchronizer token every form must echo."""

    id_hash: str
    csrf: str
    owner: bool
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        """Constant-time check of the token a form sent back."""
        if not presented:
            return False
        # As bytes: compare_digest raises TypeError for str with non-ASCII characters, which
        # made a form posted with `csrf=é` a 500 rather than the 403 of any other wrong token.
        return hmac.compare_digest(self.csrf.encode(), _utf8(str(presented)))


def _utf8(text: str) -> bytes:
    # A lone surrogate cannot be encoded strictly; it is still only a wrong token.
    return text.encode("utf-8", "surrogatepass")


def hash_id(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def cookie_name(secure: bool) -> str:
    """`__Host-` makes the browser insist on Secure, Path=/ and no Domain; usable only over TLS."""
    return "__Host-ownerlink" if secure else "ownerlink_session"


# Anonymous sessions (the login form's CSRF token) kept at most; older ones are forgotten, and a
# login form that old is answered "reload the page".
MAX_ANONYMOUS = 100


class Sessions:
    """Creates, finds and ends sessions in the `web_sessions` table."""

    def __init__(self, *, store: Store, clock: Clock, minutes: int) -> None:
        self.store = store
        self.clock = clock
        self.lifetime = timedelta(minutes=minutes)

    def create(self, *, owner: bool) -> tuple[str, Session]:
        """A new session; returns the raw id (for the cookie only) and the session."""
        raw = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(
            id_hash=hash_id(raw),
            csrf=secrets.token_urlsafe(32),
            owner=owner,
            expires_at=(now + self.lifetime).timestamp(),
        )
        with self.store.transaction() as conn:
            # Expired rows are swept here rather than by a timer: creation is rare and cheap.
            conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now.timestamp(),))
            conn.execute(
                "INSERT INTO web_sessions (id_hash, csrf, owner, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (session.id_hash, session.csrf, int(owner), now.timestamp(), session.expires_at),
            )
            if not owner:
                # Anyone the address allowlist admits makes one per cookie-less GET /login: keep
                # only the newest, or a loop of such requests would fill the disk.
                conn.execute(
                    "DELETE FROM web_sessions WHERE owner = 0 AND id_hash NOT IN "
                    "(SELECT id_hash FROM web_sessions WHERE owner = 0 "
                    "ORDER BY created_at DESC, rowid DESC LIMIT ?)",
                    (MAX_ANONYMOUS,),
                )
        return raw, session

    def load(self, raw: str | None) -> Session | None:
        """The live session for a cookie value, or None when unknown or expired."""
        if not raw or len(raw) > 128:
            return None
        rows = self.store.query(
            "SELECT id_hash, csrf, owner, expires_at FROM web_sessions "
            "WHERE id_hash = ? AND expires_at > ?",
            (hash_id(raw), self.clock().timestamp()),
        )
        if not rows:
            return None
        row = rows[0]
        return Session(row["id_hash"], row["csrf"], bool(row["owner"]), row["expires_at"])

    def end(self, session: Session) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (session.id_hash,))

    def max_age(self) -> int:
        """Cookie Max-Age in seconds, equal to the server-side lifetime."""
        return int(self.lifetime.total_seconds())
