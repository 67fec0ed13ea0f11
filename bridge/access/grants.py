"""Which topics an app may read and write, derived from its scopes (pure).

Both broker back-ends (dynsec roles and the acl_file) render from the same grant, so the two
modes give the same access matrix. Command topics are per command, not per action: `lock`
carries both LOCK and UNLOCK, so the broker can only say "may publish to lock"; the daemon's
scope check then tells command:lock from command:unlock on every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.model import OPERATIONS, App, Command, Scope
from bridge.mqtt.topics import Topics

# Which scopes open which command topic (lock: command:lock or command:unlock, …).
COMMAND_SCOPES: Mapping[Command, frozenset[Scope]] = {
    command: frozenset(scope for (cmd, _), (_, scope) in OPERATIONS.items() if cmd is command)
    for command in Command
}

# The per-vehicle state documents each read scope reveals.
READ_KINDS: Mapping[Scope, str] = {
    Scope.READ_STATUS: "status",
    Scope.READ_HEALTH: "health",
    Scope.READ_LOCATION: "location",
}

# Every app may see these: they reveal nothing about the car beyond "is it reachable".
ALWAYS_READABLE_KINDS = ("availability", "budget")


@dataclass(frozen=True, slots=True)
class TopicGrant:
    """Topic filters an identity may subscribe to and receive (`read`) and publish to (`write`)."""

    read: tuple[str, ...]
    write: tuple[str, ...]


def allowed_commands(scopes: frozenset[Scope]) -> tuple[Command, ...]:
    """The command topics these scopes open, in the enum's order."""
    return tuple(cmd for cmd in Command if COMMAND_SCOPES[cmd] & scopes)


def app_grant(app: App, topics: Topics) -> TopicGrant:
    """Least privilege for one app; a disabled app gets nothing."""
    if not app.enabled:
        return TopicGrant(read=(), write=())
    base = topics.base
    # Not `<base>/bridge/#`: the owner's alert feed names every app, its refusals and grants.
    # An app hears its own alerts under its own prefix (`<base>/app/<app>/event`).
    read = [topics.bridge_state, topics.audit_head, f"{base}/app/{app.id}/#"]
    read += [f"{base}/+/{kind}" for kind in ALWAYS_READABLE_KINDS]
    read += [f"{base}/+/{kind}" for scope, kind in READ_KINDS.items() if scope in app.scopes]
    write = [topics.command(app.id, "+", cmd.value) for cmd in allowed_commands(app.scopes)]
    if app.home_assistant:
        # Discovery configs are retained under the prefix; HA announces itself on <prefix>/status.
        # HA is the owner's own home: it gets the owner's alert feed (the `Alerts` entity).
        read += [topics.bridge_event, f"{topics.discovery_prefix}/#"]
        write.append(topics.ha_status)
    return TopicGrant(read=tuple(read), write=tuple(write))


def daemon_grant(topics: Topics) -> TopicGrant:
    """The daemon publishes state, discovery and results and reads every app's commands."""
    everything = (f"{topics.base}/#", f"{topics.discovery_prefix}/#")
    return TopicGrant(read=everything, write=everything)


def allowed_actions(command: Command, scopes: frozenset[Scope]) -> tuple[str, ...]:
    """The payload actions these scopes allow on a command topic (e.g. LOCK but not UNLOCK)."""
    return tuple(
        sorted(
            action
            for (cmd, action), (_, scope) in OPERATIONS.items()
            if cmd is command and scope in scopes
        )
    )


def describe_topics(app: App, topics: Topics) -> list[tuple[str, str, str]]:
    """(`subscribe`|`publish`, topic, note) lines telling the owner what the app may use."""
    grant = app_grant(app, topics)
    lines = [("subscribe", topic, "") for topic in grant.read]
    lines += [
        (
            "publish",
            topics.command(app.id, "<vehicle>", cmd.value),
            " / ".join(allowed_actions(cmd, app.scopes)),
        )
        for cmd in allowed_commands(app.scopes)
        if app.enabled
    ]
    if app.home_assistant and app.enabled:
        lines.append(("publish", topics.ha_status, "Home Assistant birth message"))
    return lines
