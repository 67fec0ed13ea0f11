"""Symlinks planted in the state directory are refused, never followed.

Whoever holds the daemon's account can plant them (the daemon is the part that faces the
network); followed by a command run as root (`sudo ownerlink …`), each one below turned into a
write, truncate, chmod or create on any file of the system it named.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyotp
import pytest

from bridge.audit.log import AuditLog
from bridge.commands.stepup import load_secret, secret_path
from bridge.daemon import INSTANCE_LOCK, claim_state_dir
from bridge.errors import AuditWriteError, StateError
from bridge.providers.tokens import TokenStore
from bridge.store import DB_NAME, Store
from tests.audit.helpers import TickingClock

PRECIOUS = b"root:x:0:0::/root:/bin/sh\n"


def _victim(tmp_path: Path, content: bytes = PRECIOUS) -> Path:
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    victim.write_bytes(content)
    victim.chmod(0o644)
    return victim


def _plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    link.symlink_to(target)


def _untouched(victim: Path, content: bytes = PRECIOUS) -> None:
    assert victim.read_bytes() == content
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_the_instance_lock_is_not_followed(tmp_path: Path) -> None:
    """daemon.lock is truncated and given the pid: through a link, any file was emptied."""
    state, victim = tmp_path / "state", _victim(tmp_path)
    _plant(state / INSTANCE_LOCK, victim)
    with pytest.raises(StateError, match="symbolic link"):
        os.close(claim_state_dir(state))
    _untouched(victim)


async def test_an_account_lock_is_not_followed(tmp_path: Path) -> None:
    """A token lock file is chmod'ed 0600: through a link, any file lost its mode."""
    state, victim = tmp_path / "state", _victim(tmp_path)
    store = TokenStore(state)
    _plant(store.lock_path("ford"), victim)
    with pytest.raises(StateError, match="symbolic link"):
        async with store.exclusive("ford"):
            pass
    _untouched(victim)


def test_the_audit_file_is_not_followed(tmp_path: Path) -> None:
    """Records are appended to audit.jsonl: through a link, to any file."""
    state, victim = tmp_path / "state", _victim(tmp_path, b"")
    _plant(state / "audit" / "audit.jsonl", victim)
    log = AuditLog(state / "audit", clock=TickingClock(), rotate_bytes=1 << 20)
    with pytest.raises(AuditWriteError, match="symbolic link"):
        log.open()
        log.append("test.record", n=1)
    _untouched(victim, b"")


def test_the_audit_lock_is_not_followed(tmp_path: Path) -> None:
    """audit.lock is created when missing: through a link, any file came into being (an
    /etc/nologin keeps every other user out)."""
    state, missing = tmp_path / "state", tmp_path / "nologin"
    _plant(state / "audit" / "audit.lock", missing)
    log = AuditLog(state / "audit", clock=TickingClock(), rotate_bytes=1 << 20)
    with pytest.raises(AuditWriteError, match="symbolic link"):
        log.open()
    assert not missing.exists()


def test_the_database_is_not_followed(tmp_path: Path) -> None:
    """The database is chmod'ed 0600 and written: through a link, any file."""
    state, victim = tmp_path / "state", _victim(tmp_path)
    _plant(state / DB_NAME, victim)
    with pytest.raises(StateError, match="symbolic link"):
        Store.open(state)
    _untouched(victim)


def test_the_write_ahead_log_is_not_followed(tmp_path: Path) -> None:
    """SQLite writes its -wal (and -shm) wherever a link there points, from byte 0."""
    state, victim = tmp_path / "state", _victim(tmp_path)
    Store.open(state).close()
    _plant(state / f"{DB_NAME}-wal", victim)
    with pytest.raises(StateError, match="symbolic link"):
        Store.open(state)
    _untouched(victim)


def test_a_secret_is_not_read_through_a_link(tmp_path: Path) -> None:
    """The step-up secret (and a token file) is read only from a file in the state directory:
    through a link, a root run read and used any private file."""
    state = tmp_path / "state"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_text(pyotp.random_base32())
    (elsewhere / "secret").chmod(0o600)
    _plant(secret_path(state), elsewhere / "secret")
    with pytest.raises(StateError, match="symbolic link"):
        load_secret(state)


def test_the_owner_command_lock_is_not_followed(tmp_path: Path) -> None:
    """owner-commands.lock is created when missing: through a link, any file came into being."""
    from bridge.commands.inflight import LOCK_FILE, owner_command_running

    state, missing = tmp_path / "state", tmp_path / "nologin"
    _plant(state / LOCK_FILE, missing)
    with pytest.raises(StateError, match="symbolic link"), owner_command_running(state):
        pass
    assert not missing.exists()
