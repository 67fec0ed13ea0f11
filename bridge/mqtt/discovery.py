"""Home Assistant MQTT discovery as data: entity tables in, retained `Publish` values out (pure).

Two layouts, chosen by `mqtt.discovery_mode`:

- device (default, Home Assistant 2024.11+): one payload per device at
  `<prefix>/device/<node_id>/config` with `dev`, `o` and the entities under `cmps`;
- entity: one payload per entity at `<prefix>/<platform>/<node_id>/<key>/config`.

Vehicle ids are `ownerlink_<vehicle>` and unique_ids `ownerlink_<vehicle>_<key>`. Entity keys are a
closed set in which no key ends with `_<another key>`, so two vehicles can never produce the same
unique_id. The bridge's own device uses `ownerlink-bridge` (with the base topic appended when
it is not the default), which no vehicle id can equal (a vehicle slug starts with a letter or
digit). Nothing here ever sees a VIN: a device gets no
`serial_number`, and the provider's vehicle id is not part of a `VehicleDescription`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bridge import __version__
from bridge.model import Command, Operation, Powertrain, Scope, VehicleInfo, VehicleState
from bridge.mqtt.catalog import (
    BRIDGE,
    DEFAULT_DOORS,
    DEFAULT_TYRES,
    DEFAULT_WINDOWS,
    KNOWN_DOORS,
    KNOWN_TYRES,
    KNOWN_WINDOWS,
    vehicle_entities,
)
from bridge.mqtt.entities import EntitySpec, Grant, Source
from bridge.mqtt.topics import DEFAULT_BASE, Publish, Topics

DiscoveryMode = Literal["device", "entity"]

ONLINE = "online"
OFFLINE = "offline"
# FordConnect reports the make as a letter.
MAKES = {"F": "Ford", "L": "Lincoln"}


@dataclass(frozen=True, slots=True)
class Origin:
    """The `o` block: which software published the discovery."""

    name: str = "Ownerlink"
    sw_version: str = __version__
    support_url: str | None = None

    def as_dict(self) -> dict[str, str]:
        origin = {"name": self.name, "sw": self.sw_version}
        if self.support_url:
            origin["url"] = self.support_url
        return origin


@dataclass(frozen=True, slots=True)
class VehicleDescription:
    """What discovery needs to know about one vehicle. Deliberately holds no provider id or VIN."""

    slug: str
    name: str
    manufacturer: str | None = None
    model: str | None = None
    year: int | None = None
    powertrain: Powertrain = Powertrain.UNKNOWN
    operations: frozenset[Operation] = frozenset()
    doors: tuple[str, ...] = DEFAULT_DOORS
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    tyres: tuple[str, ...] = DEFAULT_TYRES

    @classmethod
    def from_info(
        cls,
        slug: str,
        info: VehicleInfo,
        *,
        operations: frozenset[Operation],
        name: str | None = None,
    ) -> VehicleDescription:
        """Describe a provider's vehicle; the provider's `vehicle_id` is left behind on purpose."""
        make = MAKES.get(info.make or "", info.make)
        return cls(
            slug=slug,
            name=name or info.nickname or info.model or slug,
            manufacturer=make,
            model=info.model,
            year=info.year,
            powertrain=info.powertrain,
            operations=operations,
        )

    def with_positions_from(self, state: VehicleState) -> VehicleDescription:
        """Offer the doors, windows and tyres this car actually reports (known positions only)."""
        return dataclasses.replace(
            self,
            doors=_positions(state.status.doors, KNOWN_DOORS, self.doors),
            windows=_positions(state.status.windows, KNOWN_WINDOWS, self.windows),
            tyres=_positions(state.health.tyre_pressures_kpa, KNOWN_TYRES, self.tyres),
        )


def _positions(
    reported: Iterable[str], known: tuple[str, ...], fallback: tuple[str, ...]
) -> tuple[str, ...]:
    seen = set(reported)
    found = tuple(p for p in known if p in seen)
    return found or fallback


@dataclass(frozen=True, slots=True)
class _Device:
    """Everything a component needs from its device: ids, the device block, topics."""

    node_id: str
    entity_prefix: str
    info: Mapping[str, Any]
    sources: Mapping[Source, str]
    availability: Mapping[str, list[dict[str, str]]]
    command_topic: Callable[[Command], str] | None


# -- public builders ---------------------------------------------------------------------------


def build_vehicle_discovery(
    *,
    vehicle: VehicleDescription,
    scopes: frozenset[Scope],
    ha_app: str,
    topics: Topics,
    mode: DiscoveryMode,
    stepup_scopes: frozenset[Scope],
    origin: Origin | None = None,
) -> list[Publish]:
    """The discovery messages for one vehicle, offering only what the Home Assistant app may use."""
    grant = Grant(
        scopes=scopes,
        operations=vehicle.operations,
        stepup=stepup_scopes,
        powertrain=vehicle.powertrain,
    )
    specs = [spec for spec in _specs(vehicle) if spec.when(grant)]
    device = _vehicle_device(vehicle, topics, ha_app)
    return _render(
        device, specs, grant, prefix=topics.discovery_prefix, mode=mode, origin=origin or Origin()
    )


def build_bridge_discovery(
    *, topics: Topics, mode: DiscoveryMode, origin: Origin | None = None
) -> list[Publish]:
    """The bridge's own device: its connectivity and the alerts event entity."""
    origin = origin or Origin()
    grant = Grant(frozenset(), frozenset(), frozenset(), Powertrain.UNKNOWN)
    device = _bridge_device(topics, origin)
    return _render(
        device, list(BRIDGE), grant, prefix=topics.discovery_prefix, mode=mode, origin=origin
    )


def vehicle_discovery_universe(
    *, vehicle: VehicleDescription, ha_app: str, topics: Topics, origin: Origin | None = None
) -> list[Publish]:
    """Every discovery message this vehicle could ever have, in both layouts.

    Used as the "previous" set on start-up: `removals(universe, current)` then clears whatever an
    earlier run (other scopes, other layout) may have left retained on the broker.
    """
    every = dataclasses.replace(
        vehicle,
        doors=KNOWN_DOORS,
        windows=KNOWN_WINDOWS,
        tyres=KNOWN_TYRES,
        operations=frozenset(Operation),
    )
    grant = Grant(frozenset(Scope), frozenset(Operation), frozenset(), vehicle.powertrain)
    device = _vehicle_device(every, topics, ha_app)
    specs = list(_specs(every))
    prefix, origin = topics.discovery_prefix, origin or Origin()
    modes: tuple[DiscoveryMode, ...] = ("device", "entity")
    return [
        message
        for mode in modes
        for message in _render(device, specs, grant, prefix=prefix, mode=mode, origin=origin)
    ]


def removals(previous: Sequence[Publish], current: Sequence[Publish]) -> list[Publish]:
    """What must be published before `current` so entities no longer offered disappear.

    Entity layout: an empty retained payload on each config topic that is gone. Device layout:
    the device payload with each vanished component reduced to `{"p": <platform>}`; the caller
    then publishes `current`, which no longer has it.
    """
    now = {message.topic: message for message in current}
    cleared: list[Publish] = []
    stubs: list[Publish] = []
    for old in previous:
        new = now.get(old.topic)
        if new is None:
            if old.payload:
                cleared.append(Publish(old.topic, "", retain=True))
            continue
        stub = _component_stubs(old, new)
        if stub is not None:
            stubs.append(stub)
    # Clears first. A stub also carries the device's current components, which Home Assistant
    # then binds to the device topic; an entity-layout clear for one of them arriving after it
    # makes Home Assistant log a "conflicting MQTT discovery message" warning.
    return [*cleared, *stubs]


def migrations(
    previous: Sequence[Publish], current: Sequence[Publish]
) -> tuple[list[Publish], list[Publish]]:
    """Entity-layout config topics whose entities `current` offers again in a device payload.

    Cleared first, Home Assistant would delete such an entity (its name, area and history) and
    make a new one. Its migration keeps them: `{"migrate_discovery": true}` on the old topic
    first, then the old topic cleared (Home Assistant has let go of it, and keeps the entity in
    its registry), then the device payload. Returns (markers, clears); the caller sends both
    before the device payload and leaves these topics out of `removals`. The other way round is
    not migrated: an owner goes back to the entity layout for a Home Assistant too old to know
    either device payloads or migrations.
    """
    offered = {
        component
        for message in current
        if _is_device_payload(message)
        for component in _components(message)
    }
    now = {message.topic for message in current}
    moved = [
        old.topic
        for old in previous
        if old.payload and old.topic not in now and not _is_device_payload(old)
        if _components(old) <= offered
    ]
    before = [_retained(topic, {"migrate_discovery": True}) for topic in moved]
    return before, [Publish(topic, "", retain=True) for topic in moved]


def _is_device_payload(message: Publish) -> bool:
    return isinstance(_document(message.payload).get("cmps"), dict)


def _components(message: Publish) -> set[tuple[str, str]]:
    """(node id, entity key) of each entity a config message describes, from its topic (an
    entity-layout topic ends `<node_id>/<key>/config`, a device one `<node_id>/config`)."""
    levels = message.topic.split("/")
    cmps = _document(message.payload).get("cmps")
    if isinstance(cmps, dict):
        return {(levels[-2], key) for key in cmps}
    return {(levels[-3], levels[-2])}


# -- devices -----------------------------------------------------------------------------------


def _specs(vehicle: VehicleDescription) -> tuple[EntitySpec, ...]:
    return vehicle_entities(vehicle.doors, vehicle.windows, vehicle.tyres)


def _availability(*topics_: str) -> list[dict[str, str]]:
    return [
        {"topic": t, "payload_available": ONLINE, "payload_not_available": OFFLINE} for t in topics_
    ]


def _vehicle_device(vehicle: VehicleDescription, topics: Topics, ha_app: str) -> _Device:
    slug = vehicle.slug
    sources: dict[Source, str] = {
        "status": topics.state(slug, "status"),
        "health": topics.state(slug, "health"),
        "location": topics.state(slug, "location"),
        "budget": topics.state(slug, "budget"),
        "availability": topics.availability(slug),
        "bridge_state": topics.bridge_state,
        "bridge_event": topics.bridge_event,
    }
    return _Device(
        node_id=f"ownerlink_{slug}",
        entity_prefix=slug.replace("-", "_"),
        info=_vehicle_info(vehicle, topics),
        sources=sources,
        availability={
            "vehicle": _availability(topics.bridge_state, topics.availability(slug)),
            "bridge": _availability(topics.bridge_state),
        },
        command_topic=lambda command: topics.command(ha_app, slug, command.value),
    )


def _vehicle_info(vehicle: VehicleDescription, topics: Topics) -> dict[str, Any]:
    # Never a serial_number: for a car that would be the VIN, which owners must not publish.
    info: dict[str, Any] = {
        "identifiers": [f"ownerlink_{vehicle.slug}"],
        "name": vehicle.name,
        "via_device": topics.bridge_node_id,
    }
    if vehicle.manufacturer:
        info["manufacturer"] = vehicle.manufacturer
    model = " ".join(str(part) for part in (vehicle.year, vehicle.model) if part)
    if model:
        info["model"] = model
    return info


def _bridge_device(topics: Topics, origin: Origin) -> _Device:
    return _Device(
        node_id=topics.bridge_node_id,
        entity_prefix=_bridge_entity_prefix(topics.base),
        info={
            "identifiers": [topics.bridge_node_id],
            "name": "Ownerlink" if topics.base == DEFAULT_BASE else f"Ownerlink ({topics.base})",
            "manufacturer": "Ownerlink",
            "model": "Ownerlink bridge",
            "sw_version": origin.sw_version,
        },
        sources={"bridge_state": topics.bridge_state, "bridge_event": topics.bridge_event},
        availability={"bridge": _availability(topics.bridge_state)},
        command_topic=None,
    )


def _bridge_entity_prefix(base: str) -> str:
    """`ownerlink` under the default base topic (the entity ids it always had). Under another
    base, one made from it: with the same ids, Home Assistant named a second bridge's entities
    (the demo's beside a real one) `event.ownerlink_alerts_2`, or the real one's, whichever came
    second. Entity ids need not be unique to us: Home Assistant adds a suffix if two collide."""
    if base == DEFAULT_BASE:
        return "ownerlink"
    slug = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")
    return slug if slug.startswith("ownerlink") else f"ownerlink_{slug}"


# -- rendering ---------------------------------------------------------------------------------


def _render(
    device: _Device,
    specs: Sequence[EntitySpec],
    grant: Grant,
    *,
    prefix: str,
    mode: DiscoveryMode,
    origin: Origin,
) -> list[Publish]:
    components = {spec.key: (spec.platform, _component(spec, device, grant)) for spec in specs}
    if not components:
        return []
    if mode == "device":
        payload = {
            "dev": device.info,
            "o": origin.as_dict(),
            "cmps": {key: {"p": platform, **body} for key, (platform, body) in components.items()},
        }
        return [_retained(f"{prefix}/device/{device.node_id}/config", payload)]
    return [
        _retained(
            f"{prefix}/{platform}/{device.node_id}/{key}/config",
            {**body, "device": device.info, "origin": origin.as_dict()},
        )
        for key, (platform, body) in components.items()
    ]


def _component(spec: EntitySpec, device: _Device, grant: Grant) -> dict[str, Any]:
    entity_id = f"{device.entity_prefix}_{spec.key}"
    body: dict[str, Any] = {
        "name": spec.name,
        "unique_id": f"{device.node_id}_{spec.key}",
        # object_id is deprecated for default_entity_id; older Home Assistants only know the first.
        "object_id": entity_id,
        "default_entity_id": f"{spec.platform}.{entity_id}",
        "qos": 1,
    }
    if spec.availability != "none":
        body["availability"] = device.availability[spec.availability]
        body["availability_mode"] = "all"
    if spec.source is not None:
        body[spec.source_option] = device.sources[spec.source]
        if spec.attributes:
            body["json_attributes_topic"] = device.sources[spec.source]
    if spec.command is not None and device.command_topic is not None:
        body["command_topic"] = device.command_topic(spec.command)
        # A retained command could re-run (unlock!) whenever something reconnects.
        body["retain"] = False
    body.update(spec.options)
    if spec.grant_options is not None:
        body.update(spec.grant_options(grant))
    return body


def _retained(topic: str, payload: Mapping[str, Any]) -> Publish:
    return Publish(topic, json.dumps(payload, separators=(",", ":")), retain=True)


def _component_stubs(old: Publish, new: Publish) -> Publish | None:
    old_doc, new_doc = _document(old.payload), _document(new.payload)
    old_cmps, new_cmps = old_doc.get("cmps"), new_doc.get("cmps")
    if not isinstance(old_cmps, dict) or not isinstance(new_cmps, dict):
        return None
    gone = sorted(old_cmps.keys() - new_cmps.keys())
    if not gone:
        return None
    stubs = {key: {"p": old_cmps[key]["p"]} for key in gone}
    return _retained(new.topic, {**new_doc, "cmps": {**new_cmps, **stubs}})


def _document(payload: str | bytes) -> dict[str, Any]:
    if not payload:
        return {}
    loaded = json.loads(payload)
    return loaded if isinstance(loaded, dict) else {}
