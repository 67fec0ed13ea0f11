"""Mosquitto dynamic-security enforcement: one client and one role per app, changed live.

Plans are built by the pure functions in `dynsec_plan.py` and sent by DynsecControl in one
request each; a reply's error fails the change unless the plan said it means "already so".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.access.broker import BrokerIdentity, DaemonIdentity, SyncReport
from bridge.access.control import DynsecControl, DynsecReply
from bridge.access.dynsec_plan import (
    DAEMON_ROLE,
    NOT_FOUND,
    ROLE_PREFIX,
    Acl,
    Plan,
    Step,
    client_roles,
    find_drift,
    is_ours,
    plan_app,
    plan_create,
    plan_daemon,
    plan_remove,
    role_acls,
    role_name,
)
from bridge.access.grants import app_grant
from bridge.errors import BrokerError
from bridge.logs import get_logger
from bridge.mqtt.topics import Topics

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerState:
    """What listClients/listRoles returned, indexed."""

    clients: Mapping[str, Mapping[str, Any]]
    roles: Mapping[str, frozenset[Acl]]


class DynsecEnforcement:
    """Keeps one dynsec client and role per app in step with the registry."""

    mode = "dynsec"

    def __init__(
        self, *, control: DynsecControl, topics: Topics, daemon: DaemonIdentity | None
    ) -> None:
        self._control = control
        self._topics = topics
        self._daemon = daemon

    @property
    def hint(self) -> str | None:
        return None

    def start(self) -> None:
        return None  # the admin connection opens on first use

    def stop(self) -> None:
        self._control.stop()

    def stored_secret(self, password: str) -> str | None:
        return None  # the plugin hashes the password itself at createClient

    def create(
        self, identity: BrokerIdentity, password: str, desired: Sequence[BrokerIdentity]
    ) -> None:
        existing = self._get_client(identity.app.id)
        if existing is not None and not is_ours(existing):
            raise BrokerError(
                f"the broker already has a client {identity.app.id!r} that Ownerlink did not "
                "create; choose another app id, or delete that client first"
            )
        acls = role_acls(app_grant(identity.app, self._topics), self._topics)
        try:
            self._run(plan_create(identity, password, acls).steps)
        except BrokerError:
            self._undo_create(identity.app.id)
            raise

    def update(self, identity: BrokerIdentity, desired: Sequence[BrokerIdentity]) -> None:
        app_id = identity.app.id
        replies = self._run(
            [
                Step({"command": "getClient", "username": app_id}, NOT_FOUND),
                Step({"command": "getRole", "rolename": role_name(app_id)}, NOT_FOUND),
            ]
        )
        client = replies[0].data.get("client") if replies[0].error is None else None
        role = replies[1].data.get("role") if replies[1].error is None else None
        have = frozenset(Acl.from_dict(a) for a in role.get("acls", [])) if role else None
        plan = plan_app(identity, self._topics, client, have)
        self._run(plan.steps)
        if plan.missing:
            log.warning(
                "dynsec_client_missing",
                app=app_id,
                detail="reset the app's password to recreate its broker login",
            )

    def remove(self, app_id: str, desired: Sequence[BrokerIdentity]) -> None:
        self._run(plan_remove(app_id).steps)

    def sync(self, desired: Sequence[BrokerIdentity], removals: Sequence[str]) -> SyncReport:
        state = self._read_state()
        plan = self._plan_sync(state, desired, removals)
        self._run(plan.steps)
        return SyncReport(
            changed=tuple(plan.changed), drift=tuple(plan.drift), missing=tuple(plan.missing)
        )

    # -- helpers ------------------------------------------------------------------------------

    def _plan_sync(
        self, state: BrokerState, desired: Sequence[BrokerIdentity], removals: Sequence[str]
    ) -> Plan:
        plan = Plan()
        for identity in desired:
            app_id = identity.app.id
            plan.extend(
                plan_app(
                    identity,
                    self._topics,
                    state.clients.get(app_id),
                    state.roles.get(role_name(app_id)),
                )
            )
        for app_id in removals:
            if app_id in state.clients or role_name(app_id) in state.roles:
                plan.extend(plan_remove(app_id))
        if self._daemon is not None:
            plan.extend(
                plan_daemon(
                    self._daemon,
                    self._topics,
                    state.clients.get(self._daemon.username),
                    state.roles.get(DAEMON_ROLE),
                )
            )
        known = {i.app.id for i in desired} | set(removals)
        plan.drift += find_drift(state.clients.values(), known)
        plan.extend(self._plan_orphan_roles(state, known))
        return plan

    def _plan_orphan_roles(self, state: BrokerState, known: set[str]) -> Plan:
        """Our roles whose app is gone: delete them if no client holds them (else it is drift)."""
        held = {r for c in state.clients.values() for r in client_roles(c)}
        plan = Plan()
        for role in state.roles:
            if role.startswith(ROLE_PREFIX) and role[len(ROLE_PREFIX) :] not in known:
                if role in held:
                    continue  # reported by find_drift through the client holding it
                plan.steps.append(Step({"command": "deleteRole", "rolename": role}, NOT_FOUND))
                plan.changed.append(f"removed leftover role {role}")
        return plan

    def _read_state(self) -> BrokerState:
        replies = self._run(
            [
                Step({"command": "listClients", "verbose": True, "count": -1}),
                Step({"command": "listRoles", "verbose": True, "count": -1}),
            ]
        )
        clients = {str(c["username"]): c for c in replies[0].data.get("clients", [])}
        roles = {
            str(r["rolename"]): frozenset(Acl.from_dict(a) for a in r.get("acls", []))
            for r in replies[1].data.get("roles", [])
        }
        return BrokerState(clients=clients, roles=roles)

    def _get_client(self, username: str) -> Mapping[str, Any] | None:
        reply = self._run([Step({"command": "getClient", "username": username}, NOT_FOUND)])[0]
        client = reply.data.get("client") if reply.error is None else None
        return client if isinstance(client, Mapping) else None

    def _undo_create(self, app_id: str) -> None:
        """A create that failed half-way must not leave a client or role behind."""
        try:
            self._run(plan_remove(app_id).steps)
        except BrokerError as exc:
            log.warning("dynsec_cleanup_failed", app=app_id, error=str(exc))

    def _run(self, steps: Sequence[Step]) -> list[DynsecReply]:
        """Send the steps in one request; raise BrokerError naming every unexpected refusal."""
        replies = self._control.execute([step.command for step in steps])
        problems = [
            f"{reply.command}: {reply.error}"
            for step, reply in zip(steps, replies, strict=True)
            if reply.error and reply.error not in step.tolerate
        ]
        if problems:
            raise BrokerError("the dynamic-security plugin refused: " + "; ".join(problems))
        return replies
