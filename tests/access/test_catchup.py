"""A state database behind the audit log (restored from an older backup, or a crash between a
change's record and its commit): what took access away counts again (bridge.access.catchup)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bridge.access.catchup import missed_changes
from bridge.access.values import ChangeKind
from bridge.audit.chain import read_records
from bridge.audit.log import audit_directory
from bridge.cli import main
from tests.access.test_cli_apps import none_config, write_config

__all__ = ["none_config"]  # a fixture, used by name


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_missed_changes_are_the_registry_records_after_the_mark() -> None:
    records: list[dict[str, Any]] = [
        {"seq": 1, "kind": "app.added", "app": "a"},
        {"seq": 2, "kind": "command.decision", "app": "a"},
        {"seq": 3, "kind": "app.revoked", "app": "a"},
        {"seq": 4, "kind": "app.scopes_granted", "app": "b"},
        {"seq": 5, "kind": "owner.login"},
    ]
    missed = missed_changes(records, 1)
    assert [(m.seq, m.kind, m.narrowing) for m in missed] == [
        (3, ChangeKind.REVOKED, True),
        (4, ChangeKind.SCOPES_GRANTED, False),
    ]


def _apps(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["apps", *argv, "--config", str(config)]) == 0
    return capsys.readouterr().out


def _database_files(state: Path) -> list[Path]:
    return sorted(state.glob("ownerlink.db*"))


def test_a_database_restored_from_before_a_revocation_does_not_bring_the_app_back(
    none_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Backed up with four apps; then one revoked, one disabled, one's unlock withdrawn, one's
    password reset, and a fifth added. The backup restored, the next `ownerlink apps` run
    applies again everything that took access away, leaves the added app for the owner, and
    says so; the run after it finds nothing more to do."""
    state = tmp_path / "state"
    for app in ("gone", "paused", "narrowed", "reset"):
        _apps(
            none_config, capsys, "add", app, "--scopes", "read:status,command:lock,command:unlock"
        )
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _database_files(state):
        shutil.copy2(path, backup / path.name)
    _apps(none_config, capsys, "revoke", "gone")
    _apps(none_config, capsys, "disable", "paused")
    _apps(none_config, capsys, "withdraw", "narrowed", "command:unlock")
    _apps(none_config, capsys, "reset-password", "reset")
    _apps(none_config, capsys, "add", "late", "--scopes", "read:status")

    for path in _database_files(state):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, state / path.name)  # the owner restores last week's database
    assert main(["apps", "list", "--json", "--config", str(none_config)]) == 0
    out, err = capsys.readouterr()
    assert "registry_behind" in err  # the owner is told, change by change
    listed = json.loads(out)
    apps = {a["id"]: a for a in (listed["apps"] if isinstance(listed, dict) else listed)}
    assert "gone" not in apps and "late" not in apps
    assert apps["paused"]["enabled"] is False and apps["reset"]["enabled"] is False
    assert "command:unlock" not in apps["narrowed"]["scopes"]
    assert apps["narrowed"]["enabled"] is True

    records = list(read_records(audit_directory(state)))
    again = [(r["kind"], r["app"]) for r in records if r.get("actor") == "audit-log"]
    assert again == [
        ("app.revoked", "gone"),
        ("app.disabled", "paused"),
        ("app.scopes_withdrawn", "narrowed"),
        ("app.disabled", "reset"),
    ]
    assert main(["apps", "list", "--config", str(none_config)]) == 0
    assert "registry_behind" not in capsys.readouterr().err  # nothing missed any more
    assert len(list(read_records(audit_directory(state)))) == len(records)


def test_a_database_that_never_had_the_mark_is_taken_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_topic: str
) -> None:
    """A database from before the mark existed: nothing to compare with, so nothing is applied
    again (as before); from then on it is marked, at the log's head."""
    config = write_config(tmp_path / "c.yaml", tmp_path / "state", port=1, base_topic=base_topic)
    _apps(config, capsys, "add", "a", "--scopes", "read:status")
    _apps(config, capsys, "revoke", "a")
    import sqlite3

    with sqlite3.connect(tmp_path / "state" / "ownerlink.db") as conn:
        conn.execute("DELETE FROM state_meta WHERE key = 'registry_at_seq'")
    before = len(list(read_records(audit_directory(tmp_path / "state"))))
    _apps(config, capsys, "list")
    assert len(list(read_records(audit_directory(tmp_path / "state")))) == before
    with sqlite3.connect(tmp_path / "state" / "ownerlink.db") as conn:
        [(mark,)] = conn.execute(
            "SELECT value FROM state_meta WHERE key = 'registry_at_seq'"
        ).fetchall()
    assert int(mark) == before


def test_records_after_opens_only_the_files_that_can_hold_them(tmp_path: Path) -> None:
    """Across rotated files: exactly the records past the seq, in order."""
    from datetime import UTC, datetime

    from bridge.audit.chain import rotated_files
    from bridge.audit.log import AuditLog
    from bridge.audit.read import records_after

    directory = tmp_path / "audit"
    with AuditLog(directory, clock=lambda: datetime.now(UTC), rotate_bytes=600) as log:
        for n in range(30):
            log.append("app.touched", app=f"a{n}", note="x" * 40)
    rotated = rotated_files(directory)
    assert len(rotated) >= 3
    assert [r["seq"] for r in records_after(directory, 25)] == [26, 27, 28, 29, 30]
    assert [r["seq"] for r in records_after(directory, 0)] == list(range(1, 31))
    assert list(records_after(directory, 30)) == []


def test_the_mark_moves_past_what_a_catch_up_read_so_the_next_reads_no_further_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_topic: str
) -> None:
    """Months of commands and no app change: the mark stayed at the last app change, and every
    start read all the log written since. Read once, the log is held up to its head."""
    from datetime import UTC, datetime

    from bridge.audit.log import AuditLog

    config = write_config(tmp_path / "c.yaml", tmp_path / "state", port=1, base_topic=base_topic)
    _apps(config, capsys, "add", "a", "--scopes", "read:status")
    directory = audit_directory(tmp_path / "state")
    with AuditLog(directory, clock=lambda: datetime.now(UTC), rotate_bytes=1 << 20) as log:
        for n in range(50):
            log.append("command.decision", app="a", id=f"c{n}", decision="refused", reason="x")
    head = log.head[0]
    _apps(config, capsys, "list")
    import sqlite3

    with sqlite3.connect(tmp_path / "state" / "ownerlink.db") as conn:
        [(mark,)] = conn.execute(
            "SELECT value FROM state_meta WHERE key = 'registry_at_seq'"
        ).fetchall()
    assert int(mark) == head


def test_a_mark_that_cannot_move_while_the_database_is_held_does_not_stop_a_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_topic: str
) -> None:
    """Records past the mark, and another process holding the database: `apps list` still
    lists (the mark moves at the next run instead)."""
    import sqlite3
    from datetime import UTC, datetime

    from bridge.audit.log import AuditLog

    config = write_config(tmp_path / "c.yaml", tmp_path / "state", port=1, base_topic=base_topic)
    _apps(config, capsys, "add", "a", "--scopes", "read:status")
    directory = audit_directory(tmp_path / "state")
    with AuditLog(directory, clock=lambda: datetime.now(UTC), rotate_bytes=1 << 20) as log:
        log.append("command.decision", app="a", id="c1", decision="refused", reason="x")
    other = sqlite3.connect(tmp_path / "state" / "ownerlink.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert "a" in _apps(config, capsys, "list")
    finally:
        other.execute("ROLLBACK")
        other.close()
    _apps(config, capsys, "list")
    with sqlite3.connect(tmp_path / "state" / "ownerlink.db") as conn:
        [(mark,)] = conn.execute(
            "SELECT value FROM state_meta WHERE key = 'registry_at_seq'"
        ).fetchall()
    assert int(mark) == log.head[0]
