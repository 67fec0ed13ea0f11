"""Lenient readers for provider JSON: whatever arrives, the answer is a value or None, no crash.

Ford's documents send numbers as strings now and then, leave fields out, send nulls, and grow new
enum values; the normalised model treats all of these as "unknown" rather than as errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

E = TypeVar("E")


def dig(doc: Any, *keys: str) -> Any:
    """`doc[k1][k2]…`, or None as soon as a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def number(value: Any) -> float | None:
    """A finite float from a number or a numeric string; booleans and garbage are unknown."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):  # Overflow: a JSON integer past 1.8e308
        return None
    return result if math.isfinite(result) else None


def flag(value: Any) -> bool | None:
    """A boolean from true/false, "true"/"false", 1/0; anything else is unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return (value.strip() or None) if isinstance(value, str) else None


def token(value: Any) -> str | None:
    """An enum-ish string folded for lookups: `Charging_AC` → `CHARGINGAC`."""
    raw = text(value)
    return raw.upper().replace("_", "").replace(" ", "").replace("-", "") if raw else None


def lookup(value: Any, table: Mapping[str, E], default: E) -> E:
    """Map an enum string through `table` (keys folded like `token`); unknown values → default."""
    key = token(value)
    return table.get(key, default) if key is not None else default


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (`Z` accepted) as an aware UTC datetime, or None."""
    raw = text(value)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # Overflow: an offset moving it past year 9999 or before 1
        return None


def v1_time(value: Any) -> datetime | None:
    """FordConnect v1's `MM-DD-YYYY HH:MM:SS` (UTC); ISO is accepted too."""
    raw = text(value)
    if raw is None:
        return None
    try:
        return datetime.strptime(raw, "%m-%d-%Y %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return iso_time(raw)


def latest(*times: datetime | None) -> datetime | None:
    """The most recent of the known times."""
    known = [t for t in times if t is not None]
    return max(known) if known else None
