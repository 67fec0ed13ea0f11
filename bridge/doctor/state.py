"""State directory checks: owner and mode, private files, database, step-up secret and lockouts."""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.access.validation import RESERVED_IDS
from bridge.audit.log import audit_directory
from bridge.audit.witness import lost_database, replaced_by_mark
from bridge.commands.stepup import load_secret, secret_path
from bridge.doctor.model import AS_DAEMON_USER, Check, failed, passed, plural, warning
from bridge.errors import StateError
from bridge.store import BORN_AT_AUDIT_HEAD, DB_NAME

PRIVATE_MODE_BITS = 0o077  # group and others: nothing


def check_state(
    state_dir: Path, *, uid: int, now: datetime, own_logins: Sequence[str] = ()
) -> list[Check]:
    """The directory itself, then what is in it (skipped when the directory is unusable).
    `own_logins`: the bridge's own broker usernames (`MqttConfig.own_logins`)."""
    directory = check_state_dir(state_dir, uid=uid)
    if not can_look_inside(state_dir):
        return [directory]
    database = state_dir / DB_NAME
    return [
        directory,
        check_private_files(state_dir),
        check_database(database),
        check_app_ids(database, own_logins),
        check_stepup_secret(state_dir),
        check_stepup_lockouts(database, now),
    ]


def check_state_dir(state_dir: Path, *, uid: int) -> Check:
    """Exists, belongs to the user running doctor, and nobody else may even list it (0700)."""
    name = "state directory"
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        return failed(
            name,
            f"{state_dir} does not exist",
            f"create it for the daemon's user: install -d -m 700 {state_dir} "
            "(`ownerlink login` also creates it)",
        )
    except OSError as exc:
        return failed(name, f"cannot look at {state_dir}: {exc.strerror}", AS_DAEMON_USER)
    if not stat.S_ISDIR(st.st_mode):
        return failed(name, f"{state_dir} is not a directory", "point state_dir at a directory")
    if st.st_uid != uid:
        return _foreign_owner(state_dir, st.st_uid, uid)
    return _judge_dir_mode(state_dir, stat.S_IMODE(st.st_mode), uid)


def _judge_dir_mode(state_dir: Path, mode: int, uid: int) -> Check:
    name, fix = "state directory", f"chmod 700 {state_dir}"
    if mode & PRIVATE_MODE_BITS:
        detail = f"{state_dir} is mode {mode:04o}: other users can reach tokens and secrets"
        return failed(name, detail, fix)
    if not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        return failed(name, f"{state_dir} is mode {mode:04o}: not even its owner can use it", fix)
    return passed(name, f"{state_dir}: mode {mode:04o}, owned by {_user(uid)}")


def can_look_inside(directory: Path) -> bool:
    """Whether doctor may list and read `directory` (a wrong user may not: skip its files)."""
    st = stat_or_none(directory)
    return st is not None and stat.S_ISDIR(st.st_mode) and os.access(directory, os.R_OK | os.X_OK)


def _foreign_owner(state_dir: Path, owner: int, uid: int) -> Check:
    return failed(
        "state directory",
        f"{state_dir} belongs to {_user(owner)}, but doctor runs as {_user(uid)}",
        f"{AS_DAEMON_USER}; if {_user(uid)} runs the daemon: "
        f"sudo chown -R {_user(uid)} {state_dir}",
    )


def private_files(state_dir: Path) -> list[Path]:
    """Files holding secrets: token files, the step-up secret, the state database (and its
    -wal and -shm, which hold its latest writes)."""
    tokens = sorted((state_dir / "tokens").glob("*.json"))
    database = [state_dir / f"{DB_NAME}{suffix}" for suffix in ("", "-wal", "-shm")]
    others = [secret_path(state_dir), *database]
    return [path for path in [*tokens, *others] if path.exists()]


def check_private_files(state_dir: Path) -> Check:
    """Token files and secrets are 0600 and their folder 0700: readable by the daemon only."""
    name = "private files"
    files = private_files(state_dir)
    tokens_dir = state_dir / "tokens"
    open_files = [path for path in files if _mode(path) & PRIVATE_MODE_BITS]
    open_dir = tokens_dir.is_dir() and bool(_mode(tokens_dir) & PRIVATE_MODE_BITS)
    if open_files or open_dir:
        exposed = [*open_files, *([tokens_dir] if open_dir else [])]
        return failed(
            name,
            "readable by other users: " + ", ".join(str(p) for p in exposed),
            _chmod_fix(open_files, tokens_dir if open_dir else None),
        )
    if not files:
        return passed(name, "no token or secret files yet")
    return passed(name, f"{plural(len(files), 'file')} with secrets, all 0600")


def _chmod_fix(files: Sequence[Path], directory: Path | None) -> str:
    commands = [f"chmod 600 {' '.join(str(p) for p in files)}"] if files else []
    commands += [f"chmod 700 {directory}"] if directory is not None else []
    return "; ".join(commands)


def check_database(path: Path) -> Check:
    """The SQLite file opens read-only and passes SQLite's own quick integrity check."""
    name = "state database"
    if not path.exists():
        return _judge_missing_database(path)
    try:
        verdict = read_db(path, "PRAGMA quick_check")[0][0]
        parts = [row[0] for row in read_db(path, "SELECT part FROM schema_versions ORDER BY 1")]
    except sqlite3.Error as exc:
        return failed(name, f"{path}: {exc}", DB_FIX)
    if verdict != "ok":
        return failed(name, f"{path}: the integrity check says {verdict}", DB_FIX)
    replaced = replaced_by_mark(_birth_mark(path), audit_directory(path.parent), path)
    if replaced is not None:
        return failed(name, replaced, DB_FIX)
    return passed(name, f"{path}: readable, intact (schema parts: {', '.join(parts) or 'none'})")


def _judge_missing_database(path: Path) -> Check:
    """No database yet is fine on a new install; beside a log a database wrote to, the daemon
    would make one and refuse it, so "nothing to do" would send the owner into that refusal."""
    name = "state database"
    lost = lost_database(audit_directory(path.parent), path)
    if lost is not None:
        return failed(name, lost, LOST_DB_FIX)
    return warning(
        name, f"{path} does not exist yet", "nothing to do: the daemon creates it at start"
    )


def _birth_mark(path: Path) -> str | None:
    try:
        rows = read_db(path, "SELECT value FROM state_meta WHERE key = ?", (BORN_AT_AUDIT_HEAD,))
    except sqlite3.Error:
        return None  # a database from before the mark
    return str(rows[0][0]) if rows else None


DB_FIX = (
    "stop the daemon and restore the file from a backup. Without one, start over: move the file "
    "and the audit folder aside (mv ownerlink.db ownerlink.db.broken; mv audit audit-DATE) and "
    "keep them as evidence; the daemon then starts a new database and a new audit chain, but "
    "registered apps, budget history and step-up state are lost (a new database beside the old "
    "audit log is refused, as it would quietly undo revocations)"
)


LOST_DB_FIX = (
    "stop the daemon and restore the file from a backup. Without one, start over: move the audit "
    "folder aside (mv audit audit-DATE) and keep it as evidence; the daemon then starts a new "
    "database and a new audit chain, and the apps must be registered again"
)


def check_app_ids(path: Path, own_logins: Sequence[str]) -> Check:
    """Apps an earlier version registered under ids this one refuses. Under the bridge's own
    broker login the daemon will not start (exit 2), though `config check` passes: it is the
    database, not the file, that holds the app. A reserved id is a warning."""
    name = "app ids"
    try:
        ids = [str(row[0]) for row in read_db(path, "SELECT id FROM apps ORDER BY id")]
    except sqlite3.Error:
        return passed(name, "no apps registered yet")
    own = {login.lower() for login in own_logins}
    clash = [app for app in ids if app.lower() in own]
    if clash:
        return failed(
            name,
            f"{clash[0]!r} is a connected app's id and the bridge's own broker login "
            "(mqtt.username / mqtt.admin_username): the daemon refuses to start",
            "give the bridge another broker login (create it on the broker, then set "
            "mqtt.username); revoking the app instead would delete the login they share",
        )
    reserved = {r.lower() for r in RESERVED_IDS}
    taken = [app for app in ids if app.lower() in reserved]
    if taken:
        return warning(
            name,
            f"{', '.join(taken)}: reserved for the owner or the daemon (an earlier version let "
            "it be registered); owner-web-login shares the page's step-up failures and lockout",
            "register the app again under another id, move it there, then revoke this one",
        )
    return passed(name, f"{plural(len(ids), 'app')}, none under a reserved id")


def check_stepup_secret(state_dir: Path) -> Check:
    """The step-up secret, once enrolled, is one the authenticator's codes can match: a damaged
    file refused every unlock, while `stepup status` still said "enrolled"."""
    name, path = "step-up secret", secret_path(state_dir)
    try:
        enrolled = load_secret(state_dir) is not None
    except StateError as exc:
        loose = bool(_mode(path) & PRIVATE_MODE_BITS)
        return failed(name, str(exc), f"chmod 600 {path}" if loose else REENROL_FIX)
    except OSError as exc:
        return failed(name, f"cannot read {path}: {exc.strerror}", AS_DAEMON_USER)
    if not enrolled:
        return passed(name, "not enrolled (`ownerlink stepup enroll` when you want unlock)")
    return passed(name, f"{path}: enrolled")


REENROL_FIX = (
    "run: ownerlink stepup enroll --force, and scan the new QR code with your authenticator "
    "(the old entry stops working)"
)


def check_stepup_lockouts(path: Path, now: datetime) -> Check:
    """Apps locked out of sensitive commands after too many wrong step-up codes (a warning)."""
    name = "step-up lockouts"
    try:
        rows = read_db(
            path, "SELECT app, until FROM stepup_lockouts WHERE until > ?", (now.timestamp(),)
        )
    except sqlite3.Error:
        return passed(name, "none (step-up has not been used yet)")
    if not rows:
        return passed(name, "none")
    locked = ", ".join(f"{app} until {_hhmm(until)}" for app, until in rows)
    return warning(
        name,
        f"locked out of unlock / remote start: {locked}",
        "wait for the lockout to end and check the authenticator's clock; if nobody typed those "
        "codes, revoke the app: ownerlink apps revoke APP",
    )


def read_db(path: Path, sql: str, params: Sequence[object] = ()) -> list[Any]:
    # mode=ro: doctor must not create, migrate or lock the daemon's database for writing.
    with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql, params).fetchall())


def _hhmm(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M UTC")


def stat_or_none(path: Path) -> os.stat_result | None:
    """The path's status, or None when it is missing or out of reach (never raises)."""
    try:
        return path.stat()
    except OSError:
        return None


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
