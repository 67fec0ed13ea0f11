"""The owner's password: scrypt hashing and its one row in the state database.

`ownerlink owner set-password` and the Security page both call `set_owner_password`, so the
rules (minimum length, hashing, ending every session) are the same whichever surface is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

from bridge.errors import AccessError
from bridge.store import Store
from bridge.web import schema

# scrypt cost: n=2**15 is twice the usual interactive minimum (2**14) and still ~0.1 s on a
# Raspberry Pi 4; r=8, p=1 are the standard values. n * r * 128 bytes = 32 MiB of memory, which
# exceeds hashlib's default 32 MiB cap once overhead is added, hence the explicit maxmem.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
KEY_BYTES = 32
MIN_LENGTH = 10
MAX_LENGTH = 1024  # bounds the work an attacker can make scrypt's input preparation do


def check_policy(password: str) -> None:
    """Raise AccessError if the password is too short or too long to accept."""
    if len(password) < MIN_LENGTH:
        raise AccessError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise AccessError(f"the password must have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$key` with a fresh random salt; parameters travel with the hash."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Recompute the hash with the stored salt and parameters; compare in constant time."""
    try:
        algo, n, r, p, salt, key = encoded.split("$")
        if algo != "scrypt" or len(password) > MAX_LENGTH:
            return False
        expected = _unb64(key)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=KEY_BYTES
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _stored_form(store: Store, password: str) -> str:
    """The hash to store, once the password meets the policy and the table exists."""
    check_policy(password)
    schema.migrate(store)
    return hash_password(password)


def set_first_owner_password(store: Store, password: str, *, now: datetime) -> bool:
    """Store the owner password only if none is set yet; False when one was (set meanwhile by
    the CLI or another browser): the first password is never replaced this way."""
    encoded = _stored_form(store, password)
    with store.transaction() as conn:
        inserted = conn.execute(
            "INSERT OR IGNORE INTO web_owner (id, password_hash, updated_at) VALUES (1, ?, ?)",
            (encoded, now.timestamp()),
        ).rowcount
    return inserted == 1


def owner_password_hash(store: Store) -> str | None:
    """The stored hash, or None when no owner password has been set yet."""
    schema.migrate(store)  # a no-op once the table exists; the CLI may ask first
    rows = store.query("SELECT password_hash FROM web_owner WHERE id = 1")
    return str(rows[0]["password_hash"]) if rows else None


def set_owner_password(store: Store, password: str, *, now: datetime) -> None:
    """Check the policy, store the new hash and end every session (they were opened with the old
    password, which may be the reason it is being changed)."""
    encoded = _stored_form(store, password)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO web_owner (id, password_hash, updated_at) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash, "
            "updated_at = excluded.updated_at",
            (encoded, now.timestamp()),
        )
        conn.execute("DELETE FROM web_sessions")
