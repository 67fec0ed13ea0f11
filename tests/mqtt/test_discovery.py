"""Home Assistant discovery as data: schemas per platform, ids, gating by scope and provider."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.commands.parse import ParsedCommand, parse_command
from bridge.events import AlertKind
from bridge.model import Operation, Powertrain, Scope, VehicleInfo
from bridge.mqtt.catalog import KNOWN_DOORS, all_vehicle_keys
from bridge.mqtt.discovery import (
    DiscoveryMode,
    VehicleDescription,
    build_bridge_discovery,
    build_vehicle_discovery,
    removals,
    vehicle_discovery_universe,
)
from bridge.mqtt.topics import Publish, Topics
from tests.mqtt.helpers import VIN, ev, state

TOPICS = Topics(base="ownerlink", discovery_prefix="homeassistant")
ALL = frozenset(Scope)
STEPUP = frozenset({Scope.COMMAND_UNLOCK, Scope.COMMAND_REMOTE_START})

# -- the schema table: what each platform requires, and the type of every key we may send -------

Types = type | tuple[type, ...]
COMMON: dict[str, Types] = {
    "unique_id": str,
    "name": str,
    "object_id": str,
    "default_entity_id": str,
    "qos": int,
}
REQUIRED: dict[str, dict[str, Types]] = {
    "sensor": {"state_topic": str, "value_template": str},
    "binary_sensor": {"state_topic": str},
    "lock": {
        "command_topic": str,
        "state_topic": str,
        "value_template": str,
        "payload_lock": str,
        "payload_unlock": str,
        "state_locked": str,
        "state_unlocked": str,
        "optimistic": bool,
        "retain": bool,
    },
    "switch": {
        "command_topic": str,
        "state_topic": str,
        "value_template": str,
        "payload_on": str,
        "payload_off": str,
        "state_on": str,
        "state_off": str,
        "optimistic": bool,
        "retain": bool,
    },
    "button": {"command_topic": str, "payload_press": str, "retain": bool},
    "device_tracker": {"json_attributes_topic": str, "source_type": str},
    "event": {"state_topic": str, "event_types": list},
}
OPTIONAL: dict[str, Types] = {
    "availability": list,
    "availability_mode": str,
    "device_class": str,
    "state_class": str,
    "unit_of_measurement": str,
    "value_template": str,
    "entity_category": str,
    "icon": str,
    "options": list,
    "payload_on": str,
    "payload_off": str,
    "code_format": str,
    "command_template": str,
    "json_attributes_topic": str,
    "json_attributes_template": str,
}
DEVICE_CLASSES = {
    "sensor": {
        "battery",
        "distance",
        "duration",
        "enum",
        "pressure",
        "speed",
        "timestamp",
        "voltage",
    },
    "binary_sensor": {
        "battery_charging",
        "connectivity",
        "door",
        "lock",
        "opening",
        "plug",
        "problem",
        "running",
        "window",
    },
}
# Home Assistant rejects a sensor whose unit does not belong to its device class.
UNITS = {
    "battery": "%",
    "distance": "km",
    "duration": "min",
    "pressure": "kPa",
    "speed": "km/h",
    "voltage": "V",
}
ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def check_component(platform: str, body: dict[str, Any]) -> None:
    """Assert one entity config against the schema table above."""
    required = {**COMMON, **REQUIRED[platform]}
    for key, kind in required.items():
        assert key in body, f"{platform} {body.get('unique_id')}: missing {key}"
        assert isinstance(body[key], kind), f"{platform}.{key}: {body[key]!r}"
    for key, value in body.items():
        expected = required.get(key) or OPTIONAL.get(key)
        assert expected is not None, f"{platform} {body['unique_id']}: unexpected key {key}"
        assert isinstance(value, expected), f"{platform}.{key}: {value!r}"
    check_values(platform, body)


def check_values(platform: str, body: dict[str, Any]) -> None:
    domain, _, object_id = body["default_entity_id"].partition(".")
    assert domain == platform and object_id == body["object_id"]
    assert body.get("state_class") in {None, "measurement", "total_increasing"}
    assert body.get("entity_category") in {None, "diagnostic", "config"}
    assert body.get("availability_mode") in {None, "all"}
    device_class = body.get("device_class")
    if device_class is not None:
        assert device_class in DEVICE_CLASSES[platform]
    if device_class in UNITS:
        assert body["unit_of_measurement"] == UNITS[device_class]
    if device_class == "enum":
        assert body["options"] and "unit_of_measurement" not in body
    for item in body.get("availability", []):
        assert set(item) == {"topic", "payload_available", "payload_not_available"}
    for key in ("state_topic", "command_topic", "json_attributes_topic"):
        if key in body:
            assert "+" not in body[key] and "#" not in body[key]


def components(messages: list[Publish]) -> dict[str, tuple[str, dict[str, Any]]]:
    """key -> (platform, body) from either layout."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for message in messages:
        doc = json.loads(message.payload)
        if "cmps" in doc:
            for key, body in doc["cmps"].items():
                platform = body.pop("p")
                out[key] = (platform, body)
        else:
            platform, _, key = message.topic.split("/")[1], None, message.topic.split("/")[3]
            body = {k: v for k, v in doc.items() if k not in {"device", "origin"}}
            out[key] = (platform, body)
    return out


def build(
    vehicle: VehicleDescription | None = None,
    *,
    scopes: frozenset[Scope] = ALL,
    mode: DiscoveryMode = "device",
    stepup: frozenset[Scope] = frozenset(),
    topics: Topics = TOPICS,
) -> list[Publish]:
    return build_vehicle_discovery(
        vehicle=vehicle or ev(),
        scopes=scopes,
        ha_app="homeassistant",
        topics=topics,
        mode=mode,
        stepup_scopes=stepup,
    )


def keys(messages: list[Publish]) -> set[str]:
    return set(components(messages))


# -- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("powertrain", list(Powertrain))
@pytest.mark.parametrize("mode", ["device", "entity"])
@pytest.mark.parametrize("stepup", [frozenset(), STEPUP])
def test_every_component_matches_its_platform_schema(
    powertrain: Powertrain, mode: DiscoveryMode, stepup: frozenset[Scope]
) -> None:
    """Every entity config carries its platform's required keys with the right value types."""
    messages = build(ev(powertrain=powertrain), mode=mode, stepup=stepup)
    found = components(messages)
    assert found
    for platform, body in found.values():
        check_component(platform, body)


@pytest.mark.parametrize("mode", ["device", "entity"])
def test_bridge_components_match_their_platform_schema(mode: DiscoveryMode) -> None:
    """The bridge device's entities are schema-valid too."""
    found = components(build_bridge_discovery(topics=TOPICS, mode=mode))
    assert set(found) == {"alerts", "bridge_state"}
    for platform, body in found.values():
        check_component(platform, body)


def test_device_layout_is_one_retained_payload_with_dev_origin_and_components() -> None:
    """Device discovery: `<prefix>/device/ownerlink_<vehicle>/config` with dev, o and cmps."""
    [message] = build(mode="device")
    assert message.topic == "homeassistant/device/ownerlink_car/config"
    assert message.retain
    doc = json.loads(message.payload)
    assert set(doc) == {"dev", "o", "cmps"}
    assert doc["o"]["name"] == "Ownerlink"
    assert doc["dev"]["identifiers"] == ["ownerlink_car"]
    assert all(body["p"] for body in doc["cmps"].values())


def test_entity_layout_is_one_retained_payload_per_entity() -> None:
    """Per-entity discovery: `<prefix>/<platform>/ownerlink_<vehicle>/<key>/config`, each whole."""
    messages = build(mode="entity")
    assert len(messages) == len(keys(build(mode="device")))
    for message in messages:
        prefix, platform, node, key, config = message.topic.split("/")
        assert (prefix, node, config) == ("homeassistant", "ownerlink_car", "config")
        assert ID.match(key)
        doc = json.loads(message.payload)
        assert message.retain and doc["device"]["identifiers"] == ["ownerlink_car"]
        assert doc["origin"]["name"] == "Ownerlink"
        assert "p" not in doc and "platform" not in doc
        assert platform in REQUIRED


# -- identifiers -------------------------------------------------------------------------------


def test_unique_ids_are_ownerlink_vehicle_key() -> None:
    """unique_id is `ownerlink_<vehicle>_<key>`; entity ids follow the vehicle slug."""
    for key, (platform, body) in components(build(ev("van-2"))).items():
        assert body["unique_id"] == f"ownerlink_van-2_{key}"
        assert body["default_entity_id"] == f"{platform}.van_2_{key}"


def test_two_vehicles_share_no_unique_id_identifier_or_topic() -> None:
    """Two vehicles (even with slugs that prefix each other) never collide."""
    one, two = build(ev("car")), build(ev("car_door"))
    ids_one = {body["unique_id"] for _, body in components(one).values()}
    ids_two = {body["unique_id"] for _, body in components(two).values()}
    assert not ids_one & ids_two
    assert {m.topic for m in one}.isdisjoint({m.topic for m in two})
    devices = [json.loads(m.payload)["dev"]["identifiers"][0] for m in (*one, *two)]
    assert len(set(devices)) == 2


def test_no_entity_key_ends_with_another_key() -> None:
    """`<vehicle>_<key>` can only collide if one key ends in `_<other key>`; none does."""
    every = all_vehicle_keys()
    clashes = [(a, b) for a in every for b in every if a.endswith(f"_{b}")]
    assert clashes == []
    assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in every)


def test_bridge_ids_can_never_equal_a_vehicle_id() -> None:
    """The bridge device id has a hyphen where every vehicle id has `ownerlink_`."""
    found = components(build_bridge_discovery(topics=TOPICS, mode="device"))
    for _, body in found.values():
        assert body["unique_id"].startswith(f"{TOPICS.bridge_node_id}_")
        assert not body["unique_id"].startswith("ownerlink_")


@pytest.mark.parametrize(
    ("base", "node"),
    [
        ("ownerlink", "ownerlink-bridge"),
        ("ownerlink-demo", "ownerlink-bridge-ownerlink-demo"),
        ("home/car", "ownerlink-bridge-home_1car"),
        ("home_car", "ownerlink-bridge-home_0car"),
    ],
)
def test_the_bridge_device_is_one_per_base_topic(base: str, node: str) -> None:
    """The default base keeps the id HA has always known; another base (the demo's) gives
    another device, so the demo beside a real bridge on one broker does not merge into it.
    Each vehicle hangs off its own bridge."""
    topics = Topics(base=base, discovery_prefix="homeassistant")
    [bridge] = build_bridge_discovery(topics=topics, mode="device")
    assert bridge.topic == f"homeassistant/device/{node}/config"
    assert json.loads(bridge.payload)["dev"]["identifiers"] == [node]
    [car] = [m for m in build(topics=topics) if m.topic.startswith("homeassistant/device/")]
    assert json.loads(car.payload)["dev"]["via_device"] == node


@pytest.mark.parametrize(
    ("base", "name", "prefix"),
    [
        ("ownerlink", "Ownerlink", "ownerlink"),
        ("ownerlink-demo", "Ownerlink (ownerlink-demo)", "ownerlink_demo"),
        ("home/car", "Ownerlink (home/car)", "ownerlink_home_car"),
    ],
)
def test_a_second_bridge_has_its_own_name_and_entity_ids(base: str, name: str, prefix: str) -> None:
    """Two bridges on one broker (the demo beside a real one) were two devices both named
    "Ownerlink" offering the same entity ids, and Home Assistant (2025.4) named the second
    one's `event.ownerlink_alerts_2`. The default base keeps the name and ids it always had."""
    topics = Topics(base=base, discovery_prefix="homeassistant")
    [bridge] = build_bridge_discovery(topics=topics, mode="device")
    payload = json.loads(bridge.payload)
    assert payload["dev"]["name"] == name
    assert {c["default_entity_id"] for c in payload["cmps"].values()} == {
        f"event.{prefix}_alerts",
        f"binary_sensor.{prefix}_bridge_state",
    }


@given(st.from_regex(r"[A-Za-z0-9_-]{1,4}(/[A-Za-z0-9_-]{1,4}){0,2}", fullmatch=True))
def test_no_two_base_topics_share_a_bridge_device(base: str) -> None:
    """The bridge's device id is one-to-one with the base topic: `/` and `_` no longer fold
    together, so two bridges on one broker are always two devices."""
    node = Topics(base=base).bridge_node_id
    assert re.fullmatch(r"[A-Za-z0-9_-]+", node)
    if base != "ownerlink":  # the default keeps the id it always had
        # The id decodes back to the base, so no other base can give it.
        escaped = node.removeprefix("ownerlink-bridge-")
        assert re.sub(r"_(.)", lambda m: {"0": "_", "1": "/"}[m[1]], escaped) == base


def test_device_identifiers_come_from_the_slug_never_the_vin() -> None:
    """A provider id that is a VIN appears in no topic or payload; the slug is the identifier."""
    info = VehicleInfo(
        vehicle_id=VIN,
        make="F",
        model="Kuga",
        year=2022,
        nickname="Family",
        powertrain=Powertrain.HYBRID,
    )
    vehicle = VehicleDescription.from_info("family", info, operations=frozenset(Operation))
    messages = [
        *build(vehicle, mode="device"),
        *build(vehicle, mode="entity"),
        *vehicle_discovery_universe(vehicle=vehicle, ha_app="ha", topics=TOPICS),
    ]
    for message in messages:
        assert VIN not in message.topic and VIN not in str(message.payload)
    dev = json.loads(build(vehicle)[0].payload)["dev"]
    assert dev["identifiers"] == ["ownerlink_family"]
    assert dev["manufacturer"] == "Ford" and dev["model"] == "2022 Kuga"
    assert "serial_number" not in dev


def test_object_id_and_default_entity_id_are_both_sent() -> None:
    """Both ids are present, for Home Assistant versions before and after the deprecation."""
    _, body = components(build())["range"]
    assert body["object_id"] == "car_range"
    assert body["default_entity_id"] == "sensor.car_range"


# -- availability ------------------------------------------------------------------------------


def test_vehicle_entities_need_the_bridge_and_the_vehicle_online() -> None:
    """Availability lists bridge state and vehicle availability with mode all."""
    _, body = components(build())["range"]
    assert body["availability_mode"] == "all"
    assert [a["topic"] for a in body["availability"]] == [
        "ownerlink/bridge/state",
        "ownerlink/car/availability",
    ]


def test_budget_and_connection_entities_only_need_the_bridge() -> None:
    """Diagnostics stay available while the car's API is down (that is when they matter)."""
    found = components(build())
    for key in ("connection", "calls_used_today", "calls_left_today", "next_poll", "polling_mode"):
        _, body = found[key]
        assert [a["topic"] for a in body["availability"]] == ["ownerlink/bridge/state"]
        assert body["entity_category"] == "diagnostic"
    assert found["calls_used_today"][1]["state_topic"] == "ownerlink/car/budget"
    assert found["connection"][1]["state_topic"] == "ownerlink/car/availability"


# -- entities per field ------------------------------------------------------------------------


def test_every_state_field_has_an_entity() -> None:
    """Status, health and location fields each have an entity with a proper class and unit."""
    found = components(build(ev(powertrain=Powertrain.UNKNOWN)))
    expected = {
        "fuel_level": ("sensor", None, "%"),
        "battery_level": ("sensor", "battery", "%"),
        "range": ("sensor", "distance", "km"),
        "odometer": ("sensor", "distance", "km"),
        "tyre_front_left": ("sensor", "pressure", "kPa"),
        "oil_life": ("sensor", None, "%"),
        "battery_12v": ("sensor", "battery", "%"),
        "battery_12v_voltage": ("sensor", "voltage", "V"),
        "time_to_full": ("sensor", "duration", "min"),
        "ignition": ("sensor", "enum", None),
        "charging_state": ("sensor", "enum", None),
        "last_update": ("sensor", "timestamp", None),
        "alarm": ("sensor", None, None),
        "charging": ("binary_sensor", "battery_charging", None),
        "plug": ("binary_sensor", "plug", None),
        "door_front_left": ("binary_sensor", "door", None),
        "window_front_left": ("binary_sensor", "window", None),
        "hood": ("binary_sensor", "opening", None),
        "engine": ("binary_sensor", "running", None),
        "tyre_pressure_warning": ("binary_sensor", "problem", None),
        "speed": ("sensor", "speed", "km/h"),
        "location": ("device_tracker", None, None),
    }
    for key, (platform, device_class, unit) in expected.items():
        got_platform, body = found[key]
        assert (got_platform, body.get("device_class"), body.get("unit_of_measurement")) == (
            platform,
            device_class,
            unit,
        ), key
    assert found["odometer"][1]["state_class"] == "total_increasing"
    assert found["range"][1]["state_class"] == "measurement"


def test_heading_keeps_no_long_term_statistics() -> None:
    """Home Assistant averages a `measurement` arithmetically: headings of 350° and 10° would
    make a 180° hourly mean, a car driving north shown driving south. So no state_class."""
    _, heading = components(build())["heading"]
    assert heading["unit_of_measurement"] == "°"
    assert "state_class" not in heading


def test_powertrain_decides_fuel_or_battery_entities() -> None:
    """A combustion car has no charging entities; an EV has no fuel level or oil life."""
    ice, electric = keys(build(ev(powertrain=Powertrain.ICE))), keys(build(ev()))
    assert {"fuel_level", "oil_life"} <= ice and not {"charging", "plug", "charge"} & ice
    assert {"battery_level", "charging", "plug", "charge"} <= electric
    assert not {"fuel_level", "oil_life"} & electric


def test_door_window_and_tyre_entities_follow_the_reported_positions() -> None:
    """Positions come from the car's state; unknown position names are never offered."""
    reading = state(doors={"rear_left": "open", "rocket_hatch": "open"})
    vehicle = ev().with_positions_from(reading)
    assert vehicle.doors == ("rear_left",)
    assert vehicle.tyres == ("front_left",)
    found = keys(build(vehicle))
    assert "door_rear_left" in found and "door_front_right" not in found
    assert set(KNOWN_DOORS) >= {k.removeprefix("door_") for k in found if k.startswith("door_")}


def test_event_entity_offers_every_alert_kind() -> None:
    """The bridge's event entity lists each AlertKind and reads `<base>/bridge/event`."""
    platform, body = components(build_bridge_discovery(topics=TOPICS, mode="device"))["alerts"]
    assert platform == "event"
    assert body["event_types"] == [kind.value for kind in AlertKind]
    assert body["state_topic"] == "ownerlink/bridge/event"


# -- gating ------------------------------------------------------------------------------------


def test_device_tracker_only_with_read_location() -> None:
    """No tracker, speed or heading without read:location; the tracker reads the location topic."""
    without = keys(build(scopes=ALL - {Scope.READ_LOCATION}))
    assert not {"location", "speed", "heading"} & without
    platform, body = components(build())["location"]
    assert platform == "device_tracker"
    assert body["json_attributes_topic"] == "ownerlink/car/location"
    assert body["source_type"] == "gps"


def test_read_scopes_gate_their_entities() -> None:
    """Without read:status or read:health their entities are absent; diagnostics remain."""
    none = keys(build(scopes=frozenset()))
    assert none == {
        "connection",
        "calls_used_today",
        "calls_left_today",
        "next_poll",
        "polling_mode",
    }
    health_only = keys(build(scopes=frozenset({Scope.READ_HEALTH})))
    assert "tyre_front_left" in health_only and "range" not in health_only


COMMAND_CASES = [
    ("lock", {Scope.COMMAND_LOCK, Scope.COMMAND_UNLOCK}, {Operation.LOCK, Operation.UNLOCK}),
    ("remote_start", {Scope.COMMAND_REMOTE_START}, {Operation.START_ENGINE, Operation.STOP_ENGINE}),
    ("charge", {Scope.COMMAND_CHARGE}, {Operation.START_CHARGE, Operation.STOP_CHARGE}),
    ("horn_lights", {Scope.COMMAND_HORN_LIGHTS}, {Operation.HORN_LIGHTS}),
    ("refresh", {Scope.COMMAND_REFRESH}, {Operation.REFRESH}),
]


@pytest.mark.parametrize(("key", "scopes", "operations"), COMMAND_CASES)
def test_command_entity_needs_scope_and_provider_support(
    key: str, scopes: set[Scope], operations: set[Operation]
) -> None:
    """A command entity exists only if the app holds the scope AND the provider can do it."""
    read = frozenset({Scope.READ_STATUS})
    both = build(ev(operations=frozenset(operations)), scopes=read | scopes)
    no_scope = build(ev(operations=frozenset(operations)), scopes=read)
    no_support = build(ev(operations=frozenset(Operation) - operations), scopes=read | scopes)
    assert key in keys(both)
    assert key not in keys(no_scope)
    assert key not in keys(no_support)
    _, body = components(both)[key]
    assert body["command_topic"] == f"ownerlink/app/homeassistant/car/cmd/{body_command(key)}"
    assert TOPICS.parse_command(body["command_topic"]) is not None


def body_command(key: str) -> str:
    return {
        "lock": "lock",
        "remote_start": "engine",
        "charge": "charge",
        "horn_lights": "horn_lights",
        "refresh": "refresh",
    }[key]


def test_read_only_provider_offers_no_command_entities() -> None:
    """A FordConnect Query vehicle (no operations) gets sensors only, even with command scopes."""
    found = components(build(ev(operations=frozenset())))
    assert not [k for k, (_, body) in found.items() if "command_topic" in body]
    assert found["lock_status"][0] == "binary_sensor"


def test_command_states_come_from_the_confirmed_status() -> None:
    """Lock and switches read the status document, are not optimistic, never send retained."""
    found = components(build())
    for key in ("lock", "remote_start", "charge"):
        _, body = found[key]
        assert body["state_topic"] == "ownerlink/car/status"
        assert body["optimistic"] is False
        assert body["retain"] is False
    lock = found["lock"][1]
    assert (lock["payload_lock"], lock["payload_unlock"]) == ("LOCK", "UNLOCK")


def test_unlock_with_step_up_prompts_for_a_six_digit_code() -> None:
    """With step-up on unlock, the lock has code_format and sends JSON with the code. Home
    Assistant checks code_format when locking too: there the code may be left out."""
    jinja2 = pytest.importorskip("jinja2")
    _, plain = components(build())["lock"]
    _, coded = components(build(stepup=STEPUP))["lock"]
    assert "code_format" not in plain and "command_template" not in plain
    assert re.fullmatch(coded["code_format"], "123456")
    assert re.fullmatch(coded["code_format"], "")  # lock without typing a code
    assert not re.fullmatch(coded["code_format"], "12345")
    template = jinja2.Environment(autoescape=False).from_string(coded["command_template"])
    # Home Assistant renders `code` as None when none was typed: that must read as no code.
    for code, sent in (("123456", "123456"), (None, None)):
        payload = template.render(value="UNLOCK", code=code).encode()
        parsed = parse_command(
            TOPICS.parse_command(coded["command_topic"]), payload, retain=False, max_bytes=1024
        )
        assert isinstance(parsed, ParsedCommand) and parsed.code == sent, code


def test_a_lock_that_needs_a_code_to_lock_too_insists_on_one() -> None:
    """With step-up on command:lock as well, the code is no longer optional."""
    _, coded = components(build(stepup=STEPUP | {Scope.COMMAND_LOCK}))["lock"]
    assert re.fullmatch(coded["code_format"], "123456")
    assert not re.fullmatch(coded["code_format"], "")


def test_remote_start_with_step_up_offers_only_stopping() -> None:
    """A switch cannot carry a code: with step-up on remote start only a stop button is offered."""
    found = components(build(stepup=STEPUP))
    assert "remote_start" not in found
    platform, body = found["engine_stop"]
    assert (platform, body["payload_press"]) == ("button", "STOP")


def test_no_command_entity_is_offered_that_could_only_ever_be_refused_for_want_of_a_code() -> None:
    """An owner may ask for step-up on any command scope. A switch or a button cannot carry a
    code, so such a command gets no switch or button (Home Assistant users send it from a script
    that asks for the code): a charge switch offered then was refused every time it was used."""
    found = components(
        build(
            stepup=STEPUP | {Scope.COMMAND_CHARGE, Scope.COMMAND_HORN_LIGHTS, Scope.COMMAND_REFRESH}
        )
    )
    assert {"charge", "horn_lights", "refresh", "remote_start"}.isdisjoint(found)
    assert "charge" in components(build(stepup=STEPUP))  # without step-up on charging: offered


def test_lock_scope_without_unlock_is_a_lock_button() -> None:
    """Only command:lock granted: a button that locks, and the lock state as a binary sensor."""
    found = components(build(scopes=frozenset({Scope.READ_STATUS, Scope.COMMAND_LOCK})))
    assert "lock" not in found
    assert found["lock_button"][1]["payload_press"] == "LOCK"
    assert found["lock_status"][1]["device_class"] == "lock"


# -- removals ----------------------------------------------------------------------------------


def test_device_layout_removal_stubs_the_component_first() -> None:
    """A withdrawn entity is published as `{"p": platform}` before the payload without it."""
    before = build()
    after = build(scopes=ALL - {Scope.READ_LOCATION})
    [stub] = removals(before, after)
    cmps = json.loads(stub.payload)["cmps"]
    assert cmps["location"] == {"p": "device_tracker"}
    assert cmps["speed"] == {"p": "sensor"}
    assert "range" in cmps and cmps["range"]["unique_id"] == "ownerlink_car_range"
    assert stub.topic == after[0].topic and stub.retain
    assert "location" not in json.loads(after[0].payload)["cmps"]


def test_entity_layout_removal_clears_the_config_topic() -> None:
    """A withdrawn entity's config topic gets an empty retained payload."""
    before = build(mode="entity")
    after = build(mode="entity", scopes=ALL - {Scope.COMMAND_HORN_LIGHTS})
    assert removals(before, after) == [
        Publish("homeassistant/button/ownerlink_car/horn_lights/config", "", retain=True)
    ]


def test_unchanged_discovery_needs_no_removals() -> None:
    """Nothing to remove when nothing changed."""
    assert removals(build(), build()) == []


def test_removing_a_vehicle_clears_its_device() -> None:
    """Against an empty current set, the device topic is cleared."""
    assert removals(build(), []) == [
        Publish("homeassistant/device/ownerlink_car/config", "", retain=True)
    ]


def test_universe_covers_both_layouts_and_every_entity() -> None:
    """The start-up sweep knows every topic and component a vehicle could have had."""
    universe = vehicle_discovery_universe(vehicle=ev(), ha_app="homeassistant", topics=TOPICS)
    topics = {m.topic for m in universe}
    assert "homeassistant/device/ownerlink_car/config" in topics
    assert "homeassistant/lock/ownerlink_car/lock/config" in topics
    assert "homeassistant/button/ownerlink_car/lock_button/config" in topics
    assert {m.topic for m in build(mode="entity", stepup=STEPUP)} <= topics


# -- templates ---------------------------------------------------------------------------------


def test_templates_render_states_from_published_documents() -> None:
    """Value templates turn our documents into Home Assistant states; unknown becomes None."""
    jinja2 = pytest.importorskip("jinja2")
    from bridge.mqtt.publisher import health_document, status_document

    env = jinja2.Environment(autoescape=False)
    reading = state(doors={"front_left": "open", "front_right": "closed"})
    documents = {
        "ownerlink/car/status": status_document(reading),
        "ownerlink/car/health": health_document(reading),
    }
    expected = {
        "lock": "LOCKED",
        "doors": "ON",
        "door_front_left": "ON",
        "door_front_right": "OFF",
        "door_rear_left": "None",
        "windows": "OFF",
        "plug": "ON",
        "charging": "OFF",
        "charge": "OFF",
        "remote_start": "OFF",
        "engine": "OFF",
        "ignition": "off",
        "charging_state": "plugged",
        "battery_level": "81.0",
        "range": "320.5",
        "tyre_front_left": "240.0",
        "tyre_rear_left": "None",
        "hood": "OFF",
        "last_update": "2025-06-01T08:30:00+00:00",
        "time_to_full": "None",
        "health_alerts": "0",
    }
    found = components(build(ev(powertrain=Powertrain.EV)))
    for key, value in expected.items():
        _, body = found[key]
        template = env.from_string(body["value_template"])
        assert template.render(value_json=documents[body["state_topic"]]) == value, key


def test_every_template_renders_an_empty_document_as_unknown() -> None:
    """A document without the field never raises; sensors show unknown (None). Nor does a
    payload that is not a JSON object: Home Assistant then leaves `value_json` undefined (the
    empty message that clears a state topic), and StrictUndefined fails on any use of it."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    found = components(build(ev(powertrain=Powertrain.UNKNOWN)))
    for key, (_, body) in found.items():
        for name in ("value_template", "json_attributes_template"):
            if name not in body:
                continue
            template = env.from_string(body[name])
            for document in ({}, [], None):
                assert template.render(value_json=document) in {"None", "0", '{"alerts": []}'}, key
            assert template.render() in {"None", "0", '{"alerts": []}'}, key
