"""The SQLite state database: one file in the state directory, each part owning its tables.

A part declares its schema as an ordered list of migrations and calls `Store.migrate(part, steps)`;
the store records how far each part has got, so parts evolve independently and a restart is a no-op.
Processes that start together (the daemon and a command) apply each step once between them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bridge.audit.chain import DIRECTORY as AUDIT_DIRECTORY
from bridge.audit.chain import head_mark
from bridge.errors import StateDatabaseError, StateError
from bridge.files import IN_PLACE, open_problem

DB_NAME = "ownerlink.db"


# state_meta: the audit log's head (`seq:hash`) when this database was created.
BORN_AT_AUDIT_HEAD = "born_at_audit_head"


class Store:
    """A thread-safe handle on the state database (one connection, serialised by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.created = False  # whether `connect` made the database (or found it empty)

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (creating if needed) the database in `state_dir`, private to the daemon's user."""
        ensure_private_dir(state_dir)
        store = cls(state_dir / DB_NAME)
        store.connect()
        if store.created:
            store.mark_birth(state_dir)
        return store

    def mark_birth(self, state_dir: Path) -> None:
        """Remember how far the audit log beside this new database had got: the log is the one
        witness that it replaced an older one (bridge.audit.witness compares). The first mark
        stays: the daemon and a command starting on a new state directory may both find the
        database new, and a second mark taken after the first process had written records
        made the database look like the replacement of itself, which the daemon refuses."""
        mark = head_mark(state_dir / AUDIT_DIRECTORY)
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO state_meta (key, value) VALUES (?, ?)",
                (BORN_AT_AUDIT_HEAD, mark),
            )

    def connect(self) -> None:
        make_private(self.path)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # WAL keeps readers off the writer's back. With WAL, NORMAL makes every commit survive
            # a crash or kill -9 of the daemon (the commit is in the OS's hands before COMMIT
            # returns); only a power cut can lose the last commits, and it costs no fsync per
            # commit, which the budget and command-id writes on the command path cannot afford.
            # What must survive a power cut is fsync'd on its own: the audit log, the tokens.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            # An empty file is a new database too (`: > ownerlink.db`).
            created = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'schema_versions'"
            ).fetchone()
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (part TEXT PRIMARY KEY, version INT)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS state_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StateDatabaseError(database_problem(self.path, exc, "open")) from exc
        self._conn = conn
        self.created = created

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM state_meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            set_meta(conn, key, value)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError("state database is not open")
        return self._conn

    def migrate(self, part: str, steps: Sequence[str]) -> None:
        """Apply the part's migrations that have not run yet, each in its own transaction."""
        if not part.replace("_", "").isalnum():
            raise StateError(f"bad schema part name {part!r}")
        with self._lock, self._errors():
            done = _version(self.conn, part)
            for version, sql in enumerate(steps[done:], start=done + 1):
                self._apply(part, version, sql)

    def _apply(self, part: str, version: int, sql: str) -> None:
        """One step and its version bump, in one transaction. The version is read again under
        the write lock: the daemon and a command started together (the first start, or the
        first after an upgrade) both saw the step missing, and the second to apply it failed
        on what the first had created ("table … already exists")."""
        with self.transaction() as conn:
            if _version(conn, part) >= version:
                return  # another process applied it since we looked
            # One statement at a time: executescript would commit the transaction first.
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions (part, version) VALUES (?, ?) "
                "ON CONFLICT(part) DO UPDATE SET version = excluded.version",
                (part, version),
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the lock; rolled back if the block or the commit fails."""
        with self._lock, self._errors():
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock, outside any transaction: for a few reads in a row."""
        with self._lock, self._errors():
            yield self.conn

    def query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock, self._errors():
            cur = self.conn.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return list(cur.fetchall())

    def _rollback(self) -> None:
        """End the open transaction, if any. Its own failure is not the one worth reporting: a
        failed COMMIT (a full disk) may or may not have ended the transaction already."""
        if self._conn is not None and self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors of the environment become StateDatabaseError, saying what to do; a
        constraint or a mistake in our SQL (IntegrityError, ProgrammingError) stays as it is."""
        try:
            yield
        except sqlite3.Error as exc:
            if isinstance(exc, StateError) or not _environmental(exc):
                raise
            raise StateDatabaseError(database_problem(self.path, exc)) from exc


def _version(conn: sqlite3.Connection, part: str) -> int:
    row = conn.execute("SELECT version FROM schema_versions WHERE part = ?", (part,)).fetchone()
    return int(row[0]) if row else 0


def _statements(sql: str) -> list[str]:
    """`sql` as whole statements: a `;` inside a string literal or a trigger's body ends none."""
    statements, pending = [], ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                statements.append(pending)
            pending = ""
    if pending.strip(" \t\n;"):
        statements.append(pending)  # unfinished: SQLite says what is wrong with it
    return statements


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """One `state_meta` value, written in the caller's transaction."""
    conn.execute(
        "INSERT INTO state_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _environmental(exc: sqlite3.Error) -> bool:
    # A damaged or foreign file raises the DatabaseError base class itself.
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def database_problem(path: Path, exc: sqlite3.Error, doing: str = "use") -> str:
    """One line on what stopped the state database at `path`, and what to do about it."""
    code = getattr(exc, "sqlite_errorname", None) or ""
    if code.startswith("SQLITE_FULL"):
        return f"the disk holding the state database {path} is full: free some space, then retry"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"another process holds the state database {path} (the daemon or another ownerlink "
            "command, busy for more than 5 s): try again, or stop that process first"
        )
    if code.startswith("SQLITE_READONLY"):
        return (
            f"cannot write the state database {path}: run ownerlink as the user that owns the "
            "state directory (e.g. sudo -u ownerlink ownerlink …)"
        )
    return f"cannot {doing} state database {path}: {exc}"


def make_private(path: Path) -> None:
    """Create the database file 0600 (or make it 0600) before SQLite opens it, and its -wal and
    -shm if they exist. SQLite gives the -wal and -shm files it creates the database file's
    mode, so a database it created itself (umask 022: 0644, until a chmod after the fact) left
    both readable by others for as long as the daemon ran. Existing ones (an earlier version's,
    kept by a crash) are reused as they are, so they are tightened here too.

    Opened without following a symlink, the -wal and -shm too: SQLite would write into
    whatever file a planted one names."""
    try:
        _tighten(path, os.O_RDWR | os.O_CREAT)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                _tighten(path.with_name(path.name + suffix), os.O_RDONLY)
    except OSError as exc:
        raise StateDatabaseError(f"cannot open state database {path}: {open_problem(exc)}") from exc


def _tighten(path: Path, flags: int) -> None:
    fd = os.open(path, flags | IN_PLACE, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode passes the umask; an old file keeps its own
    finally:
        os.close(fd)


def ensure_private_dir(path: Path, *, euid: int | None = None) -> None:
    """Create a directory (and any missing parents) with mode 0700: tokens and secrets live there.

    mkdir's mode is filtered by the umask and never applies to the parents it creates, so each
    directory this call creates is chmod'ed explicitly. One that already exists is left as the
    owner set it (`ownerlink doctor` reports a loose one).
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    refuse_foreign_as_root(next(p for p in (path, *path.parents) if p not in missing), euid)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for created in missing:
            created.chmod(0o700)
    except OSError as exc:
        raise StateError(f"state_dir: cannot create {path}: {exc.strerror}") from exc


def refuse_foreign_as_root(existing: Path, euid: int | None = None) -> None:
    """Root may not work in another user's state directory (`sudo ownerlink login` instead of
    `sudo -u ownerlink ownerlink login`): the token files, step-up secret, audit files and
    folders it created there were root's, 0600, and the daemon running as that user could no
    longer read them (a new audit file root started stopped every command)."""
    euid = os.geteuid() if euid is None else euid
    try:
        # The link's owner too: `tokens` linked to /etc by the daemon's user is not root's.
        owner = max(existing.lstat().st_uid, existing.stat().st_uid)
    except OSError:
        return  # out of reach: creating in it fails with its own message
    if euid != 0 or owner == 0:
        return
    user = _user_name(owner)
    raise StateError(
        f"{existing} belongs to {user}, but ownerlink runs as root: what it wrote there would be "
        f"root's and unreadable to the daemon. Run it as that user: sudo -u {user} ownerlink …"
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
