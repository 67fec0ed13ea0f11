"""The MQTT topic contract as pure functions, and the Publish value parts hand to the client."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

StateKind = Literal["status", "health", "location", "budget"]

# The longest app, vehicle or command level a command topic may have: app ids are at most 64
# characters, vehicle slugs 32, command words less. A longer level names nothing, and each
# level goes into the command's audit record and alert: without a cap, a four-byte payload on a
# 60,000-character topic would write 60 KB to the audit log, unrated, until the disk was full.
MAX_LEVEL = 64
DEFAULT_BASE = "ownerlink"
# The bridge's own Home Assistant device under the default base; no vehicle id can equal it
# (vehicle devices are `ownerlink_<slug>`).
BRIDGE_NODE_ID = "ownerlink-bridge"


def encode(document: Mapping[str, Any]) -> str:
    """Every JSON payload the bridge publishes: compact, keys sorted, so the same document always
    gives the same bytes (and diffing is a comparison)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Publish:
    """One message to publish. Parts build these; only the MQTT adapter sends them.

    `latest_only`: only the newest message on this topic matters (a retained document, a
    discovery config or clear, the audit head), so while the broker is away a newer one replaces
    it unsent (`bridge.mqtt.outbox`). Leave it False for what every receiver must see in turn
    (command results, alerts). It is how the message travels, not what it says: not compared.
    """

    topic: str
    payload: str | bytes
    retain: bool = False
    qos: int = 1
    latest_only: bool = field(default=False, compare=False)


class PublishSink(Protocol):
    """Accepts messages without blocking (thread-safe); the adapter delivers them."""

    def publish(self, message: Publish) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandTopic:
    app: str
    vehicle: str
    command: str


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic Ownerlink uses, derived from the base topic and the discovery prefix."""

    base: str = DEFAULT_BASE
    discovery_prefix: str = "homeassistant"

    @property
    def bridge_node_id(self) -> str:
        """The bridge's Home Assistant device id. Under the default base topic it is
        `ownerlink-bridge`, as it always was; under another base the base is part of it, so
        two bridges on one broker (the demo beside a real one) are two devices in HA."""
        if self.base == DEFAULT_BASE:
            return BRIDGE_NODE_ID
        # A node id has no `/`. `_` escapes both it (`_1`) and itself (`_0`), so two bases never
        # share an id: with `/` written `_`, `home/car` and `home_car` were one device in HA.
        escaped = self.base.replace("_", "_0").replace("/", "_1")
        return f"{BRIDGE_NODE_ID}-{escaped}"

    @property
    def bridge_state(self) -> str:
        return f"{self.base}/bridge/state"

    @property
    def bridge_event(self) -> str:
        return f"{self.base}/bridge/event"

    @property
    def audit_head(self) -> str:
        return f"{self.base}/bridge/audit_head"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/app/+/+/cmd/+"

    def availability(self, vehicle: str) -> str:
        return f"{self.base}/{vehicle}/availability"

    def state(self, vehicle: str, kind: StateKind) -> str:
        return f"{self.base}/{vehicle}/{kind}"

    def command(self, app: str, vehicle: str, command: str) -> str:
        return f"{self.base}/app/{app}/{vehicle}/cmd/{command}"

    def result(self, app: str, vehicle: str) -> str:
        return f"{self.base}/app/{app}/{vehicle}/result"

    def app_event(self, app: str) -> str | None:
        """`<base>/app/<app>/event`: the alerts about one app, which only that app may read.

        None when `app` could not be one topic level (empty, a `/` or a wildcard): such a name
        comes from no registered app, and publishing under it could reach other apps' topics."""
        if not app or len(app) > MAX_LEVEL or any(c in app for c in "/+#\0"):
            return None
        return f"{self.base}/app/{app}/event"

    def parse_command(self, topic: str) -> CommandTopic | None:
        """Split `<base>/app/<app>/<vehicle>/cmd/<command>`; None for anything else.

        An empty vehicle or command level (`…/car/cmd/`) still names the app and where its
        result goes: it is parsed, and refused there as an unknown vehicle or command. A level
        longer than `MAX_LEVEL` makes it no command topic (refused as malformed, naming no app)."""
        prefix = f"{self.base}/app/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 4 or parts[2] != "cmd" or not parts[0]:
            return None
        if any(len(level) > MAX_LEVEL for level in parts):
            return None
        return CommandTopic(app=parts[0], vehicle=parts[1], command=parts[3])
