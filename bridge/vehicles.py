"""Which vehicles the daemon bridges: configured aliases, or slugs hashed from provider ids."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.config import Settings, VehicleConfig
from bridge.errors import ProviderError, StateError
from bridge.logs import get_logger
from bridge.model import Operation, Powertrain, VehicleInfo, to_document
from bridge.providers.base import Provider
from bridge.store import Store

log = get_logger(__name__)

MIGRATIONS = (
    "CREATE TABLE vehicle_lists (account TEXT PRIMARY KEY, vehicles TEXT NOT NULL)",
    # The door, window and tyre positions a car reported: see VehicleMemory.
    "CREATE TABLE vehicle_positions (slug TEXT PRIMARY KEY, positions TEXT NOT NULL)",
)
# Door, window and tyre position keys, in the order VehicleDescription holds them.
Positions = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class BridgedVehicle:
    """One vehicle as the daemon knows it. `vehicle_id` is the provider's: never published."""

    slug: str
    account: str
    vehicle_id: str
    info: VehicleInfo
    name: str | None
    operations: frozenset[Operation]


def derived_slug(account: str, vehicle_id: str) -> str:
    """A stable topic slug from a hash of the provider's id: never the VIN, never the id itself."""
    digest = hashlib.sha256(f"{account}:{vehicle_id}".encode()).hexdigest()
    return f"car-{digest[:8]}"


class VehicleMemory:
    """What the last run learnt about the cars, kept in the state database: each account's
    vehicle list, and the door, window and tyre positions each car reported.

    Home Assistant is told of a car before its first read (so it appears at once), and that
    description should be the one the last run ended with. Otherwise a start while the provider
    cannot list (unreachable, or the day's budget spent) would describe a bare car, and every
    start would first offer the default doors and then, a read later, the car's own: entities
    the owner named and placed in rooms would be removed and others added in their place.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self) -> None:
        self.store.migrate("vehicles", MIGRATIONS)

    def vehicle_list(self, account: str) -> list[VehicleInfo] | None:
        """The account's last list, or None when there is none (or it cannot be read)."""
        text = self._read("SELECT vehicles FROM vehicle_lists WHERE account = ?", account)
        try:
            return [_info(doc) for doc in json.loads(text)] if text is not None else None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("remembered vehicle list unreadable", account=account, error=str(exc))
            return None

    def remember_list(self, account: str, infos: list[VehicleInfo]) -> None:
        text = json.dumps([to_document(info) for info in infos], sort_keys=True)
        self._write("vehicle_lists", "account", account, "vehicles", text)

    def positions(self, slug: str) -> Positions | None:
        """The door, window and tyre positions the car last reported, or None."""
        text = self._read("SELECT positions FROM vehicle_positions WHERE slug = ?", slug)
        if text is None:
            return None
        try:
            doors, windows, tyres = json.loads(text)
            return (tuple(map(str, doors)), tuple(map(str, windows)), tuple(map(str, tyres)))
        except (ValueError, TypeError) as exc:
            log.warning("remembered positions unreadable", vehicle=slug, error=str(exc))
            return None

    def remember_positions(self, slug: str, positions: Positions) -> None:
        text = json.dumps([list(group) for group in positions])
        self._write("vehicle_positions", "slug", slug, "positions", text)

    def _read(self, sql: str, key: str) -> str | None:
        try:
            rows = self.store.query(sql, (key,))
        except (StateError, sqlite3.Error) as exc:
            log.warning("vehicle memory unreadable", error=str(exc))
            return None
        return str(rows[0][0]) if rows else None

    def _write(self, table: str, key_column: str, key: str, column: str, text: str) -> None:
        # Table and column names are this module's own constants, never input.
        sql = (
            f"INSERT INTO {table} ({key_column}, {column}) VALUES (?, ?) "  # noqa: S608
            f"ON CONFLICT ({key_column}) DO UPDATE SET {column} = excluded.{column}"
        )
        try:
            with self.store.transaction() as conn:
                conn.execute(sql, (key, text))
        except (StateError, sqlite3.Error) as exc:  # only a help for the next start
            log.warning("vehicle memory not written", error=str(exc))


def _info(doc: dict[str, Any]) -> VehicleInfo:
    return VehicleInfo(
        vehicle_id=str(doc["vehicle_id"]),
        make=doc.get("make"),
        model=doc.get("model"),
        year=doc.get("year"),
        nickname=doc.get("nickname"),
        powertrain=Powertrain(doc.get("powertrain", Powertrain.UNKNOWN)),
    )


COVERAGE_FIX = "`ownerlink vehicles` lists the ids each login covers"


def coverage_problems(settings: Settings, account: str, listed: list[VehicleInfo]) -> list[str]:
    """Pure: the account's configured vehicles that its login's list does not cover, one line
    each naming the key. A mistyped id (or the VIN in its place) was polled in vain every few
    minutes, at info level; an id-less vehicle on a login with several cars was the first one.
    Query accounts are left out: their login is the car, whatever id the config gives."""
    config = settings.accounts.get(account)
    if config is None or config.provider == "fordconnect-query" or not listed:
        return []
    ids = {info.vehicle_id for info in listed}
    cars = f"{len(listed)} vehicle{'s' * (len(listed) != 1)}"
    problems = []
    for alias, vehicle in settings.vehicles.items():
        if vehicle.account != account:
            continue
        if vehicle.id is None and len(listed) > 1:
            problems.append(
                f"vehicles.{alias}.id: missing, but account {account}'s login covers {cars}: "
                "give the id of one"
            )
        elif vehicle.id is not None and vehicle.id not in ids:
            problems.append(
                f"vehicles.{alias}.id: not the id of any of the {cars} account {account}'s "
                "login covers (the provider's id, never the VIN)"
            )
    return problems


async def resolve_vehicles(
    settings: Settings,
    providers: Mapping[str, Provider],
    memory: VehicleMemory | None = None,
    *,
    held: Collection[str] = (),
) -> list[BridgedVehicle]:
    """Configured vehicles (or, when none are configured, every vehicle each account covers).

    Listing costs one call per account. When the provider cannot list at start, the account's
    last list stands in (from `memory`); with none, a configured vehicle is still bridged with
    what the config says, and its details fill in on later reads. An account in `held` is not
    asked at all (the car maker asked it for no calls yet: `bridge.polling.holds`); its last list
    stands in the same way.
    """
    listed = {
        name: await _list(provider, memory) if name not in held else _remembered(provider, memory)
        for name, provider in providers.items()
    }
    for account, infos in listed.items():
        for problem in coverage_problems(settings, account, infos):
            log.warning("vehicle not covered", problem=problem, fix=COVERAGE_FIX)
    if settings.vehicles:
        return [
            _configured(alias, cfg, providers[cfg.account], listed.get(cfg.account, []))
            for alias, cfg in settings.vehicles.items()
        ]
    return [
        _bridged(derived_slug(account, info.vehicle_id), account, info, None, providers[account])
        for account, infos in listed.items()
        for info in infos
    ]


async def _list(provider: Provider, memory: VehicleMemory | None) -> list[VehicleInfo]:
    try:
        infos = await provider.list_vehicles()
    except ProviderError as exc:
        log.warning("vehicle list unavailable", account=provider.account, error=str(exc))
        return _remembered(provider, memory)
    if memory is not None:
        memory.remember_list(provider.account, infos)
    return infos


def _remembered(provider: Provider, memory: VehicleMemory | None) -> list[VehicleInfo]:
    """The account's last list, standing in for one that cannot be had now."""
    remembered = memory.vehicle_list(provider.account) if memory is not None else None
    log.info(
        "vehicle list from memory",
        account=provider.account,
        using="the last list" if remembered is not None else "the configuration",
    )
    return remembered or []


def _configured(
    alias: str, cfg: VehicleConfig, provider: Provider, listed: list[VehicleInfo]
) -> BridgedVehicle:
    match = next((i for i in listed if cfg.id in (None, i.vehicle_id)), None)
    info = match or VehicleInfo(vehicle_id=cfg.id or "")
    return _bridged(alias, cfg.account, info, cfg.name, provider)


def _bridged(
    slug: str, account: str, info: VehicleInfo, name: str | None, provider: Provider
) -> BridgedVehicle:
    return BridgedVehicle(
        slug=slug,
        account=account,
        vehicle_id=info.vehicle_id,
        info=info,
        name=name,
        operations=provider.supported_operations(info),
    )
