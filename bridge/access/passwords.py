"""Generated broker passwords and Mosquitto's `$7$` password-file hash (PBKDF2-HMAC-SHA512)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Mosquitto 2.0's mosquitto_passwd writes `$7$<iterations>$<b64 salt>$<b64 hash>` with a 12-byte
# salt and 101 iterations. The low count is Mosquitto's choice (it hashes on every CONNECT); our
# passwords are 192 random bits, so guessing is hopeless however cheap one hash is.
HASH_ID = "7"
DEFAULT_ITERATIONS = 101
SALT_BYTES = 12


def generate_password() -> str:
    """A fresh broker password: 24 random bytes, URL-safe (32 characters)."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """The hash mosquitto_passwd would write for `password` (random salt unless given)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"${HASH_ID}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    """True if `encoded` (a `$7$` hash) was made from `password`; False for any other format."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != HASH_ID or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
