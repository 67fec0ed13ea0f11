"""`ownerlink command VEHICLE ACTION`: send a command as the owner, through the same pipeline.

The owner holds every scope, but unlock and remote start still need the step-up code (asked for
on a terminal when `--code` is not given), and the command is audited like any other. It runs
beside the daemon if one is up: the audit log and the id, step-up and budget state are shared
safely between processes. Like the daemon, it refuses to act on an audit log that lacks the head
the broker holds (records cut off, or rewritten). Exit status: 0 succeeded, 1 refused or failed,
2 a usage or config error (an unknown vehicle, say: nothing was sent), 3 timed out (the car may
still have done it: check before retrying).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from bridge.audit.anchor import ANCHOR_FIX, MalformedHead, anchor_problem, fetch_head
from bridge.audit.log import AuditLog, audit_directory
from bridge.cli.common import add_common, settings_from
from bridge.commands.apps import ConfigApps
from bridge.commands.assemble import (
    budget_check,
    build_pipeline,
    last_minute_charges,
    vehicle_id_of,
    vehicle_routes,
)
from bridge.commands.decide import requires_stepup
from bridge.commands.inflight import owner_command_running
from bridge.commands.pipeline import CommandPipeline
from bridge.commands.results import CommandResult
from bridge.config import DEFAULT_PATHS, Settings, find_config_path
from bridge.errors import AuditTampered, BrokerError, ConfigError, ProviderError
from bridge.events import Alert, CollectingAlerts
from bridge.logs import get_logger
from bridge.model import OPERATIONS, Command, CommandStatus, Operation, VehicleInfo
from bridge.mqtt.topics import Publish, Topics
from bridge.polling.budget import Budget
from bridge.providers.base import Provider
from bridge.providers.factory import build_providers
from bridge.store import Store

log = get_logger(__name__)

# What the owner types → (command topic word, action).
ACTIONS: Mapping[str, tuple[Command, str]] = {
    "lock": (Command.LOCK, "LOCK"),
    "unlock": (Command.LOCK, "UNLOCK"),
    "start-engine": (Command.ENGINE, "START"),
    "stop-engine": (Command.ENGINE, "STOP"),
    "start-charge": (Command.CHARGE, "START"),
    "stop-charge": (Command.CHARGE, "STOP"),
    "horn-lights": (Command.HORN_LIGHTS, "PRESS"),
    "refresh": (Command.REFRESH, "PRESS"),
}
EXIT_CODES = {CommandStatus.SUCCEEDED: 0, CommandStatus.TIMED_OUT: 3}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "command",
        help="send a command to a vehicle as the owner (audited; step-up where required)",
        description=(
            "Exit status: 0 succeeded, 1 refused or failed, 2 usage or config error (e.g. an "
            "unknown vehicle; nothing was sent), 3 timed out (the car may still have done it)."
        ),
    )
    parser.add_argument("vehicle", metavar="VEHICLE", help="the vehicle's slug from the config")
    parser.add_argument(
        "action",
        metavar="ACTION",
        type=action_name,
        choices=sorted(ACTIONS),
        help=f"one of: {', '.join(sorted(ACTIONS))} (any case; _ for - works too)",
    )
    given = parser.add_mutually_exclusive_group()
    given.add_argument(
        "--code",
        help="the step-up code (asked for on a terminal when needed). Other local users can "
        "read it in the process list until it is used: scripts, prefer --code-stdin",
    )
    given.add_argument(
        "--code-stdin",
        action="store_true",
        help="read the step-up code from the first line of standard input (for scripts)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common(parser)
    parser.set_defaults(func=command_command)


def action_name(typed: str) -> str:
    """`LOCK`, `Start_Engine` and `start-engine` name the same action: MQTT payloads are upper
    case, and the owner should not have to remember which surface wants which."""
    return typed.strip().lower().replace("_", "-")


def _unknown_vehicle(settings: Settings, args: argparse.Namespace) -> str:
    if settings.vehicles:
        known = ", ".join(sorted(settings.vehicles))
        return f"vehicles.{args.vehicle}: no such vehicle ({known})"
    if find_config_path(getattr(args, "config", None)) is None:
        # The usual cause: run from elsewhere than the daemon, which was given --config.
        looked = ", ".join(str(p) for p in DEFAULT_PATHS)
        return (
            f"vehicles.{args.vehicle}: no config file was found (looked for {looked}); "
            "pass --config FILE or set OWNERLINK_CONFIG"
        )
    return f"vehicles.{args.vehicle}: no such vehicle (the config file names none)"


def _now() -> datetime:
    return datetime.now(UTC)


def command_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.vehicle not in settings.vehicles:
        raise ConfigError([_unknown_vehicle(settings, args)])
    command, action = ACTIONS[args.action]
    code = _given_code(args) or _ask_code(settings, command, action)
    alerts = CollectingAlerts()
    try:
        result = asyncio.run(
            send(settings, args.vehicle, command, action, code=code, alerts=alerts)
        )
    finally:
        deliver_alerts(settings, alerts.alerts)
    _print_result(result, as_json=args.json)
    return EXIT_CODES.get(result.status, 1)


def _given_code(args: argparse.Namespace) -> str | None:
    """The code from standard input or the command line. On the command line it is in the
    process list for as long as the command takes to reach the car (a broker round trip or
    more): an app on the same machine could read it there and spend it on its own unlock."""
    if args.code_stdin:
        return sys.stdin.readline().strip() or None
    return str(args.code) if args.code else None


def _ask_code(settings: Settings, command: Command, action: str) -> str | None:
    operation, scope = OPERATIONS[(command, action)]
    if not requires_stepup(operation, scope, settings.stepup.required_for):
        return None
    if not sys.stdin.isatty():
        return None  # refused as stepup_required, which says what to do
    return getpass.getpass("Step-up code: ").strip() or None


async def send(
    settings: Settings,
    slug: str,
    command: Command,
    action: str,
    *,
    code: str | None,
    alerts: CollectingAlerts,
) -> CommandResult:
    """Run one owner command through a pipeline composed for this run alone."""
    operation = OPERATIONS[(command, action)][0]
    async with _command_path(settings, slug, operation, alerts) as pipeline:
        return await pipeline.submit_owner(slug, command.value, action, code=code)


@asynccontextmanager
async def _command_path(
    settings: Settings, slug: str, operation: Operation, alerts: CollectingAlerts
) -> AsyncIterator[CommandPipeline]:
    """The daemon's parts (budget, providers, audit log, pipeline), started and taken down.
    The whole run holds the owner-command lock: a daemon starting meanwhile leaves this
    command's ending to us rather than answering it as interrupted (bridge.commands.inflight)."""
    with owner_command_running(settings.state_dir):
        async with _parts(settings, slug, operation, alerts) as pipeline:
            yield pipeline


@asynccontextmanager
async def _parts(
    settings: Settings, slug: str, operation: Operation, alerts: CollectingAlerts
) -> AsyncIterator[CommandPipeline]:
    store = Store.open(settings.state_dir)
    budget = Budget(store=store, config=settings.budget, alerts=alerts)
    budget.start()
    providers = build_providers(settings, gate=budget, alerts=alerts)
    audit = AuditLog(
        audit_directory(settings.state_dir), clock=_now, rotate_bytes=settings.audit.rotate_bytes
    )
    try:
        audit.open()
        await _check_anchor(settings, audit)
        info = await _describe(settings, providers, slug, operation)
        pipeline = build_pipeline(
            settings,
            store=store,
            audit=audit,
            alerts=alerts,
            clock=_now,
            routes=vehicle_routes(settings, providers, {slug: info} if info else {}),
            apps=ConfigApps(settings.apps),
            publisher=_Discard(),
            budget_ok=budget_check(budget, settings),
        )
        # Each run is a new process: without the log's last minute, a script calling this in a
        # loop met no rate limit at all.
        charges = await asyncio.to_thread(last_minute_charges, audit.directory, _now())
        pipeline.restore_rates(charges)
        await pipeline.start()
        try:
            yield pipeline
        finally:
            await pipeline.stop()
    finally:
        for provider in providers.values():
            await provider.aclose()
        audit.close()
        store.close()


async def _check_anchor(settings: Settings, audit: AuditLog) -> None:
    """Refuse, as the daemon does, to act on a log that lacks the head the broker holds:
    records were cut off the end, or it was rewritten. (The daemon stops taking commands then;
    this command went on, and wrote on top.) A broker that does not answer is a warning: this is
    the owner's way to reach the car when the broker is down, and the daemon compares the
    records written meanwhile with the broker's head at its next start."""
    try:
        held = await asyncio.to_thread(fetch_head, settings)
    except MalformedHead:
        return  # not a head the daemon published: nothing to compare with (as the daemon does)
    except BrokerError as exc:
        print(f"warning: audit log not compared with the broker's head: {exc}", file=sys.stderr)
        return
    if held is None:
        return
    # The daemon beside us may have written (and published) records since we opened the log:
    # take them in first, or its newest head would read as records cut off.
    await asyncio.to_thread(audit.refresh)
    problem = await asyncio.to_thread(anchor_problem, audit.directory, held, audit.head)
    if problem is not None:
        raise AuditTampered(f"{problem}; nothing was sent. {ANCHOR_FIX}")


async def _describe(
    settings: Settings, providers: Mapping[str, Provider], slug: str, operation: Operation
) -> VehicleInfo | None:
    """What the car is, asked of the provider only when it matters (charging needs an EV):
    the common commands spend no call on it."""
    provider = providers.get(settings.vehicles[slug].account)
    vehicle_id = vehicle_id_of(settings, slug)
    if provider is None or operation in provider.supported_operations(VehicleInfo(vehicle_id)):
        return None
    try:
        infos = await provider.list_vehicles()
    except ProviderError as exc:
        log.warning("vehicle details unavailable", vehicle=slug, error=str(exc))
        return None
    return next((i for i in infos if i.vehicle_id == vehicle_id), None)


class _Discard:
    """Owner results are printed, not published."""

    def publish(self, message: Publish) -> None:
        return None


def _print_result(result: CommandResult, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_document(), indent=2))
        return
    what = f"{result.command} {result.action or ''}".strip()
    line = f"{what} on {result.vehicle}: {result.status.value}"
    if result.reason not in ("ok", ""):
        line += f" ({result.reason})"
    print(line + (f" — {result.detail}" if result.detail else ""))


def deliver_alerts(settings: Settings, alerts: Sequence[Alert]) -> None:
    """Send this run's alerts (a failed code, a lockout) as the daemon would; never fatal."""
    if not alerts:
        return
    from bridge.access.alerts import event_messages
    from bridge.access.control import Connection, publish_once
    from bridge.access.webhook import send_all, webhook_from_config

    mqtt = settings.mqtt
    topics = Topics(base=mqtt.base_topic, discovery_prefix=mqtt.discovery_prefix)
    conn = Connection.from_config(
        mqtt,
        username=mqtt.username or "",
        password=mqtt.password.get_secret_value() if mqtt.password else "",
        client_id=f"{mqtt.client_id}-cli-{uuid.uuid4().hex[:8]}",
    )
    try:
        publish_once(conn, [m for alert in alerts for m in event_messages(topics, alert)])
    except BrokerError as exc:
        log.warning("alert event not published", error=str(exc))
    sender = webhook_from_config(settings.alerts)
    if sender is not None:
        asyncio.run(send_all(sender, [alert.as_document() for alert in alerts]))
