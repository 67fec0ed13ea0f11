"""What Ownerlink offers Home Assistant: the entity tables for a vehicle and for the bridge."""

from __future__ import annotations

from typing import Any, Literal

from bridge.events import AlertKind
from bridge.model import ChargingState, Command, Ignition
from bridge.mqtt.entities import (
    CHARGING,
    DIAGNOSTIC,
    DOC,
    ENGINE,
    LOCKED,
    ON_OFF,
    OPEN,
    UNLOCKED_ON,
    EntitySpec,
    any_open,
    binary,
    button,
    charge_switch,
    diagnostic,
    engine_stop_button,
    engine_switch,
    enum_of,
    enum_options,
    field_of,
    health_combustion,
    horn_lights,
    item_of,
    lock_code,
    lock_entity,
    lock_only,
    lock_state_only,
    mapped,
    measurement,
    reads_health,
    reads_location,
    reads_status,
    refresh,
    render,
    sensor,
    status_combustion,
    status_electric,
    switch,
)

# Door, window and tyre positions are the providers' normalised keys: Ford's enum names in lower
# case. Only these are offered, which also keeps every entity key (and so every unique_id) known.
KNOWN_DOORS = (
    "front_left",
    "front_right",
    "rear_left",
    "rear_right",
    "sliding_left",
    "sliding_right",
    "rear_cargo_left",
    "rear_cargo_right",
    "tailgate",
    "inner_tailgate",
    "frunk",
    "unspecified_front",
    "unspecified_rear",
    # FordConnect v1 names rows and seats, not corners (which corner the driver sits at depends
    # on the market).
    "front_driver",
    "front_passenger",
    "rear_driver",
    "rear_passenger",
)
KNOWN_WINDOWS = (
    "front_left",
    "front_right",
    "rear_left",
    "rear_right",
    "unspecified_front",
    "unspecified_rear",
)
KNOWN_TYRES = (
    "front_left",
    "front_right",
    "rear_left",
    "rear_right",
    "rear_left_inner",
    "rear_left_outer",
    "rear_right_inner",
    "rear_right_outer",
)
DEFAULT_DOORS = ("front_left", "front_right", "rear_left", "rear_right", "tailgate")
DEFAULT_WINDOWS = ("front_left", "front_right", "rear_left", "rear_right")
DEFAULT_TYRES = ("front_left", "front_right", "rear_left", "rear_right")

# -- the tables --------------------------------------------------------------------------------

IGNITION = tuple(s.value for s in Ignition if s is not Ignition.UNKNOWN)
CHARGING_STATES = tuple(s.value for s in ChargingState if s is not ChargingState.UNKNOWN)
ODOMETER: dict[str, Any] = {
    "device_class": "distance",
    "unit_of_measurement": "km",
    "state_class": "total_increasing",
}

STATUS: tuple[EntitySpec, ...] = (
    sensor(
        "fuel_level",
        "Fuel level",
        "fuel_level_pct",
        when=status_combustion,
        **measurement("%", icon="mdi:gas-station"),
    ),
    sensor(
        "battery_level",
        "Battery",
        "battery_level_pct",
        when=status_electric,
        **measurement("%", "battery"),
    ),
    sensor("range", "Range", "range_km", when=reads_status, **measurement("km", "distance")),
    sensor("odometer", "Odometer", "odometer_km", when=reads_status, **ODOMETER),
    sensor(
        "time_to_full",
        "Time to full charge",
        "time_to_full_min",
        when=status_electric,
        **measurement("min", "duration"),
    ),
    sensor("alarm", "Alarm", "alarm", when=reads_status, icon="mdi:shield-car"),
    sensor(
        "last_update",
        "Last update",
        "updated_at",
        when=reads_status,
        device_class="timestamp",
        entity_category="diagnostic",
    ),
    EntitySpec(
        "ignition",
        "sensor",
        "Ignition",
        source="status",
        when=reads_status,
        options={
            **enum_options(IGNITION),
            "icon": "mdi:key-variant",
            "value_template": enum_of("ignition", IGNITION),
        },
    ),
    EntitySpec(
        "charging_state",
        "sensor",
        "Charging state",
        source="status",
        when=status_electric,
        options={
            **enum_options(CHARGING_STATES),
            "icon": "mdi:ev-station",
            "value_template": enum_of("charging", CHARGING_STATES),
        },
    ),
    binary("engine", "Engine", "running", mapped(field_of("engine"), ENGINE), when=reads_status),
    binary(
        "charging",
        "Charging",
        "battery_charging",
        mapped(field_of("charging"), CHARGING),
        when=status_electric,
    ),
    binary("plug", "Plug", "plug", mapped(field_of("plugged_in"), ON_OFF), when=status_electric),
    binary("doors", "Doors", "door", any_open("doors"), when=reads_status),
    binary("windows", "Windows", "window", any_open("windows"), when=reads_status),
    binary("hood", "Hood", "opening", mapped(field_of("hood"), OPEN), when=reads_status),
    # Only without a lock entity. device_class lock: ON means unlocked.
    binary(
        "lock_status", "Lock", "lock", mapped(field_of("lock"), UNLOCKED_ON), when=lock_state_only
    ),
)

HEALTH: tuple[EntitySpec, ...] = (
    binary(
        "tyre_pressure_warning",
        "Tyre pressure warning",
        "problem",
        mapped(field_of("tyre_pressure_warning"), ON_OFF),
        when=reads_health,
        source="health",
    ),
    sensor(
        "oil_life",
        "Oil life",
        "oil_life_pct",
        when=health_combustion,
        source="health",
        **measurement("%", icon="mdi:oil"),
    ),
    sensor(
        "battery_12v",
        "12 V battery",
        "battery_12v_pct",
        when=reads_health,
        source="health",
        entity_category="diagnostic",
        **measurement("%", "battery"),
    ),
    sensor(
        "battery_12v_voltage",
        "12 V battery voltage",
        "battery_12v_voltage",
        when=reads_health,
        source="health",
        entity_category="diagnostic",
        **measurement("V", "voltage"),
    ),
    EntitySpec(
        "health_alerts",
        "sensor",
        "Health alerts",
        source="health",
        when=reads_health,
        attributes=True,
        options={
            "icon": "mdi:car-wrench",
            "state_class": "measurement",
            "value_template": render(f"({DOC}.get('alerts') or []) | length"),
            "json_attributes_template": render(f"{{'alerts': {DOC}.get('alerts') or []}} | tojson"),
        },
    ),
)

LOCATION: tuple[EntitySpec, ...] = (
    EntitySpec(
        "location",
        "device_tracker",
        "Location",
        source="location",
        source_option="json_attributes_topic",
        when=reads_location,
        options={"source_type": "gps", "icon": "mdi:car"},
    ),
    sensor(
        "speed",
        "Speed",
        "speed_kmh",
        when=reads_location,
        source="location",
        **measurement("km/h", "speed"),
    ),
    # No state_class: Home Assistant's statistics average arithmetically, and the mean of 350°
    # and 10° is not 180°.
    sensor(
        "heading",
        "Heading",
        "heading_deg",
        when=reads_location,
        source="location",
        unit_of_measurement="°",
        icon="mdi:compass",
    ),
)

DIAGNOSTICS: tuple[EntitySpec, ...] = (
    EntitySpec(
        "connection",
        "binary_sensor",
        "Connection",
        source="availability",
        availability="bridge",
        options={
            "device_class": "connectivity",
            **DIAGNOSTIC,
            "payload_on": "online",
            "payload_off": "offline",
        },
    ),
    # measurement, not total_increasing: the count is over the sliding last 24 hours, so it
    # falls a little whenever an old call leaves the window, which is not a meter reset.
    diagnostic(
        "calls_used_today",
        "API calls used today",
        "calls_used_today",
        unit_of_measurement="calls",
        state_class="measurement",
        icon="mdi:counter",
    ),
    diagnostic(
        "calls_left_today",
        "API calls left today",
        "calls_left_today",
        **measurement("calls", icon="mdi:counter"),
    ),
    diagnostic("next_poll", "Next poll", "next_poll", device_class="timestamp"),
    diagnostic("polling_mode", "Polling mode", "mode", icon="mdi:timer-cog-outline"),
)

COMMANDS: tuple[EntitySpec, ...] = (
    EntitySpec(
        "lock",
        "lock",
        "Lock",
        source="status",
        command=Command.LOCK,
        when=lock_entity,
        grant_options=lock_code,
        options={
            "optimistic": False,
            "payload_lock": "LOCK",
            "payload_unlock": "UNLOCK",
            "state_locked": "LOCKED",
            "state_unlocked": "UNLOCKED",
            "value_template": mapped(field_of("lock"), LOCKED),
        },
    ),
    # Not "Lock": beside it, without unlock, the lock_status sensor already has that name.
    button("lock_button", "Lock car", Command.LOCK, "LOCK", when=lock_only, icon="mdi:car-key"),
    switch(
        "remote_start",
        "Remote start",
        Command.ENGINE,
        mapped(field_of("engine"), ENGINE),
        when=engine_switch,
        icon="mdi:engine",
    ),
    button(
        "engine_stop",
        "Stop engine",
        Command.ENGINE,
        "STOP",
        when=engine_stop_button,
        icon="mdi:engine-off",
    ),
    switch(
        "charge",
        "Charge",
        Command.CHARGE,
        mapped(field_of("charging"), CHARGING),
        when=charge_switch,
        icon="mdi:ev-plug-type2",
    ),
    button(
        "horn_lights",
        "Horn and lights",
        Command.HORN_LIGHTS,
        "PRESS",
        when=horn_lights,
        icon="mdi:bullhorn",
    ),
    # Each press wakes the car's modem and spends budget: a config-category button.
    button("refresh", "Refresh", Command.REFRESH, "PRESS", when=refresh, entity_category="config"),
)

BRIDGE: tuple[EntitySpec, ...] = (
    EntitySpec(
        "alerts",
        "event",
        "Alerts",
        source="bridge_event",
        availability="bridge",
        options={"event_types": [kind.value for kind in AlertKind], "icon": "mdi:shield-alert"},
    ),
    EntitySpec(
        "bridge_state",
        "binary_sensor",
        "Bridge",
        source="bridge_state",
        availability="none",
        options={
            "device_class": "connectivity",
            **DIAGNOSTIC,
            "payload_on": "online",
            "payload_off": "offline",
        },
    ),
)


def positional(kind: Literal["door", "window", "tyre"], position: str) -> EntitySpec:
    """One door, window or tyre entity."""
    label = position.replace("_", " ")
    if kind == "tyre":
        template = render(item_of("tyre_pressures_kpa", position))
        return EntitySpec(
            f"tyre_{position}",
            "sensor",
            f"Tyre pressure {label}",
            source="health",
            when=reads_health,
            options={**measurement("kPa", "pressure"), "value_template": template},
        )
    document = "doors" if kind == "door" else "windows"
    return binary(
        f"{kind}_{position}",
        f"{kind.capitalize()} {label}",
        kind,
        mapped(item_of(document, position), OPEN),
        when=reads_status,
    )


def vehicle_entities(
    doors: tuple[str, ...], windows: tuple[str, ...], tyres: tuple[str, ...]
) -> tuple[EntitySpec, ...]:
    """Every entity a vehicle with these door, window and tyre positions may offer."""
    return (
        *STATUS,
        *(positional("door", p) for p in doors),
        *(positional("window", p) for p in windows),
        *HEALTH,
        *(positional("tyre", p) for p in tyres),
        *LOCATION,
        *DIAGNOSTICS,
        *COMMANDS,
    )


def all_vehicle_keys() -> frozenset[str]:
    """Every key any vehicle can have (its unique_ids are `ownerlink_<vehicle>_<key>`)."""
    return frozenset(spec.key for spec in vehicle_entities(KNOWN_DOORS, KNOWN_WINDOWS, KNOWN_TYRES))
