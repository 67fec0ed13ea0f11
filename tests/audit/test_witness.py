"""A lost or replaced state database is noticed by the audit log it leaves behind."""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.audit.log import audit_directory
from bridge.audit.witness import replaced_database
from bridge.store import BORN_AT_AUDIT_HEAD, DB_NAME, Store
from tests.audit.helpers import open_log


def write(state_dir: Path, *kinds: str) -> None:
    log = open_log(audit_directory(state_dir))
    for kind in kinds:
        log.append(kind, app="ha")
    log.close()


def check(state_dir: Path) -> str | None:
    store = Store.open(state_dir)
    try:
        return replaced_database(store, audit_directory(state_dir))
    finally:
        store.close()


def test_a_database_used_from_the_start_is_never_taken_for_a_replacement(tmp_path: Path) -> None:
    """The normal life: database first, then records of every kind, restarts in between."""
    assert check(tmp_path) is None
    write(tmp_path, "app.added", "command.decision", "owner.login")
    assert check(tmp_path) is None
    write(tmp_path, "app.revoked")
    assert check(tmp_path) is None


def test_a_deleted_database_is_named_with_the_record_that_proves_it(tmp_path: Path) -> None:
    """Records an earlier database wrote (here an app registered) are older than the new one."""
    Store.open(tmp_path).close()
    write(tmp_path, "stepup.enrolled", "app.added", "app.revoked")
    (tmp_path / DB_NAME).unlink()
    problem = check(tmp_path)
    assert problem is not None
    assert "record 2 (app.added)" in problem
    assert "Restore the database from a backup" in problem
    assert "move the audit files into a dated folder" in problem


def test_an_emptied_database_counts_as_a_new_one(tmp_path: Path) -> None:
    """`: > ownerlink.db` leaves a file SQLite opens as a brand-new database."""
    Store.open(tmp_path).close()
    write(tmp_path, "command.decision")
    (tmp_path / DB_NAME).write_bytes(b"")
    assert check(tmp_path) is not None


def test_records_no_database_wrote_prove_nothing(tmp_path: Path) -> None:
    """Step-up enrolment lives in a file of its own: a database made after it replaced none."""
    write(tmp_path, "stepup.enrolled", "audit.repaired")
    assert check(tmp_path) is None


def test_the_birth_mark_survives_later_use_and_later_records(tmp_path: Path) -> None:
    """A replaced database stays recognisable after CLI commands have used it and written more
    records; moving the audit files aside (starting over on purpose) clears the way."""
    Store.open(tmp_path).close()
    write(tmp_path, "app.added")
    (tmp_path / DB_NAME).unlink()
    assert check(tmp_path) is not None
    write(tmp_path, "app.added", "app.scopes_granted")
    assert check(tmp_path) is not None
    shutil.move(audit_directory(tmp_path), tmp_path / "audit-old")
    assert check(tmp_path) is None
    write(tmp_path, "command.decision", "app.added", "command.outcome")  # the new chain's 1-3
    assert check(tmp_path) is None


def test_a_database_from_before_the_mark_is_taken_as_it_is(tmp_path: Path) -> None:
    """Databases made by earlier versions carry no birth mark: nothing to compare, no refusal."""
    Store.open(tmp_path).close()
    write(tmp_path, "app.added")
    (tmp_path / DB_NAME).unlink()
    store = Store.open(tmp_path)
    with store.transaction() as conn:
        conn.execute("DELETE FROM state_meta WHERE key = ?", (BORN_AT_AUDIT_HEAD,))
    store.close()
    assert check(tmp_path) is None


def test_two_processes_finding_the_database_new_keep_the_first_birth_mark(tmp_path: Path) -> None:
    """The daemon and a command start together on a new state directory and both find the
    database new. The command, later, marked its birth after the daemon had written records:
    the next start took the database for the replacement of itself, and refused to run."""
    daemon = Store.open(tmp_path)
    write(tmp_path, "app.added", "command.decision")
    command = Store(tmp_path / DB_NAME)
    command.connect()
    command.created = True  # it looked before the daemon's tables were there
    command.mark_birth(tmp_path)
    command.close()
    daemon.close()
    assert check(tmp_path) is None
