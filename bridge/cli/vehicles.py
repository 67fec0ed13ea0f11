"""`ownerlink vehicles` and `ownerlink status`: what is configured, what logins cover, a read now.

Both charge their calls to the same persisted budget the daemon uses (a CLI read must never push
the account over the limit) and print neither tokens nor VINs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from bridge.cli.common import add_common, charged_budget, settings_from
from bridge.config import Settings
from bridge.errors import ConfigError, ProviderError
from bridge.events import CollectingAlerts
from bridge.model import VehicleInfo, VehicleState, to_document
from bridge.providers.base import Provider
from bridge.providers.factory import build_providers
from bridge.providers.fordconnect_query import FordConnectQueryProvider
from bridge.providers.tokens import TokenStore
from bridge.vehicles import coverage_problems


def register(sub: Any) -> None:
    vehicles = sub.add_parser("vehicles", help="list configured and discovered vehicles")
    vehicles.add_argument("--json", action="store_true", help="print JSON")
    add_common(vehicles)
    vehicles.set_defaults(func=vehicles_command)
    status = sub.add_parser("status", help="read a vehicle's state now (charged to the budget)")
    status.add_argument(
        "vehicle", nargs="?", help="vehicle alias or account (default: the only one)"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    add_common(status)
    status.set_defaults(func=status_command)


# -- ownerlink vehicles -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discovery:
    """What each logged-in account's consent covers, and why an account could not be asked."""

    vehicles: dict[str, list[VehicleInfo]]
    errors: dict[str, str]


def vehicles_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with charged_budget(settings) as budget:
        providers = build_providers(settings, gate=budget, alerts=CollectingAlerts())
        found = asyncio.run(_discover(settings, providers))
    doc = vehicles_document(settings, providers, found)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_vehicles(doc, sys.stdout)
    return 0


async def _discover(settings: Settings, providers: Mapping[str, Provider]) -> Discovery:
    """Ask every account that has a usable login; the others are reported, never fatal."""
    store = TokenStore(settings.state_dir)
    found: dict[str, list[VehicleInfo]] = {}
    errors: dict[str, str] = {}
    try:
        for name, provider in providers.items():
            tokens = store.load(name)
            if tokens is None or tokens.relogin_needed:
                errors[name] = f"not logged in (run `ownerlink login {name}`)"
                continue
            try:
                found[name] = await provider.list_vehicles()
            except ProviderError as exc:
                errors[name] = str(exc)
    finally:
        await _close_all(providers)
    return Discovery(found, errors)


async def _close_all(providers: Mapping[str, Provider]) -> None:
    for provider in providers.values():
        await provider.aclose()


def vehicles_document(
    settings: Settings, providers: Mapping[str, Provider], found: Discovery
) -> dict[str, Any]:
    """Configured vehicles (with what discovery knows of them) and every discovered vehicle."""
    configured = [_configured(settings, alias, providers, found) for alias in settings.vehicles]
    discovered = {
        account: [{"id": i.vehicle_id, **_describe(i, providers[account])} for i in infos]
        for account, infos in found.vehicles.items()
    }
    return {"configured": configured, "discovered": discovered, "errors": found.errors}


def _configured(
    settings: Settings, alias: str, providers: Mapping[str, Provider], found: Discovery
) -> dict[str, Any]:
    vehicle = settings.vehicles[alias]
    account = settings.accounts.get(vehicle.account)
    listed = found.vehicles.get(vehicle.account, [])
    info = _match(listed, vehicle.id)
    mine = f"vehicles.{alias}."
    problems = coverage_problems(settings, vehicle.account, listed)
    return {
        "alias": alias,
        "account": vehicle.account,
        "provider": account.provider if account is not None else None,
        "id": vehicle.id,
        **_describe(info, providers.get(vehicle.account)),
        "problem": next((p for p in problems if p.startswith(mine)), None),
    }


def _match(infos: list[VehicleInfo], vehicle_id: str | None) -> VehicleInfo | None:
    # A Query account's one vehicle matches a configured vehicle that names no id.
    if vehicle_id is None:
        return infos[0] if len(infos) == 1 else None
    return next((i for i in infos if i.vehicle_id == vehicle_id), None)


def _describe(info: VehicleInfo | None, provider: Provider | None) -> dict[str, Any]:
    if info is None or provider is None:
        return {"model": None, "nickname": None, "powertrain": None, "commands": None}
    model = " ".join(str(p) for p in (info.year, info.make, info.model) if p) or None
    commands = sorted(op.value for op in provider.supported_operations(info))
    return {
        "model": model,
        "nickname": info.nickname,
        "powertrain": info.powertrain.value,
        "commands": commands,
    }


def _print_vehicles(doc: Mapping[str, Any], out: TextIO) -> None:
    print("Configured vehicles:", file=out)
    if not doc["configured"]:
        print("  (none; add them under `vehicles:` in the config)", file=out)
    for v in doc["configured"]:
        if v["problem"] is not None:
            print(f"  {v['alias']}: account {v['account']}; {v['problem']}", file=out)
            continue
        commands = _commands_text(v["commands"])
        print(
            f"  {v['alias']}: account {v['account']} ({v['provider']}), "
            f"{v['model'] or 'model unknown'}; commands: {commands}",
            file=out,
        )
    for account, infos in doc["discovered"].items():
        print(f"Account {account} covers {len(infos)} vehicle(s):", file=out)
        for v in infos:
            print(
                f"  id {v['id']}: {v['model'] or 'model unknown'}; "
                f"commands: {_commands_text(v['commands'])}",
                file=out,
            )
    for account, error in doc["errors"].items():
        print(f"Account {account}: {error}", file=out)


def _commands_text(commands: list[str] | None) -> str:
    if commands is None:
        return "unknown until the account is logged in"
    return ", ".join(commands) or "none (read-only)"


# -- ownerlink status ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The vehicle to read: its account and the provider's id (None: the account's only one)."""

    label: str
    account: str
    vehicle_id: str | None


def status_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = resolve_target(settings, args.vehicle)
    with charged_budget(settings) as budget:
        providers = build_providers(settings, gate=budget, alerts=CollectingAlerts())
        state = asyncio.run(_read(providers, target))
        usage = budget.usage(target.account)
    doc = to_document(state)
    doc["vehicle_id"] = target.label  # the alias the owner knows, not the provider's id
    doc["budget"] = {
        "calls_used_today": usage.used_day,
        "calls_left_today": usage.left_day,
        "calls_used_hour": usage.used_hour,
        "calls_left_hour": usage.left_hour,
        "reserve_left": usage.reserve_left,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_state(doc, sys.stdout)
    return 0


def resolve_target(settings: Settings, name: str | None) -> Target:
    """A configured alias, an account name, or (unnamed) the only vehicle or account."""
    if name is None:
        if len(settings.vehicles) == 1:
            name = next(iter(settings.vehicles))
        elif not settings.vehicles and len(settings.accounts) == 1:
            name = next(iter(settings.accounts))
        elif not settings.vehicles and not settings.accounts:
            raise ConfigError(
                ["accounts: none configured, so no vehicle to read (see config.example.yaml)"]
            )
        else:
            choices = ", ".join(sorted(settings.vehicles) or sorted(settings.accounts))
            raise ConfigError([f"vehicles: name the vehicle to read ({choices})"])
    if name in settings.vehicles:
        vehicle = settings.vehicles[name]
        return Target(name, vehicle.account, vehicle.id)
    if name in settings.accounts:
        return _account_target(settings, name)
    raise ConfigError([f"vehicles.{name}: no such vehicle or account"])


def _account_target(settings: Settings, account: str) -> Target:
    """An account named instead of a vehicle: its one configured vehicle, else its login's only
    car (found with a list call); with several configured, which one is for the owner to say."""
    aliases = sorted(alias for alias, v in settings.vehicles.items() if v.account == account)
    if len(aliases) > 1:
        raise ConfigError(
            [f"accounts.{account}: has {len(aliases)} vehicles; name one: {', '.join(aliases)}"]
        )
    if aliases:
        vehicle = settings.vehicles[aliases[0]]
        return Target(aliases[0], account, vehicle.id)
    return Target(account, account, None)


async def _read(providers: Mapping[str, Provider], target: Target) -> VehicleState:
    provider = providers.get(target.account)
    if provider is None:
        raise ConfigError([f"vehicles.{target.label}.account: unknown account {target.account}"])
    try:
        vehicle_id = target.vehicle_id or await _only_vehicle(provider, target.account)
        return await provider.read(vehicle_id)
    finally:
        await _close_all(providers)


async def _only_vehicle(provider: Provider, account: str) -> str:
    if isinstance(provider, FordConnectQueryProvider):
        return account  # the token is the vehicle: no id is needed, so no call is spent on one
    vehicles = await provider.list_vehicles()
    if len(vehicles) != 1:
        raise ConfigError(
            [
                f"accounts.{account}: the login covers {len(vehicles)} vehicles; "
                f"configure one under `vehicles:` with its `id`"
            ]
        )
    return vehicles[0].vehicle_id


def _print_state(doc: Mapping[str, Any], out: TextIO) -> None:
    print(f"{doc['vehicle_id']} — updated {doc['updated_at'] or 'unknown'}", file=out)
    for section in ("status", "health", "location", "budget"):
        values = doc.get(section)
        if not values:
            continue
        print(f"{section}:", file=out)
        for key, value in values.items():
            if value not in (None, {}, [], (), "unknown"):
                print(f"  {key}: {_value_text(value)}", file=out)


def _value_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    return str(value)
