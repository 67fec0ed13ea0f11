"""Dynamic-security plans as data: the control commands that bring a role or client in step.

Pure functions over what the plugin reported (`listClients`/`getRole` output) and what the registry
wants; `dynsec.py` sends the result. Facts about Mosquitto 2.0.11 this relies on (checked against
the real plugin in the tests): deleting or disabling a client disconnects its sessions at once;
changing a role's ACLs does *not* disconnect anyone, but publish and receive ACLs are checked on
every message, so each role carries explicit receive ACLs above a catch-all deny and a withdrawn
scope stops the next message. When access shrinks the app is also kicked (disable + enable) so its
subscriptions are checked again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.access.broker import BrokerIdentity, DaemonIdentity
from bridge.access.grants import TopicGrant, app_grant, daemon_grant
from bridge.mqtt.topics import Topics

# Everything Ownerlink creates on the broker is named so a later sync can recognise it.
ROLE_PREFIX = "ownerlink-app-"
DAEMON_ROLE = "ownerlink-daemon"
TEXTNAME_PREFIX = "Ownerlink app: "
NOT_FOUND = frozenset({"Client not found", "Role not found"})

SUBSCRIBE, RECEIVE, SEND = "subscribePattern", "publishClientReceive", "publishClientSend"


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One dynsec ACL entry; dynsec identifies an entry by (acltype, topic)."""

    acltype: str
    topic: str
    allow: bool
    priority: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Acl:
        return cls(
            acltype=str(data["acltype"]),
            topic=str(data["topic"]),
            allow=bool(data.get("allow", False)),
            priority=int(data.get("priority", 0)),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """A control command and the plugin errors that mean "already so" (e.g. "Client not found")."""

    command: dict[str, Any]
    tolerate: frozenset[str] = frozenset()


@dataclass
class Plan:
    """Steps to send plus what they change and what cannot be fixed here."""

    steps: list[Step] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)

    def extend(self, other: Plan) -> None:
        self.steps += other.steps
        self.changed += other.changed
        self.missing += other.missing
        self.drift += other.drift


def role_name(app_id: str) -> str:
    return f"{ROLE_PREFIX}{app_id}"


def role_acls(grant: TopicGrant, topics: Topics) -> frozenset[Acl]:
    """The role for a grant: allows at priority 0 above a catch-all deny at -1.

    The denies make the role independent of the broker's default access: nothing else under the
    base topic or the discovery prefix can be subscribed, received or published.
    """
    acls = {Acl(kind, topic, True) for topic in grant.read for kind in (SUBSCRIBE, RECEIVE)}
    acls |= {Acl(SEND, topic, True) for topic in grant.write}
    for prefix in (topics.base, topics.discovery_prefix):
        acls |= {Acl(kind, f"{prefix}/#", False, -1) for kind in (SUBSCRIBE, RECEIVE, SEND)}
    return frozenset(acls)


def daemon_acls(topics: Topics) -> frozenset[Acl]:
    grant = daemon_grant(topics)
    acls = {Acl(kind, topic, True) for topic in grant.read for kind in (SUBSCRIBE, RECEIVE)}
    return frozenset(acls | {Acl(SEND, topic, True) for topic in grant.write})


def plan_create(identity: BrokerIdentity, password: str, acls: frozenset[Acl]) -> Plan:
    """Replace the app's client and role: delete both (kicking old sessions), then create."""
    app = identity.app
    role = role_name(app.id)
    steps = [
        Step({"command": "deleteClient", "username": app.id}, NOT_FOUND),
        Step({"command": "deleteRole", "rolename": role}, NOT_FOUND),
        Step(
            {
                "command": "createRole",
                "rolename": role,
                "textname": f"Ownerlink: {app.id}",
                "acls": [acl.as_dict() for acl in sorted(acls)],
            }
        ),
        Step(
            {
                "command": "createClient",
                "username": app.id,
                "password": password,
                "textname": f"{TEXTNAME_PREFIX}{app.name}",
                "roles": [{"rolename": role}],
            }
        ),
    ]
    if not app.enabled:
        steps.append(Step({"command": "disableClient", "username": app.id}))
    return Plan(steps=steps, changed=[f"created broker client and role for {app.id}"])


def plan_remove(app_id: str) -> Plan:
    """Delete the client (ending its sessions at once) and its role; absent is fine."""
    return Plan(
        steps=[
            Step({"command": "deleteClient", "username": app_id}, NOT_FOUND),
            Step({"command": "deleteRole", "rolename": role_name(app_id)}, NOT_FOUND),
        ],
        changed=[f"removed broker client {app_id}"],
    )


def plan_role(role: str, want: frozenset[Acl], have: frozenset[Acl] | None) -> tuple[Plan, bool]:
    """Bring a role's ACLs to `want`; the flag says whether any access was taken away."""
    if have is None:
        create = {
            "command": "createRole",
            "rolename": role,
            "acls": [acl.as_dict() for acl in sorted(want)],
        }
        return Plan(steps=[Step(create)], changed=[f"created role {role}"]), False
    gone, new = have - want, want - have
    steps = [
        Step(
            {
                "command": "removeRoleACL",
                "rolename": role,
                "acltype": acl.acltype,
                "topic": acl.topic,
            }
        )
        for acl in sorted(gone)
    ]
    steps += [
        Step({"command": "addRoleACL", "rolename": role, **acl.as_dict()}) for acl in sorted(new)
    ]
    changed = [f"updated ACLs of role {role}"] if steps else []
    return Plan(steps=steps, changed=changed), any(acl.allow for acl in gone)


def plan_client(
    username: str, role: str, client: Mapping[str, Any] | None, *, enabled: bool, kick: bool
) -> Plan:
    """Attach the role, set enabled/disabled, and kick live sessions if access shrank."""
    if client is None:
        return Plan(missing=[username])
    steps: list[Step] = []
    if role not in client_roles(client):
        steps.append(Step({"command": "addClientRole", "username": username, "rolename": role}))
    disabled = bool(client.get("disabled", False))
    if disabled == enabled:
        steps.append(
            Step({"command": "enableClient" if enabled else "disableClient", "username": username})
        )
    elif kick and enabled:
        # Disabling ends the sessions; the app reconnects and re-subscribes under the new ACLs.
        steps += [
            Step({"command": "disableClient", "username": username}),
            Step({"command": "enableClient", "username": username}),
        ]
    return Plan(steps=steps, changed=[f"updated broker client {username}"] if steps else [])


def plan_app(
    identity: BrokerIdentity,
    topics: Topics,
    client: Mapping[str, Any] | None,
    have: frozenset[Acl] | None,
) -> Plan:
    """Everything needed to bring one existing app in step (role first, then its client)."""
    app = identity.app
    role = role_name(app.id)
    plan, shrank = plan_role(role, role_acls(app_grant(app, topics), topics), have)
    plan.extend(plan_client(app.id, role, client, enabled=app.enabled, kick=shrank))
    return plan


def plan_daemon(
    daemon: DaemonIdentity,
    topics: Topics,
    client: Mapping[str, Any] | None,
    have: frozenset[Acl] | None,
) -> Plan:
    """The daemon's login gets full access to its topics; its password is never reset by us."""
    plan, _ = plan_role(DAEMON_ROLE, daemon_acls(topics), have)
    if client is not None:
        plan.extend(plan_client(daemon.username, DAEMON_ROLE, client, enabled=True, kick=False))
    elif daemon.password:
        plan.steps.append(
            Step(
                {
                    "command": "createClient",
                    "username": daemon.username,
                    "password": daemon.password,
                    "textname": "Ownerlink daemon",
                    "roles": [{"rolename": DAEMON_ROLE}],
                }
            )
        )
        plan.changed.append(f"created broker client {daemon.username} for the daemon")
    else:
        plan.missing.append(daemon.username)
    return plan


def client_roles(client: Mapping[str, Any]) -> set[str]:
    return {str(r.get("rolename")) for r in client.get("roles", [])}


def is_ours(client: Mapping[str, Any]) -> bool:
    """A client Ownerlink created: marked in its text name or holding one of our app roles."""
    marked = str(client.get("textname") or "").startswith(TEXTNAME_PREFIX)
    return marked or any(r.startswith(ROLE_PREFIX) for r in client_roles(client))


def find_drift(clients: Iterable[Mapping[str, Any]], known: set[str]) -> list[str]:
    """Clients that look like ours (or hold an app's role) but are not that registered app."""
    drift = []
    for client in clients:
        username = str(client.get("username"))
        foreign = sorted(
            r
            for r in client_roles(client)
            if r.startswith(ROLE_PREFIX) and r != role_name(username)
        )
        if foreign:
            roles = ", ".join(foreign)
            drift.append(f"broker client {username!r} holds another app's role: {roles}")
        elif is_ours(client) and username not in known:
            drift.append(
                f"broker client {username!r} looks like an Ownerlink app but is not "
                "registered (added by hand?)"
            )
    return drift
