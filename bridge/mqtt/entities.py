"""Home Assistant entity descriptions: the EntitySpec type, templates, predicates (pure).

Each `EntitySpec` says which platform it is, which document feeds it, which command topic it
writes to and, through `when`, which grant it needs. `catalog.py` holds the tables built from
these pieces; `discovery.py` turns them into payloads.

Templates read documents through `DOC` (`value_json` when the payload is a JSON object, else an
empty one) with `.get(...)`, so a missing or null field renders `None`, which Home Assistant
shows as "unknown" rather than logging a template error; so does a payload that is not a JSON
object (the empty retained message that clears a state topic reaches live subscribers too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.model import (
    OPERATIONS,
    ChargingState,
    Command,
    Operation,
    Powertrain,
    Scope,
)

Platform = Literal["sensor", "binary_sensor", "lock", "switch", "button", "device_tracker", "event"]
# Where an entity's state comes from: a vehicle document, the vehicle's availability, or the bridge.
Source = Literal[
    "status", "health", "location", "budget", "availability", "bridge_state", "bridge_event"
]
# Whose availability gates the entity: both the bridge and the vehicle API ("vehicle"), the bridge
# only (diagnostics that stay meaningful when the car's API is down), or nothing (the bridge's own
# connectivity sensor, which must be able to show "offline").
Availability = Literal["vehicle", "bridge", "none"]

SCOPE_OF: Mapping[Operation, Scope] = dict(OPERATIONS.values())


@dataclass(frozen=True, slots=True)
class Grant:
    """What the Home Assistant app may see and do with one vehicle; `when` predicates read it."""

    scopes: frozenset[Scope]
    operations: frozenset[Operation]
    stepup: frozenset[Scope]
    powertrain: Powertrain

    def reads(self, scope: Scope) -> bool:
        return scope in self.scopes

    def can(self, *operations: Operation) -> bool:
        """The app holds the scope and the vehicle's provider supports each operation."""
        return all(op in self.operations and SCOPE_OF[op] in self.scopes for op in operations)

    def needs_code(self, operation: Operation) -> bool:
        return SCOPE_OF[operation] in self.stepup

    def electric(self) -> bool:
        return self.powertrain is not Powertrain.ICE

    def combustion(self) -> bool:
        return self.powertrain is not Powertrain.EV


Predicate = Callable[[Grant], bool]


def _always(_grant: Grant) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One entity: platform options as data, plus where its state comes from and when it applies."""

    key: str
    platform: Platform
    name: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    source: Source | None = None
    # The device_tracker reads its position from JSON attributes, not a state.
    source_option: str = "state_topic"
    # Also expose the source document as attributes (json_attributes_topic).
    attributes: bool = False
    command: Command | None = None
    availability: Availability = "vehicle"
    when: Callable[[Grant], bool] = _always
    # Options that depend on the grant (the step-up code prompt on the lock).
    grant_options: Callable[[Grant], Mapping[str, Any]] | None = None


# -- templates ---------------------------------------------------------------------------------


# The state document, or an empty mapping when the payload is not a JSON object.
DOC = "(value_json if value_json is mapping else {})"


def field_of(name: str) -> str:
    return f"{DOC}.get('{name}')"


def item_of(name: str, key: str) -> str:
    return f"({DOC}.get('{name}') or {{}}).get('{key}')"


def render(expression: str) -> str:
    return "{{ " + expression + " }}"


def mapped(expression: str, mapping: Mapping[Any, str]) -> str:
    """A template mapping document values to entity states; anything else renders None (unknown)."""
    return render(f"{dict(mapping)!r}.get({expression})")


OPEN = {"open": "ON", "closed": "OFF"}
ON_OFF = {True: "ON", False: "OFF"}
ENGINE = {"running": "ON", "stopped": "OFF"}
CHARGING = {state.value: "OFF" for state in ChargingState if state is not ChargingState.UNKNOWN}
CHARGING["charging"] = "ON"
LOCKED = {"locked": "LOCKED", "unlocked": "UNLOCKED"}
UNLOCKED_ON = {"locked": "OFF", "unlocked": "ON"}


def any_open(name: str) -> str:
    """ON if any member is open, OFF if all are known and closed, otherwise unknown."""
    values = f"({DOC}.get('{name}') or {{}}).values() | list"
    return (
        f"{{% set v = {values} %}}"
        "{{ 'ON' if 'open' in v else ('OFF' if v and v | unique | list == ['closed'] else None) }}"
    )


def enum_of(name: str, options: tuple[str, ...]) -> str:
    return render(f"{field_of(name)} if {field_of(name)} in {list(options)!r} else None")


# -- option bundles ----------------------------------------------------------------------------

DIAGNOSTIC = {"entity_category": "diagnostic"}


def measurement(unit: str, device_class: str | None = None, **more: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"unit_of_measurement": unit, "state_class": "measurement"}
    if device_class is not None:
        options["device_class"] = device_class
    return {**options, **more}


def enum_options(options: tuple[str, ...]) -> dict[str, Any]:
    return {"device_class": "enum", "options": list(options)}


# -- predicates --------------------------------------------------------------------------------


def reads_status(grant: Grant) -> bool:
    return grant.reads(Scope.READ_STATUS)


def reads_health(grant: Grant) -> bool:
    return grant.reads(Scope.READ_HEALTH)


def reads_location(grant: Grant) -> bool:
    return grant.reads(Scope.READ_LOCATION)


def health_combustion(grant: Grant) -> bool:
    return reads_health(grant) and grant.combustion()


def status_electric(grant: Grant) -> bool:
    return reads_status(grant) and grant.electric()


def status_combustion(grant: Grant) -> bool:
    return reads_status(grant) and grant.combustion()


def lock_entity(grant: Grant) -> bool:
    return grant.can(Operation.LOCK, Operation.UNLOCK)


def lock_only(grant: Grant) -> bool:
    # Lock without unlock: a button, since a lock entity would offer an unlock that is refused.
    return (
        grant.can(Operation.LOCK)
        and not grant.can(Operation.UNLOCK)
        and not grant.needs_code(Operation.LOCK)
    )


def lock_state_only(grant: Grant) -> bool:
    return reads_status(grant) and not lock_entity(grant)


def engine_switch(grant: Grant) -> bool:
    # A switch cannot carry a step-up code; with step-up on remote start only stopping is offered.
    return grant.can(Operation.START_ENGINE, Operation.STOP_ENGINE) and not grant.needs_code(
        Operation.START_ENGINE
    )


def engine_stop_button(grant: Grant) -> bool:
    return grant.can(Operation.STOP_ENGINE) and grant.needs_code(Operation.START_ENGINE)


def charge_switch(grant: Grant) -> bool:
    # A switch cannot carry a step-up code: with step-up on charging it would always be refused.
    return (
        grant.electric()
        and grant.can(Operation.START_CHARGE, Operation.STOP_CHARGE)
        and not grant.needs_code(Operation.START_CHARGE)
        and not grant.needs_code(Operation.STOP_CHARGE)
    )


def horn_lights(grant: Grant) -> bool:
    return grant.can(Operation.HORN_LIGHTS) and not grant.needs_code(Operation.HORN_LIGHTS)


def refresh(grant: Grant) -> bool:
    return grant.can(Operation.REFRESH) and not grant.needs_code(Operation.REFRESH)


def lock_code(grant: Grant) -> Mapping[str, Any]:
    """Home Assistant prompts for a six-digit code and sends it in a JSON command.

    Home Assistant checks `code_format` for locking too, so the code is optional in it unless
    locking needs one as well: otherwise "lock the car at night" would fail for want of a code.
    Without a code typed, Home Assistant renders `code` as None: `or ''` sends no code instead of
    the word "None" (which would count as a wrong code).
    """
    if not (grant.needs_code(Operation.UNLOCK) or grant.needs_code(Operation.LOCK)):
        return {}
    pattern = r"^\d{6}$" if grant.needs_code(Operation.LOCK) else r"^(\d{6})?$"
    return {
        "code_format": pattern,
        "command_template": '{"action": "{{ value }}", "code": "{{ code or \'\' }}"}',
    }


# -- compact constructors for the tables ------------------------------------------------------


def sensor(
    key: str, name: str, field: str, *, when: Predicate, source: Source = "status", **options: Any
) -> EntitySpec:
    """A sensor showing one field of a document."""
    return EntitySpec(
        key,
        "sensor",
        name,
        source=source,
        when=when,
        options={**options, "value_template": render(field_of(field))},
    )


def binary(
    key: str,
    name: str,
    device_class: str,
    template: str,
    *,
    when: Predicate,
    source: Source = "status",
    **options: Any,
) -> EntitySpec:
    """A binary sensor whose template renders ON, OFF or None (unknown)."""
    return EntitySpec(
        key,
        "binary_sensor",
        name,
        source=source,
        when=when,
        options={"device_class": device_class, **options, "value_template": template},
    )


def button(
    key: str, name: str, command: Command, press: str, *, when: Predicate, **options: Any
) -> EntitySpec:
    return EntitySpec(
        key, "button", name, command=command, when=when, options={"payload_press": press, **options}
    )


def switch(
    key: str, name: str, command: Command, template: str, *, when: Predicate, **options: Any
) -> EntitySpec:
    """A START/STOP switch whose state is the confirmed status, not what was last sent."""
    return EntitySpec(
        key,
        "switch",
        name,
        source="status",
        command=command,
        when=when,
        options={
            "optimistic": False,
            "payload_on": "START",
            "payload_off": "STOP",
            "state_on": "ON",
            "state_off": "OFF",
            **options,
            "value_template": template,
        },
    )


def diagnostic(key: str, name: str, field: str, **options: Any) -> EntitySpec:
    """A budget figure: readable while the car's API is down, so gated by the bridge only."""
    return EntitySpec(
        key,
        "sensor",
        name,
        source="budget",
        availability="bridge",
        options={**options, **DIAGNOSTIC, "value_template": render(field_of(field))},
    )
