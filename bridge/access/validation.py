"""Checks on what the owner types, done before anything is written (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import ip_network

from bridge.errors import AccessError
from bridge.model import Scope

# The id is the broker username and a topic segment: `+`, `#` and `/` would let it match or
# address other apps' topics, so only this small alphabet is accepted.
APP_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The step-up verifier counts failures and lockouts per app id; owner logins on the web page
# count under this one, so guessing codes there locks out logins, not the owner's apps.
LOGIN_STEPUP_ID = "owner-web-login"
# Identities that belong to the owner or the daemon, never to an app.
RESERVED_IDS = frozenset({"owner", "ownerlink", "admin", LOGIN_STEPUP_ID})
MAX_NAME_LENGTH = 100
MAX_RATE_LIMIT = 600
MAX_CIDRS = 32


def check_app_id(app_id: str, reserved: Iterable[str] = ()) -> str:
    """Return `app_id` if it can be a broker username and topic segment, else raise AccessError."""
    if not APP_ID_RE.fullmatch(app_id):
        raise AccessError(
            f"invalid app id {app_id!r}: use 1-64 letters, digits, '-' or '_' "
            "(no '+', '#', '/' or spaces)"
        )
    taken = {name.lower() for name in (*RESERVED_IDS, *reserved)}
    if app_id.lower() in taken:
        raise AccessError(f"app id {app_id!r} is reserved for the owner or the daemon")
    return app_id


def check_name(name: str) -> str:
    """A display name: 1-100 printable characters, surrounding spaces removed."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH or not cleaned.isprintable():
        raise AccessError(
            f"invalid app name {name!r}: use 1-{MAX_NAME_LENGTH} printable characters"
        )
    return cleaned


def parse_scopes(values: Iterable[Scope | str]) -> frozenset[Scope]:
    """Turn `read:status`-style strings into scopes; an unknown one names the valid choices."""
    scopes: set[Scope] = set()
    for value in values:
        text = str(value).strip()
        try:
            scopes.add(Scope(text))
        except ValueError:
            valid = ", ".join(s.value for s in Scope)
            raise AccessError(f"unknown scope {text!r}; valid scopes: {valid}") from None
    return frozenset(scopes)


def split_scopes(text: str) -> list[str]:
    """`a,b, c` → ['a', 'b', 'c'] (empty items dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def check_location_opt_in(scopes: frozenset[Scope], allow_location: bool) -> None:
    """Location is never granted by accident: it needs the explicit opt-in flag."""
    if Scope.READ_LOCATION in scopes and not allow_location:
        raise AccessError(
            "read:location is opt-in: grant it only with the explicit allow-location flag "
            "(--allow-location)"
        )


def check_rate_limit(per_minute: int | None) -> int | None:
    """None means the configured default; otherwise 1-600 commands per minute."""
    if per_minute is not None and not 1 <= per_minute <= MAX_RATE_LIMIT:
        raise AccessError(f"invalid rate limit {per_minute}: use 1-{MAX_RATE_LIMIT} per minute")
    return per_minute


def normalise_cidrs(values: Iterable[str]) -> tuple[str, ...]:
    """Validate CIDRs (`192.168.1.0/24`, a bare address means /32 or /128), deduplicated, sorted."""
    networks = set()
    for value in values:
        try:
            networks.add(str(ip_network(value.strip(), strict=False)))
        except ValueError as exc:
            raise AccessError(f"invalid CIDR {value!r}: {exc}") from None
    if len(networks) > MAX_CIDRS:
        raise AccessError(f"too many CIDRs ({len(networks)}); at most {MAX_CIDRS}")
    return tuple(sorted(networks))
