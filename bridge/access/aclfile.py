"""acl-file enforcement: a Mosquitto `password_file` and `acl_file` rendered from the registry.

Both files are rewritten whole and atomically on every change. Mosquitto reads them only at start
and on SIGHUP, so nothing changes on the broker until the owner reloads it. On reload (checked with
Mosquitto 2.0.11) a session whose login was removed from the password_file is disconnected, while a
login that is still valid stays connected and its narrowed ACLs apply from its next message (the
acl_file is checked on every message).
No `pattern` lines are written: a pattern applies to every broker user (also ones Ownerlink does
not manage) and `pattern write <base>/app/%u/#` would be broader than the command scopes, so each
app gets exact per-user lines instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bridge.access.broker import BrokerIdentity, DaemonIdentity, SyncReport
from bridge.access.grants import app_grant, daemon_grant
from bridge.access.passwords import mosquitto_hash, verify_mosquitto_hash
from bridge.errors import StateError
from bridge.files import write_private_atomic
from bridge.logs import get_logger
from bridge.mqtt.topics import Topics

log = get_logger(__name__)

USERS_FILE = "passwd"
ACL_FILE = "acl"
# The owner's own broker users and rules, kept in these files and copied in first.
LOCAL_USERS_FILE = "local.passwd"
LOCAL_ACL_FILE = "local.acl"
# The broker runs as its own user and must read the files; the folder's group should be its group.
FILE_MODE = 0o640
HEADER = (
    "# Written by Ownerlink (mqtt.enforcement: acl-file); rewritten on every app change.\n"
    "# Put your own entries in {local} in this folder: they are copied in first.\n"
)


def render_passwords(
    desired: Sequence[BrokerIdentity], daemon_line: str | None, local: str
) -> tuple[str, list[str]]:
    """The password_file text and the local users skipped because an app has the same name."""
    ours = {i.app.id for i in desired} | ({daemon_line.split(":", 1)[0]} if daemon_line else set())
    lines, clashes = [HEADER.format(local=LOCAL_USERS_FILE)], []
    for line in local.splitlines():
        user = line.split(":", 1)[0].strip()
        if user in ours and not line.lstrip().startswith("#"):
            clashes.append(f"{LOCAL_USERS_FILE} also defines {user!r}; the Ownerlink entry wins")
            continue
        lines.append(line + "\n")
    if daemon_line:
        lines.append(daemon_line + "\n")
    lines += [f"{i.app.id}:{i.secret}\n" for i in desired if i.app.enabled and i.secret]
    return "".join(lines), clashes


def render_acl(
    desired: Sequence[BrokerIdentity], topics: Topics, daemon_user: str | None, local: str
) -> str:
    """The acl_file text: the owner's local rules, the daemon, then one block per enabled app."""
    # The local rules come first: topic lines before any `user` line apply to anonymous clients,
    # and placed after our blocks they would silently extend the last app's access instead.
    parts = [HEADER.format(local=LOCAL_ACL_FILE), local.rstrip("\n") + "\n" if local else ""]
    if daemon_user:
        grant = daemon_grant(topics)
        parts.append(f"\n# the Ownerlink daemon\nuser {daemon_user}\n")
        parts += [f"topic readwrite {topic}\n" for topic in grant.read]
    for identity in desired:
        parts.append(_app_block(identity, topics))
    return "".join(parts)


def _app_block(identity: BrokerIdentity, topics: Topics) -> str:
    app = identity.app
    scopes = " ".join(sorted(app.scopes)) or "(no scopes)"
    if not app.enabled:
        return f"\n# app {app.id}: disabled\n"
    grant = app_grant(app, topics)
    lines = [f"\n# app {app.id} ({app.name}): {scopes}\n", f"user {app.id}\n"]
    lines += [f"topic read {topic}\n" for topic in grant.read]
    lines += [f"topic write {topic}\n" for topic in grant.write]
    return "".join(lines)


class AclFileEnforcement:
    """Renders the files into `directory` after every change; the owner reloads Mosquitto."""

    mode = "acl-file"

    def __init__(self, *, directory: Path, topics: Topics, daemon: DaemonIdentity | None) -> None:
        self._dir = directory
        self._topics = topics
        self._daemon = daemon

    @property
    def password_file(self) -> Path:
        return self._dir / USERS_FILE

    @property
    def acl_file(self) -> Path:
        return self._dir / ACL_FILE

    @property
    def hint(self) -> str | None:
        return (
            f"broker files updated in {self._dir}; the broker applies them only when reloaded: "
            "`kill -HUP $(pidof mosquitto)` (or restart the Mosquitto add-on). Until then the "
            "old logins and ACLs stay in force."
        )

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def stored_secret(self, password: str) -> str | None:
        return mosquitto_hash(password)

    def create(
        self, identity: BrokerIdentity, password: str, desired: Sequence[BrokerIdentity]
    ) -> None:
        self.write(desired)

    def update(self, identity: BrokerIdentity, desired: Sequence[BrokerIdentity]) -> None:
        self.write(desired)

    def remove(self, app_id: str, desired: Sequence[BrokerIdentity]) -> None:
        self.write(desired)

    def sync(self, desired: Sequence[BrokerIdentity], removals: Sequence[str]) -> SyncReport:
        changed, clashes = self.write(desired)
        missing = [i.app.id for i in desired if i.app.enabled and not i.secret]
        if self._daemon is not None and not self._daemon.password:
            missing.append(self._daemon.username)
        return SyncReport(
            changed=(f"rewrote {self._dir}",) if changed else (),
            drift=tuple(clashes),
            missing=tuple(missing),
        )

    def write(self, desired: Sequence[BrokerIdentity]) -> tuple[bool, list[str]]:
        """Render and write both files; returns (anything changed, local clashes)."""
        passwords, clashes = render_passwords(
            desired, self._daemon_line(), self._read(LOCAL_USERS_FILE)
        )
        acl = render_acl(
            desired,
            self._topics,
            self._daemon.username if self._daemon else None,
            self._read(LOCAL_ACL_FILE),
        )
        self._ensure_dir()
        changed = self._replace(self.password_file, passwords)
        changed = self._replace(self.acl_file, acl) or changed
        if changed:
            log.info("broker_files_written", directory=str(self._dir), detail=self.hint)
        return changed, clashes

    def _daemon_line(self) -> str | None:
        """The daemon's entry, reusing the current hash while it still matches (stable file)."""
        if self._daemon is None or not self._daemon.password:
            return None
        user, password = self._daemon.username, self._daemon.password
        for line in self._read(USERS_FILE).splitlines():
            name, _, encoded = line.partition(":")
            if name == user and verify_mosquitto_hash(password, encoded):
                return line
        return f"{user}:{mosquitto_hash(password)}"

    def _read(self, name: str) -> str:
        try:
            return (self._dir / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise StateError(f"cannot read {self._dir / name}: {exc.strerror or exc}") from exc

    def _ensure_dir(self) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise StateError(f"cannot create {self._dir}: {exc.strerror or exc}") from exc

    def _replace(self, path: Path, text: str) -> bool:
        data = text.encode("utf-8")
        try:
            if path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        write_private_atomic(path, data, mode=FILE_MODE)
        return True
