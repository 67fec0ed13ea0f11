"""The SQLite state store: private file, per-part migrations, transactions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bridge.errors import StateError
from bridge.files import read_private, write_private_atomic
from bridge.store import Store


def test_store_is_private_and_migrations_run_once(tmp_path: Path) -> None:
    """The database is 0600 in a 0700 directory, and a part's migrations apply once."""
    store = Store.open(tmp_path / "state")
    steps = ["CREATE TABLE t (x INTEGER)", "CREATE TABLE u (y TEXT); CREATE INDEX ui ON u (y)"]
    store.migrate("demo", steps)
    store.migrate("demo", steps)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.query("SELECT version FROM schema_versions WHERE part='demo'")[0][0] == 2


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    """A failing block leaves no partial write."""
    store = Store.open(tmp_path)
    store.migrate("demo", ["CREATE TABLE t (x INTEGER)"])
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError
    assert store.query("SELECT count(*) FROM t")[0][0] == 0


def test_private_atomic_write(tmp_path: Path) -> None:
    """A private file is written 0600 and replaced whole; group-readable files are refused."""
    path = tmp_path / "secret.json"
    write_private_atomic(path, b"one")
    write_private_atomic(path, b"two")
    assert read_private(path) == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(StateError, match="chmod 600"):
        read_private(path)
