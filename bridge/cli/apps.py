"""`ownerlink apps …`: register, inspect, re-scope and revoke connected apps.

Every action calls AppRegistry, the same code the owner page uses; this module only parses
arguments, composes the parts for one run and prints. Alerts raised during the run are sent when
it ends (MQTT event with the daemon's login, and the webhook); a failure to send is a warning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bridge.access import validation
from bridge.access.alerts import event_messages
from bridge.access.apps import AppDetails, AppRegistry, NewApp
from bridge.access.broker import SyncReport, build_enforcement
from bridge.access.grants import describe_topics
from bridge.access.webhook import send_all, webhook_from_config
from bridge.cli.common import add_common, settings_from
from bridge.config import Settings
from bridge.errors import BrokerError
from bridge.events import Alert, CollectingAlerts
from bridge.logs import get_logger
from bridge.model import App
from bridge.mqtt.topics import Topics
from bridge.store import Store

log = get_logger(__name__)
Action = Callable[[AppRegistry, argparse.Namespace, Settings], int]
NO_RESTRICTION = "none"  # `apps allowlist APP none`

# What revoking or disabling does to the app's broker login, in each mqtt.enforcement mode. With
# `none` the broker is the owner's, so the sentence says what is left for them to do.
REVOKED_LOGIN = {
    "dynsec": "its broker login is removed and its connections are closed",
    "acl-file": "its broker login is removed from the broker files",
    "none": "Ownerlink does not manage the broker (mqtt.enforcement: none), so remove its login "
    "there yourself",
}
DISABLED_LOGIN = {
    "dynsec": "it cannot log in to the broker",
    "acl-file": "its broker login is taken out of the broker files",
    "none": "Ownerlink does not manage the broker (mqtt.enforcement: none), so disable its login "
    "there yourself",
}


def register(sub: Any) -> None:
    parser = sub.add_parser("apps", help="connected apps: add, list, grant, withdraw, revoke")
    inner = parser.add_subparsers(dest="apps_command", metavar="ACTION", required=True)
    _register_add(inner)
    _register_reading(inner)
    _register_scopes(inner)
    _register_settings(inner)


def _action(inner: Any, name: str, help_text: str, action: Action) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = inner.add_parser(name, help=help_text)
    add_common(parser)
    parser.set_defaults(func=lambda args: _run(args, action))
    return parser


def _register_add(inner: Any) -> None:
    add = _action(inner, "add", "register an app; prints its broker password once", _add)
    add.add_argument("app_id", metavar="ID", help="its broker username: letters, digits, - and _")
    add.add_argument("--name", help="display name (default: the id)")
    add.add_argument(
        "--scopes",
        required=True,
        type=_some_scopes,
        help="comma-separated, e.g. read:status,command:lock",
    )
    add.add_argument(
        "--home-assistant",
        action="store_true",
        help="this app is Home Assistant (its scopes decide discovery)",
    )
    add.add_argument(
        "--allow-location",
        action="store_true",
        help="required to grant read:location (off by default)",
    )
    add.add_argument("--rate-limit", type=int, metavar="N", help="commands per minute")
    add.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="networks its REST calls may come from (repeatable)",
    )


def _register_reading(inner: Any) -> None:
    listing = _action(inner, "list", "list apps, their scopes and last activity", _list)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = _action(inner, "show", "show one app", _show)
    show.add_argument("app_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    _action(inner, "sync", "bring the broker in step with the registry and report drift", _sync)


def _register_scopes(inner: Any) -> None:
    grant = _action(inner, "grant", "grant scopes to an app", _grant)
    grant.add_argument("app_id", metavar="ID")
    grant.add_argument("scopes", nargs="+", metavar="SCOPE")
    grant.add_argument(
        "--allow-location", action="store_true", help="required to grant read:location"
    )
    withdraw = _action(inner, "withdraw", "withdraw scopes from an app", _withdraw)
    withdraw.add_argument("app_id", metavar="ID")
    withdraw.add_argument("scopes", nargs="+", metavar="SCOPE")
    revoke = _action(inner, "revoke", "delete an app and its broker login (kicks it)", _revoke)
    revoke.add_argument("app_id", metavar="ID")


def _register_settings(inner: Any) -> None:
    reset = _action(inner, "reset-password", "give an app a new broker password", _reset)
    reset.add_argument("app_id", metavar="ID")
    for name, action in (("enable", _enable), ("disable", _disable)):
        toggle = _action(inner, name, f"{name} an app without deleting it", action)
        toggle.add_argument("app_id", metavar="ID")
    limit = _action(inner, "rate-limit", "set an app's commands per minute", _rate_limit)
    limit.add_argument("app_id", metavar="ID")
    limit.add_argument("per_minute", metavar="N|default")
    allow = _action(
        inner, "allowlist", "set the networks an app's REST calls may come from", _allowlist
    )
    allow.add_argument("app_id", metavar="ID")
    allow.add_argument(
        "cidrs",
        nargs="*",
        metavar="CIDR",
        help=f"e.g. 192.168.1.0/24; {NO_RESTRICTION} (or no CIDR): no restriction beyond "
        "web.allow_cidrs",
    )


# -- composition ---------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _run(args: argparse.Namespace, action: Action) -> int:
    settings = settings_from(args)
    with _registry(settings) as (registry, alerts):
        try:
            return action(registry, args, settings)
        finally:
            _send_alerts(settings, alerts.alerts)


@contextmanager
def _registry(settings: Settings) -> Iterator[tuple[AppRegistry, CollectingAlerts]]:
    """Open the database, the audit log and the broker back-end for one command run."""
    from bridge.audit.log import AuditLog, audit_directory
    from bridge.audit.read import records_after

    store = Store.open(settings.state_dir)
    audit = AuditLog(
        audit_directory(settings.state_dir), clock=_now, rotate_bytes=settings.audit.rotate_bytes
    )
    enforcement = build_enforcement(settings.mqtt, state_dir=settings.state_dir)
    alerts = CollectingAlerts()
    registry = AppRegistry(
        store=store,
        audit=audit,
        alerts=alerts,
        enforcement=enforcement,
        clock=_now,
        reserved_ids=settings.mqtt.own_logins,
    )
    try:
        audit.open()
        registry.migrate()
        registry.catch_up(partial(records_after, audit.directory), audit.head[0])
        yield registry, alerts
    finally:
        enforcement.stop()
        audit.close()
        store.close()


def _send_alerts(settings: Settings, alerts: Sequence[Alert]) -> None:
    """Deliver this run's alerts the way the daemon would; failures are warnings only."""
    if not alerts:
        return
    topics = _topics(settings)
    try:
        _publish_events(settings, [m for alert in alerts for m in event_messages(topics, alert)])
    except BrokerError as exc:
        log.warning("alert_event_not_published", error=str(exc))
    sender = webhook_from_config(settings.alerts)
    if sender is not None:
        asyncio.run(send_all(sender, [alert.as_document() for alert in alerts]))


def _publish_events(settings: Settings, messages: list[Any]) -> None:
    from bridge.access.control import Connection, publish_once

    mqtt = settings.mqtt
    password = mqtt.password.get_secret_value() if mqtt.password else ""
    conn = Connection.from_config(
        mqtt,
        username=mqtt.username or "",
        password=password,
        client_id=f"{mqtt.client_id}-cli-{uuid.uuid4().hex[:8]}",
    )
    publish_once(conn, messages)


def _topics(settings: Settings) -> Topics:
    return Topics(base=settings.mqtt.base_topic, discovery_prefix=settings.mqtt.discovery_prefix)


# -- actions -------------------------------------------------------------------------------------


def _add(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    new = registry.add(
        args.app_id,
        name=args.name,
        scopes=args.scopes,
        home_assistant=args.home_assistant,
        allow_location=args.allow_location,
        rate_limit_per_minute=args.rate_limit,
        allow_cidrs=args.allow_cidr,
    )
    _print_credentials(new, "added")
    _print_topics(new.app, _topics(settings))
    _print_hint(registry)
    return 0


def _reset(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    new = registry.reset_password(args.app_id)
    _print_credentials(new, "has a new password")
    _print_hint(registry)
    return 0


def _list(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    apps = registry.list_details()
    if args.json:
        print(json.dumps([d.as_document() for d in apps], indent=2))
        return 0
    if not apps:
        print("no apps yet: add one with `ownerlink apps add ID --scopes read:status`")
        return 0
    rows = [("ID", "SCOPES", "LAST SEEN", "FLAGS")]
    rows += [(d.app.id, _scopes(d.app), _when(d.app.last_seen), _flags(d)) for d in apps]
    # Columns as wide as their longest cell: a long scope list must not push the rest askew.
    widths = [max(len(row[n]) for row in rows) for n in range(3)]
    for *cells, flags in rows:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        print("  ".join([*padded, flags]).rstrip())
    return 0


def _show(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    details = registry.details(args.app_id)
    if args.json:
        print(json.dumps(details.as_document(), indent=2))
        return 0
    for key, value in details.as_document().items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key + ':':<24}{'-' if shown in (None, '') else shown}")
    _print_topics(details.app, _topics(settings))
    return 0


def _grant(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    app = registry.grant(args.app_id, _flat(args.scopes), allow_location=args.allow_location)
    print(f"{app.id}: {_scopes(app)}")
    return _report_broker(registry, app.id)


def _withdraw(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    before = registry.get(args.app_id)
    app = registry.withdraw(args.app_id, _flat(args.scopes))
    print(f"{app.id}: {_scopes(app)}")
    if before is not None:
        unheld = sorted(set(_flat(args.scopes)) - {s.value for s in before.scopes})
        if unheld:  # a typo'd app or scope must not read as done
            print(f"{app.id} did not hold {', '.join(unheld)}: nothing to withdraw there")
    return _report_broker(registry, app.id)


def _revoke(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    registry.revoke(args.app_id)
    effect = REVOKED_LOGIN[registry.enforcement.mode]
    print(f"revoked {args.app_id}: its commands are refused; {effect}")
    return _report_broker(registry, args.app_id, hint=registry.enforcement.mode != "none")


def _enable(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    app = registry.set_enabled(args.app_id, True)
    print(f"{app.id}: enabled")
    return _report_broker(registry, app.id)


def _disable(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    app = registry.set_enabled(args.app_id, False)
    effect = DISABLED_LOGIN[registry.enforcement.mode]
    print(f"{app.id}: disabled (its commands are refused; {effect})")
    return _report_broker(registry, app.id, hint=registry.enforcement.mode != "none")


def _rate_limit(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    text = args.per_minute
    limit = None if text == "default" else _int(text)
    app = registry.set_rate_limit(args.app_id, limit)
    shown = app.rate_limit_per_minute or f"default ({settings.commands.rate_limit_per_minute})"
    print(f"{app.id}: {shown} commands per minute")
    return 0


def _allowlist(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    app = registry.set_allowlist(args.app_id, _cidrs(args.cidrs))
    if app.allow_cidrs:
        print(f"{app.id}: REST calls allowed only from {', '.join(app.allow_cidrs)}")
    else:
        print(f"{app.id}: REST calls not restricted beyond web.allow_cidrs")
    return 0


def _cidrs(values: Sequence[str]) -> list[str]:
    """`none` alone (or nothing at all) clears the allowlist; mixed with networks it is a typo."""
    if NO_RESTRICTION not in values:
        return list(values)
    if len(values) > 1:
        from bridge.errors import AccessError

        raise AccessError(f"{NO_RESTRICTION!r} clears the allowlist: give it alone, or networks")
    return []


def _sync(registry: AppRegistry, args: argparse.Namespace, settings: Settings) -> int:
    report = registry.sync_broker()
    _print_report(report, daemon_user=settings.mqtt.username)
    _print_hint(registry)
    return 1 if report.drift or report.missing else 0


# -- printing ------------------------------------------------------------------------------------


def _print_credentials(new: NewApp, what: str) -> None:
    app = new.app
    print(f"app {app.id} ({app.name}) {what}; scopes: {_scopes(app)}")
    print(f"  broker username: {app.id}")
    print(f"  broker password: {new.password}")
    print(
        "  The password is shown only now: store it in the app. "
        f"`ownerlink apps reset-password {app.id}` makes a new one."
    )


def _print_topics(app: App, topics: Topics) -> None:
    print("topics (<vehicle> is the vehicle's slug):")
    for verb, topic, note in describe_topics(app, topics):
        print(f"  {verb:<10} {topic}" + (f"   ({note})" if note else ""))
    if any(verb == "publish" for verb, _, _ in describe_topics(app, topics)):
        print(f"  results    {topics.result(app.id, '<vehicle>')}")


def _print_hint(registry: AppRegistry) -> None:
    hint = registry.enforcement.hint
    if hint:
        print(f"note: {hint}", file=sys.stderr)


def _report_broker(registry: AppRegistry, app_id: str, *, hint: bool = True) -> int:
    """Say so when the broker is behind: the change is saved and retried, but not live yet.
    `hint=False` when the message already said what the owner must do on the broker."""
    pending = registry.pending()
    if app_id in pending:
        print(
            f"warning: the broker is not updated yet ({pending[app_id] or 'unreachable'}); "
            "the daemon keeps retrying, or run `ownerlink apps sync`",
            file=sys.stderr,
        )
    elif hint:
        _print_hint(registry)
    return 0


def _print_report(report: SyncReport, daemon_user: str | None) -> None:
    for line in report.changed:
        print(f"applied: {line}")
    for line in report.drift:
        print(f"drift: {line}")
    for name in report.missing:
        fix = (
            "set mqtt.password so Ownerlink can create it (see docs/broker-setup.md)"
            if name == daemon_user
            else f"run `ownerlink apps reset-password {name}`"
        )
        print(f"missing: no broker login for {name}; {fix}")
    if not (report.changed or report.drift or report.missing):
        print("broker in step with the registry")


def _scopes(app: App) -> str:
    return ", ".join(sorted(s.value for s in app.scopes)) or "(none)"


def _flags(details: AppDetails) -> str:
    flags = ["home-assistant"] if details.app.home_assistant else []
    flags += [] if details.app.enabled else ["disabled"]
    flags += ["broker-pending"] if details.broker_pending else []
    return ",".join(flags) or "-"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def _some_scopes(text: str) -> list[str]:
    """`--scopes` for a new app: an app with nothing granted can do nothing, so an empty list
    is a slip (an unset shell variable, say), not a wish."""
    scopes = validation.split_scopes(text)
    if not scopes:
        raise argparse.ArgumentTypeError("give at least one scope, e.g. read:status")
    return scopes


def _flat(values: Sequence[str]) -> list[str]:
    """SCOPE arguments may also be comma-separated: `grant app a,b c`."""
    return [scope for value in values for scope in validation.split_scopes(value)]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        from bridge.errors import AccessError

        raise AccessError(f"invalid rate limit {text!r}: a number or 'default'") from None
