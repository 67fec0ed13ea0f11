"""The clock polling code is given: a callable returning an aware UTC datetime."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real wall clock, timezone-aware."""
    return datetime.now(UTC)
