"""How the broker is kept in step with the registry: the Enforcement protocol, `none`, the factory.

The registry calls an Enforcement after every change; three back-ends implement it:

    dynsec    one dynamic-security client and role per app, changed live over MQTT (dynsec.py)
    acl-file  a Mosquitto password_file and acl_file, rewritten atomically (aclfile.py)
    none      nothing: the broker lets any client read state; the daemon still checks scopes
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bridge.config import MqttConfig
from bridge.errors import ConfigError
from bridge.logs import get_logger
from bridge.model import App
from bridge.mqtt.topics import Topics

log = get_logger(__name__)

ACL_SUBDIR = "mosquitto"  # acl-file's folder under the state directory when acl_dir is unset

NONE_WARNING = (
    "mqtt.enforcement is 'none': the broker does not stop other clients from reading vehicle "
    "state or publishing to command topics; Ownerlink still checks each app's scopes on every "
    "command. Use 'dynsec' or 'acl-file' to have the broker enforce the grants."
)


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """What the broker needs about one app: its grants and the secret this mode stores (if any)."""

    app: App
    secret: str | None = None  # acl-file: the `$7$` hash; dynsec and none store nothing


@dataclass(frozen=True, slots=True)
class SyncReport:
    """The outcome of reconciling the broker with the registry."""

    changed: tuple[str, ...] = ()  # what was put right, one line each
    drift: tuple[str, ...] = ()  # identities on the broker the registry does not know
    missing: tuple[str, ...] = ()  # registered apps with no broker identity (reset their password)


@dataclass(frozen=True, slots=True)
class DaemonIdentity:
    """The daemon's own broker login (mqtt.username), which needs full access to its topics."""

    username: str
    password: str | None


class Enforcement(Protocol):
    """A broker back-end. Methods raise BrokerError when the broker cannot be changed.

    `desired` is always every registered identity after the change, so a back-end that renders
    whole files (acl-file) and one that changes single entries (dynsec) share one interface.
    """

    mode: str

    @property
    def hint(self) -> str | None:
        """What the owner must do after a change, if anything (e.g. reload Mosquitto)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def stored_secret(self, password: str) -> str | None:
        """What of a new password this mode must keep (never the password itself)."""
        ...

    def create(
        self, identity: BrokerIdentity, password: str, desired: Sequence[BrokerIdentity]
    ) -> None:
        """Create (or replace) the app's broker identity with this password."""
        ...

    def update(self, identity: BrokerIdentity, desired: Sequence[BrokerIdentity]) -> None:
        """Bring the app's access in line with its scopes and enabled flag."""
        ...

    def remove(self, app_id: str, desired: Sequence[BrokerIdentity]) -> None:
        """Delete the app's broker identity and end its sessions; absent is not an error."""
        ...

    def sync(self, desired: Sequence[BrokerIdentity], removals: Sequence[str]) -> SyncReport:
        """Reconcile the whole broker with the registry and report what did not match."""
        ...


class NoEnforcement:
    """`mqtt.enforcement: none`: the broker is the owner's business; warn at every start."""

    mode = "none"

    @property
    def hint(self) -> str | None:
        return (
            "the broker is not managed (mqtt.enforcement: none): the apps' logins and topic "
            "rights on the broker are yours to keep; Ownerlink still checks every command "
            "against the app's scopes"
        )

    def start(self) -> None:
        log.warning("broker_not_enforcing", detail=NONE_WARNING)

    def stop(self) -> None:
        return None

    def stored_secret(self, password: str) -> str | None:
        return None

    def create(
        self, identity: BrokerIdentity, password: str, desired: Sequence[BrokerIdentity]
    ) -> None:
        return None

    def update(self, identity: BrokerIdentity, desired: Sequence[BrokerIdentity]) -> None:
        return None

    def remove(self, app_id: str, desired: Sequence[BrokerIdentity]) -> None:
        return None

    def sync(self, desired: Sequence[BrokerIdentity], removals: Sequence[str]) -> SyncReport:
        return SyncReport()  # nothing to reconcile; start() has already warned


def daemon_identity(mqtt: MqttConfig) -> DaemonIdentity | None:
    """The daemon's login from config, if it has one."""
    if not mqtt.username:
        return None
    password = mqtt.password.get_secret_value() if mqtt.password else None
    return DaemonIdentity(username=mqtt.username, password=password)


def acl_directory(mqtt: MqttConfig, state_dir: Path) -> Path:
    """Where acl-file mode writes the broker's password and ACL files: `mqtt.acl_dir`, else
    `<state_dir>/mosquitto` (the daemon, `ownerlink apps` and doctor must agree)."""
    return mqtt.acl_dir or state_dir / ACL_SUBDIR


def build_enforcement(
    mqtt: MqttConfig, *, state_dir: Path | None = None, timeout_s: float = 5.0
) -> Enforcement:
    """The back-end `mqtt.enforcement` names; raises ConfigError if its settings are missing.

    acl-file writes to `acl_directory(mqtt, state_dir)`.
    """
    topics = Topics(base=mqtt.base_topic, discovery_prefix=mqtt.discovery_prefix)
    if mqtt.enforcement == "dynsec":
        return _build_dynsec(mqtt, topics, timeout_s)
    if mqtt.enforcement == "acl-file":
        directory = acl_directory(mqtt, state_dir) if state_dir else mqtt.acl_dir
        if directory is None:
            raise ConfigError(["mqtt.acl_dir: required when mqtt.enforcement is acl-file"])
        from bridge.access.aclfile import AclFileEnforcement

        return AclFileEnforcement(directory=directory, topics=topics, daemon=daemon_identity(mqtt))
    return NoEnforcement()


def _build_dynsec(mqtt: MqttConfig, topics: Topics, timeout_s: float) -> Enforcement:
    # Imported here so only the dynsec mode loads paho into processes that never need it.
    from bridge.access.control import Connection, DynsecControl
    from bridge.access.dynsec import DynsecEnforcement

    if not mqtt.admin_username or mqtt.admin_password is None:
        raise ConfigError(
            [
                "mqtt.admin_username: required (with mqtt.admin_password) when mqtt.enforcement "
                "is dynsec"
            ]
        )
    connection = Connection.from_config(
        mqtt,
        username=mqtt.admin_username,
        password=mqtt.admin_password.get_secret_value(),
        # Unique per process: the CLI and the daemon may both hold an admin connection, and a
        # shared client id would make the broker drop one whenever the other connects.
        client_id=f"{mqtt.client_id}-admin-{uuid.uuid4().hex[:8]}",
    )
    control = DynsecControl(connection=connection, timeout_s=timeout_s)
    return DynsecEnforcement(control=control, topics=topics, daemon=daemon_identity(mqtt))
