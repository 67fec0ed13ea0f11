"""SQLite access with sqlite3 errors mapped to StateError (commands, discovery memory)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bridge.errors import StateError
from bridge.store import Store


@contextmanager
def writing(store: Store, what: str) -> Iterator[sqlite3.Connection]:
    """A committed (and, with synchronous=FULL, durable) transaction; StateError on failure."""
    try:
        with store.transaction() as conn:
            yield conn
    except sqlite3.Error as exc:
        raise StateError(f"{what}: {exc}") from exc


def reading(store: Store, what: str, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
    """A query; StateError on failure."""
    try:
        return store.query(sql, params)
    except sqlite3.Error as exc:
        raise StateError(f"{what}: {exc}") from exc
