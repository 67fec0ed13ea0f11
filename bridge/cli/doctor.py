"""`ownerlink doctor`: one line per check, a fix under each failure; exit 1 if any check failed.

The checks live in `bridge/doctor/`. This module composes them in the order an owner would
debug (config, state, broker, logins, provider, clock, budget, audit), asks the provider the
questions that need httpx, and prints text or `--json`.

The provider probe is one GET per distinct URL (the API base and the token endpoint) carrying no
token, no Application-Id and no client secret: nothing in it names the owner's login or app, so it
cannot count against the account's limits, it is not charged to our budget, and it cannot rotate
a refresh token (Ford answers 401 or 405). It still proves DNS, TLS and the route work, and its
`Date` header gives the server's clock. Only `--online` makes a real call (list vehicles), charged
to the budget like the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from bridge import doctor
from bridge.audit.anchor import fetch_head
from bridge.audit.ring import unavailable as ring_unavailable
from bridge.audit.verify import Head
from bridge.cli.common import add_common, number_in, settings_from
from bridge.config import AccountConfig, Settings, find_config_path
from bridge.doctor import Check, HttpAnswer
from bridge.errors import BrokerError, ConfigError, ProviderError
from bridge.events import CollectingAlerts
from bridge.logs import scrub_text
from bridge.polling.budget import Budget
from bridge.polling.clock import Clock, utc_now
from bridge.providers.factory import build_account
from bridge.providers.fordconnect import V1_BASE_URL
from bridge.providers.fordconnect_query import QUERY_BASE_URL
from bridge.providers.oauth import token_endpoint
from bridge.providers.tokens import TokenStore
from bridge.store import Store
from bridge.vehicles import coverage_problems

# Long enough for a Raspberry Pi on Wi-Fi to reach Ford, short enough that a dead broker or a
# black-holed route does not make doctor look hung.
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 300.0
MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
ASCII_MARKS = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "doctor", help="check config, state, broker, logins, provider, clock, budget and audit"
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--online",
        action="store_true",
        help="also list each account's vehicles once (one call charged to its budget)",
    )
    parser.add_argument(
        "--timeout",
        # More than 0: 0 would fail every probe at once; the socket library refuses a negative
        # or huge timeout with a traceback.
        type=number_in(0, MAX_TIMEOUT_S, unit="seconds"),
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for each broker or provider answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    add_common(parser)
    parser.set_defaults(func=doctor_command)


@dataclass(frozen=True, slots=True)
class Probes:
    """What doctor reads the world through; tests pass a fake clock, user id or transport."""

    clock: Clock = utc_now
    uid: int = field(default_factory=os.geteuid)
    transport: httpx.BaseTransport | None = None
    fsync_ring: Callable[[], str | None] = ring_unavailable  # why io_uring cannot be used, or None


def doctor_command(
    args: argparse.Namespace, probes: Probes | None = None, out: TextIO | None = None
) -> int:
    """Run every check, print them, and return 1 if any failed (warnings do not fail)."""
    stream = out or sys.stdout
    try:
        settings = settings_from(args)  # a bad config raises ConfigError: exit 2 in main
    except ConfigError as exc:
        if args.json:  # a monitoring script reading stdout still gets a document, naming the key
            bad = doctor.failed("config", "; ".join(exc.problems), "correct the key named")
            print(json.dumps(report_document([bad]), indent=2), file=stream)
        raise
    checks = run_checks(
        settings,
        config_path=find_config_path(args.config),
        online=args.online,
        timeout_s=args.timeout,
        probes=probes or Probes(),
    )
    if args.json:
        print(json.dumps(report_document(checks), indent=2), file=stream)
    else:
        print_report(checks, stream)
    return 1 if any(check.ok is False for check in checks) else 0


def run_checks(
    settings: Settings, *, config_path: Path | None, online: bool, timeout_s: float, probes: Probes
) -> list[Check]:
    """Every check, in the order an owner would debug."""
    clock = probes.clock
    checks = [doctor.check_config(settings, config_path)]
    checks += doctor.check_state(
        settings.state_dir, uid=probes.uid, now=clock(), own_logins=settings.mqtt.own_logins
    )
    broker = doctor.check_broker(settings.mqtt, timeout_s=timeout_s, state_dir=settings.state_dir)
    checks += broker
    store = TokenStore(settings.state_dir)
    tokens = {name: doctor.check_tokens(name, store, clock()) for name in settings.accounts}
    checks += tokens.values()
    answers = probe_providers(settings, timeout_s=timeout_s, probes=probes)
    checks += [doctor.check_provider(name, found) for name, found in answers.items()]
    if answers:
        checks.append(doctor.check_clock([a for found in answers.values() for a in found]))
    logged_in = [name for name, check in tokens.items() if check.ok is not False]
    if online and logged_in:
        checks += online_checks(settings, logged_in, clock)  # before the budget: it shows the call
    checks += doctor.check_budgets(settings, clock())
    reachable = all(check.ok is not False for check in broker)
    held = held_head(settings, timeout_s) if reachable else None
    checks.append(doctor.check_audit(settings.state_dir, held))
    checks.append(doctor.check_audit_fsync(probes.fsync_ring()))
    return checks


def held_head(settings: Settings, timeout_s: float) -> Head | None:
    """The audit head the broker keeps, to check the log against as the daemon does at start;
    None when there is none or it cannot be read (the broker check has said why)."""
    try:
        return fetch_head(settings, wait_s=timeout_s)
    except BrokerError:
        return None


# -- the provider probe (httpx) -------------------------------------------------------------------


def provider_urls(config: AccountConfig) -> list[tuple[str, str]]:
    """The API base and the token endpoint the account's daemon would use."""
    default = V1_BASE_URL if config.provider == "fordconnect" else QUERY_BASE_URL
    return [("API", config.api_base_url or default), ("token endpoint", token_endpoint(config))]


def probe_providers(
    settings: Settings, *, timeout_s: float, probes: Probes
) -> dict[str, list[HttpAnswer]]:
    """One unauthenticated GET per distinct URL, shared by accounts on the same servers."""
    seen: dict[str, HttpAnswer] = {}
    found: dict[str, list[HttpAnswer]] = {}
    with httpx.Client(transport=probes.transport, timeout=timeout_s) as client:
        for name, config in settings.accounts.items():
            for label, url in provider_urls(config):
                if url not in seen:
                    seen[url] = fetch(client, label, url, probes.clock)
            found[name] = [seen[url] for _, url in provider_urls(config)]
    return found


def fetch(client: httpx.Client, label: str, url: str, clock: Clock) -> HttpAnswer:
    """GET `url` with no credentials (and no redirects): its status and the server's Date."""
    try:
        response = client.get(url, follow_redirects=False)
    except httpx.HTTPError as exc:
        detail = scrub_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return HttpAnswer(label, url, clock(), error=detail)
    date = http_date(response.headers.get("date"))
    return HttpAnswer(label, url, clock(), status=response.status_code, server_date=date)


def http_date(raw: str | None) -> datetime | None:
    """An RFC 9110 `Date` header as an aware UTC datetime, or None."""
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# -- --online: one real call per account ----------------------------------------------------------


def online_checks(settings: Settings, accounts: Sequence[str], clock: Clock) -> list[Check]:
    """List vehicles once per account through the real budget (charged like the daemon's calls).

    Only accounts whose tokens passed: the others already failed with `ownerlink login`.
    """
    store = Store.open(settings.state_dir)
    try:
        budget = Budget(store=store, config=settings.budget, alerts=CollectingAlerts(), clock=clock)
        budget.start()
        return [asyncio.run(_list_once(settings, name, budget, clock)) for name in accounts]
    finally:
        store.close()


async def _list_once(settings: Settings, account: str, budget: Budget, clock: Clock) -> Check:
    parts = build_account(
        settings,
        account,
        gate=budget,
        alerts=CollectingAlerts(),
        clock=lambda: clock().timestamp(),
    )
    try:
        vehicles = await parts.provider.list_vehicles()
    except ProviderError as exc:
        return doctor.judge_online(account, exc, 0)
    finally:
        await parts.provider.aclose()
    uncovered = coverage_problems(settings, account, vehicles)
    return doctor.judge_online(account, None, len(vehicles), uncovered)


# -- output ---------------------------------------------------------------------------------------


def report_document(checks: Sequence[Check]) -> dict[str, Any]:
    """The `--json` form: overall verdict, counts, and every check."""
    return {
        "ok": not any(c.ok is False for c in checks),
        "failed": sum(c.ok is False for c in checks),
        "warnings": sum(c.ok is None for c in checks),
        "checks": [c.as_dict() for c in checks],
    }


def print_report(checks: Sequence[Check], out: TextIO) -> None:
    """One line per check; a `fix:` line under each failure and warning that has one."""
    marks = _marks(out)
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{marks[check.status]} {check.name:<{width}}  {check.detail}", file=out)
        if check.fix and check.ok is not True:
            print(f"  {'':<{width}}  fix: {check.fix}", file=out)
    print(summary(checks), file=out)


def summary(checks: Sequence[Check]) -> str:
    failures = sum(c.ok is False for c in checks)
    warnings = sum(c.ok is None for c in checks)
    noted = f" ({warnings} warning{'' if warnings == 1 else 's'})" if warnings else ""
    if failures == 0:
        return f"All checks passed{noted}."
    plural = "" if failures == 1 else "s"
    return (
        f"{failures} check{plural} failed{noted}: apply the fixes and run ownerlink doctor again."
    )


def _marks(out: TextIO) -> dict[str, str]:
    # A serial console or a C locale cannot print ✓ and ✗; fall back to words there. A stream
    # without an encoding (StringIO) takes any text.
    encoding = getattr(out, "encoding", None)
    try:
        "".join(MARKS.values()).encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return ASCII_MARKS
    return MARKS
