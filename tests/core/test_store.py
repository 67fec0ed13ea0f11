"""The SQLite state store: private file, per-part migrations, transactions."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import sqlite3
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog
import yaml

from bridge.cli import main
from bridge.commands.stepup import store_secret
from bridge.errors import StateError
from bridge.files import read_private, write_private_atomic
from bridge.store import Store, ensure_private_dir

TRIALS = 20  # without the fix, one trial in two failed
STARTERS = 4


def test_store_is_private_and_migrations_run_once(tmp_path: Path) -> None:
    """The database is 0600 in a 0700 directory, and a part's migrations apply once."""
    store = Store.open(tmp_path / "state")
    steps = ["CREATE TABLE t (x INTEGER)", "CREATE TABLE u (y TEXT); CREATE INDEX ui ON u (y)"]
    store.migrate("demo", steps)
    store.migrate("demo", steps)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.query("SELECT version FROM schema_versions WHERE part='demo'")[0][0] == 2


def test_the_wal_and_shm_files_are_private_from_the_start(tmp_path: Path) -> None:
    """SQLite gives the -wal and -shm files the database file's mode when it creates them: under
    the usual umask (022) they were 0644 (the database itself was chmod'ed only after SQLite had
    created it, and the WAL with it), readable by anyone who could reach the directory."""
    old = os.umask(0o022)
    try:
        store = Store.open(tmp_path / "state")
        store.set_meta("k", "v")
    finally:
        os.umask(old)
    for name in ("ownerlink.db", "ownerlink.db-wal", "ownerlink.db-shm"):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600, name
    store.close()


def test_a_loose_wal_left_by_an_earlier_version_is_made_private_at_the_next_open(
    tmp_path: Path,
) -> None:
    """A -wal and -shm with records in them (a daemon of an earlier version killed, or still
    running) keep their mode: SQLite goes on using them, so opening the store tightens them."""
    state = tmp_path / "state"
    earlier = Store.open(state)
    earlier.set_meta("k", "v")
    for name in ("ownerlink.db-wal", "ownerlink.db-shm"):
        (state / name).chmod(0o644)
    store = Store.open(state)
    for name in ("ownerlink.db-wal", "ownerlink.db-shm"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    store.close()
    earlier.close()


def _state_of_another_user(tmp_path: Path) -> Path:
    """A state directory that does not belong to root (as root: handed to `nobody`)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)
    return state


def test_root_refuses_another_users_state_directory(tmp_path: Path) -> None:
    """`sudo ownerlink login` instead of `sudo -u ownerlink …`: root created tokens/ (and the
    token files, the step-up secret, audit files) as its own, 0600, and the daemon's user could
    no longer read them. It is refused, saying which user to run as; nothing is created."""
    state = _state_of_another_user(tmp_path)
    with pytest.raises(StateError, match=r"runs as root.*sudo -u"):
        ensure_private_dir(state / "tokens", euid=0)
    assert not (state / "tokens").exists()
    with pytest.raises(StateError, match="runs as root"):
        ensure_private_dir(state, euid=0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, the user it is about")
def test_a_command_run_as_root_writes_nothing_in_another_users_state(tmp_path: Path) -> None:
    """Through the real entry points: the step-up secret and the database stay unwritten."""
    state = _state_of_another_user(tmp_path)
    with pytest.raises(StateError, match="sudo -u nobody"):
        store_secret(state, "JBSWY3DPEHPK3PXP")
    with pytest.raises(StateError, match="sudo -u nobody"):
        Store.open(state)
    assert list(state.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, the user it is about")
def test_root_does_not_follow_a_folder_link_the_daemons_user_planted(tmp_path: Path) -> None:
    """`tokens` linked to a folder of root's (/etc) by the daemon's user: root chmod'ed that
    folder 0700 and wrote the token files into it."""
    state, victim = tmp_path / "state", tmp_path / "etc"
    state.mkdir(mode=0o700)
    victim.mkdir(mode=0o755)
    (state / "tokens").symlink_to(victim)
    os.lchown(state / "tokens", 65534, 65534)
    with pytest.raises(StateError, match="sudo -u nobody"):
        ensure_private_dir(state / "tokens")
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755


def test_root_may_use_its_own_state_directory(tmp_path: Path) -> None:
    """The Home Assistant add-on runs as root in a directory of root's."""
    state = tmp_path / "state"
    if os.geteuid() != 0:
        pytest.skip("needs a directory owned by root")
    ensure_private_dir(state / "tokens", euid=0)
    assert (state / "tokens").is_dir()


def test_processes_starting_together_migrate_once_without_an_error(tmp_path: Path) -> None:
    """The daemon and a command started at the same moment (the first start, or the first after
    an upgrade that added a step) both saw a step missing: the second to apply it failed on what
    the first had created ("table … already exists") and stopped. Each step is now applied by
    one process; the others find it done."""
    steps = [f"CREATE TABLE t{n} (x TEXT); CREATE INDEX i{n} ON t{n} (x)" for n in range(6)]
    failures: list[BaseException] = []
    for trial in range(TRIALS):
        directory = tmp_path / str(trial)
        stores = [Store.open(directory) for _ in range(STARTERS)]
        together = threading.Barrier(STARTERS)

        def start(store: Store, together: threading.Barrier = together) -> None:
            together.wait()
            try:
                store.migrate("part", steps)
            except StateError as exc:
                failures.append(exc)

        starters = [threading.Thread(target=start, args=(store,)) for store in stores]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        versions = stores[0].query("SELECT version FROM schema_versions WHERE part = 'part'")
        assert versions[0][0] == len(steps)
        for store in stores:
            store.close()
    assert failures == []


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


def test_a_temp_file_a_crashed_writer_left_is_removed_by_the_next_write(tmp_path: Path) -> None:
    """A temp file older than any writer could still be using (a crash left it, with a secret
    in it) goes at the next write of that file; a young one (a writer at work) stays."""
    path = tmp_path / "ford.json"
    old, young = tmp_path / ".ford.json.abc123.tmp", tmp_path / ".ford.json.def456.tmp"
    for leftover in (old, young):
        leftover.write_bytes(b"refresh-token")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    write_private_atomic(path, b"new")
    assert not old.exists() and young.exists()
    assert read_private(path) == b"new"


def _keep_writing(path: Path, data: bytes, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        write_private_atomic(path, data)


def test_two_writers_of_one_file_never_show_a_reader_a_torn_file(tmp_path: Path) -> None:
    """Two processes replacing the same file (the daemon refreshing tokens while `ownerlink
    login` stores new ones) each write their own temp file: a reader sees one version whole."""
    path, versions = tmp_path / "ford.json", (b"A" * 200_000, b"B" * 200_000)
    write_private_atomic(path, versions[0])
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_keep_writing, args=(path, v, 1.5)) for v in versions]
    for writer in writers:
        writer.start()
    seen = set()
    while any(writer.is_alive() for writer in writers):
        seen.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert seen <= {hashlib.sha256(v).hexdigest() for v in versions}
    assert [p.name for p in tmp_path.iterdir()] == ["ford.json"]  # no temp file left behind


def test_a_failed_replacement_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    """When the rename fails (here the target is a directory), the error is a StateError and
    the temp file is removed."""
    target = tmp_path / "secret.json"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(StateError, match="cannot write"):
        write_private_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


def test_a_full_disk_is_a_state_error_that_says_so_and_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    """SQLite's "database or disk is full" (here a page limit, as an SD card fills up) comes
    out of a transaction and a migration as StateError saying what to do; once there is room
    again the same store works (the failed transaction was rolled back)."""
    store = Store.open(tmp_path)
    store.migrate("demo", ["CREATE TABLE t (x BLOB)"])
    pages = store.query("PRAGMA page_count")[0][0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StateError, match=r"is full: free some space"), store.transaction() as c:
        c.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    with pytest.raises(StateError, match=r"is full: free some space"):
        store.migrate("more", ["CREATE TABLE u (y INTEGER)", "CREATE TABLE v (z INTEGER)"])
    store.conn.execute("PRAGMA max_page_count = 1000000")
    store.migrate("more", ["CREATE TABLE u (y INTEGER)", "CREATE TABLE v (z INTEGER)"])
    with store.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    assert store.query("SELECT count(*) FROM t")[0][0] == 1


def test_a_database_held_by_another_process_is_a_state_error_that_says_so(tmp_path: Path) -> None:
    """A lock held past the busy timeout ends writes, migrations and opening with a StateError
    naming the cause; it is still the driver's OperationalError for code that handles that."""
    store = Store.open(tmp_path)
    store.migrate("demo", ["CREATE TABLE t (x INTEGER)"])
    store.conn.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    try:
        for attempt in (
            lambda: store.migrate("more", ["CREATE TABLE u (y INTEGER)"]),
            lambda: store.set_meta("k", "v"),
        ):
            with pytest.raises(StateError, match="another process holds the state database"):
                attempt()
        with pytest.raises(sqlite3.OperationalError, match="another process holds"):
            store.set_meta("k", "v")
    finally:
        other.close()
    store.set_meta("k", "v")
    assert store.query("SELECT count(*) FROM t")[0][0] == 0
    with pytest.raises(StateError, match=r"cannot use state database .*: no such table"):
        store.query("SELECT * FROM nowhere")


def test_the_cli_reports_a_held_database_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`apps add` and `owner set-password` with the database held by another process: one
    `error:` line saying what to do and exit 1, no traceback, nothing changed."""
    config = tmp_path / "config.yaml"  # no broker: alerts are only logged
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "s"), "mqtt": {"port": 1}}))
    assert main(["apps", "list", "--config", str(config)]) == 0  # creates the database
    capsys.readouterr()
    other = sqlite3.connect(tmp_path / "s" / "ownerlink.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough owner password\n"))
    try:
        for argv in (
            ["apps", "add", "nr", "--scopes", "read:status"],
            ["owner", "set-password", "--password-stdin"],
        ):
            status = main([*argv, "--config", str(config)])
            err = capsys.readouterr().err
            assert status == 1, err
            assert "Traceback" not in err
            (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
            assert "another process holds the state database" in line
        assert main(["apps", "list", "--config", str(config)]) == 0  # readers still read
        other.close()
        assert "nr" not in capsys.readouterr().out
    finally:
        other.close()
        structlog.reset_defaults()  # the CLI pointed logging at this test's captured stderr
