"""Which vehicles the daemon bridges: configured aliases, or slugs hashed from provider ids."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.config import Settings, VehicleConfig
from bridge.errors import ProviderError
from bridge.logs import get_logger
from bridge.model import Operation, VehicleInfo
from bridge.providers.base import Provider

log = get_logger(__name__)


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


async def resolve_vehicles(
    settings: Settings, providers: Mapping[str, Provider]
) -> list[BridgedVehicle]:
    """Configured vehicles (or, when none are configured, every vehicle each account covers).

    Listing costs one call per account; when the provider is unreachable at start, a configured
    vehicle is still bridged with what the config says, and its details fill in on later reads.
    """
    listed = {name: await _list(provider) for name, provider in providers.items()}
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


async def _list(provider: Provider) -> list[VehicleInfo]:
    try:
        return await provider.list_vehicles()
    except ProviderError as exc:
        log.warning("vehicle list unavailable", account=provider.account, error=str(exc))
        return []


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
