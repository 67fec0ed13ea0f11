"""Discovery remembered across restarts: the next start clears exactly what was left.

A dict stands in for the broker's retained store, so each test can say what Home Assistant would
find after the second start: exactly the current discovery, nothing left behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from bridge.errors import StateError
from bridge.model import Scope
from bridge.mqtt.discovery import DiscoveryMode, VehicleDescription, removals
from bridge.mqtt.memory import RetainedDiscovery, from_shadow, shadow
from bridge.mqtt.outbox import Outbox
from bridge.mqtt.publisher import DiscoveryManager
from bridge.mqtt.topics import Publish, Topics
from bridge.store import Store
from tests.mqtt.helpers import ListSink, ev

TOPICS = Topics(base="ol", discovery_prefix="ha")
ALL = frozenset(Scope)


class DictMemory:
    """A DiscoveryMemory in a dict (what RetainedDiscovery keeps in SQLite)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.fail = False

    def load(self) -> dict[str, list[Publish]] | None:
        return {k: from_shadow(v) for k, v in self.rows.items()} if self.rows else None

    def save(self, key: str, messages: Sequence[Publish]) -> None:
        if self.fail:
            raise StateError("disk full")
        self.rows[key] = shadow(messages)


class AckingSink(ListSink):
    """A sink whose broker acknowledges each message at once, unless told to go quiet."""

    def __init__(self, *, acks: bool = True) -> None:
        super().__init__()
        self.acks = acks

    def publish_confirmed(self, message: Publish, on_confirmed: Callable[[], None]) -> None:
        self.publish(message)
        if self.acks:
            on_confirmed()


class Broker:
    """Retained messages as a broker keeps them: the last non-empty payload per topic."""

    def __init__(self) -> None:
        self.retained: dict[str, str] = {}

    def apply(self, messages: Iterable[Publish]) -> None:
        for message in messages:
            if message.payload:
                self.retained[message.topic] = str(message.payload)
            else:
                self.retained.pop(message.topic, None)

    def discovery(self) -> dict[str, str]:
        return {t: p for t, p in self.retained.items() if t.startswith("ha/")}


def run(
    broker: Broker,
    memory: DictMemory | None,
    vehicles: Sequence[VehicleDescription],
    *,
    scopes: frozenset[Scope] = ALL,
    mode: DiscoveryMode = "device",
    finish: bool = True,
    acks: bool = True,
    bridged_before: Sequence[str] = (),
) -> list[Publish]:
    """One start of the daemon's discovery: what it sent (and the broker now holds)."""
    sink = AckingSink(acks=acks)
    manager = DiscoveryManager(
        sink,
        TOPICS,
        mode=mode,
        ha_app="homeassistant",
        ha_scopes=scopes,
        stepup_scopes=frozenset(),
        memory=memory,
    )
    manager.start()
    for vehicle in vehicles:
        manager.add_vehicle(vehicle)
    if finish:
        manager.clear_forgotten(bridged_before=bridged_before)
    broker.apply(sink.messages)
    current = manager.current("\0bridge") + [m for v in vehicles for m in manager.current(v.slug)]
    # Whatever else was sent, the broker must hold exactly the current discovery.
    assert broker.discovery() == {m.topic: m.payload for m in current if m.payload}
    return sink.messages


def test_a_restart_with_nothing_changed_sends_no_clears() -> None:
    broker, memory = Broker(), DictMemory()
    first = run(broker, memory, [ev("car"), ev("van")])
    second = run(broker, memory, [ev("car"), ev("van")])
    assert sum(1 for m in first if not m.payload) > 100  # the first start clears the full range
    assert [m for m in second if not m.payload] == []
    assert len(second) == 3  # the bridge and two vehicle devices, once each


def test_a_first_start_clears_the_other_layout_before_any_device_payload() -> None:
    """Without a record the start clears every entity-layout topic a vehicle could have had.
    Sent after a device payload (or its removal stub, which also carries the current
    components), each clear reached a component Home Assistant had just bound to the device
    topic, and it logged a "conflicting MQTT discovery message" warning per entity (seen with
    Home Assistant 2025.4 on every `ownerlink demo`)."""
    sent = run(Broker(), None, [ev("car")])
    for node in (TOPICS.bridge_node_id, "ownerlink_car"):
        ours = [m for m in sent if f"/{node}/" in m.topic]
        device = min(i for i, m in enumerate(ours) if m.topic == f"ha/device/{node}/config")
        assert any(not m.payload for m in ours[:device])
        assert all(m.topic == f"ha/device/{node}/config" for m in ours[device:])


def test_a_vehicle_taken_out_of_the_config_is_cleared_on_the_next_start() -> None:
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev("car"), ev("van")])
    second = run(broker, memory, [ev("car")])
    assert Publish("ha/device/ownerlink_van/config", "", retain=True) in second
    assert "ha/device/ownerlink_van/config" not in broker.retained


def test_scopes_narrowed_while_stopped_remove_their_entities() -> None:
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev()], mode="entity")
    second = run(broker, memory, [ev()], scopes=ALL - {Scope.READ_LOCATION}, mode="entity")
    cleared = {m.topic for m in second if not m.payload}
    assert cleared == {
        "ha/device_tracker/ownerlink_car/location/config",
        "ha/sensor/ownerlink_car/speed/config",
        "ha/sensor/ownerlink_car/heading/config",
    }


def test_device_layout_components_dropped_while_stopped_get_their_stubs() -> None:
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev()])
    second = run(broker, memory, [ev()], scopes=ALL - {Scope.COMMAND_UNLOCK})
    device = [m for m in second if m.topic == "ha/device/ownerlink_car/config"]
    stub, final = (json.loads(m.payload)["cmps"] for m in device)
    assert stub["lock"] == {"p": "lock"} and "lock" not in final


@pytest.mark.parametrize(("before", "after"), [("device", "entity"), ("entity", "device")])
def test_switching_layout_while_stopped_clears_the_old_one(
    before: DiscoveryMode, after: DiscoveryMode
) -> None:
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev()], mode=before)
    second = run(broker, memory, [ev()], mode=after)
    assert any(not m.payload for m in second)


def test_moving_to_the_device_layout_migrates_the_entities_home_assistant_has() -> None:
    """Home Assistant's migration: `{"migrate_discovery": true}` on each old entity topic, then
    the old topics cleared, then the device payload. Cleared without the marker, the entities
    would be deleted (with the names, areas and history the owner gave them) and made again.
    Cleared after the device payload, each clear reaches an entity Home Assistant has bound to
    the device topic, and it logs a "conflicting MQTT discovery message" warning per entity
    (seen with Home Assistant 2025.4)."""
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev()], mode="entity")
    old = set(broker.discovery())
    second = run(broker, memory, [ev()])
    for node in (TOPICS.bridge_node_id, "ownerlink_car"):
        ours = [m for m in second if f"/{node}/" in m.topic]
        device = next(i for i, m in enumerate(ours) if m.topic == f"ha/device/{node}/config")
        assert device == len(ours) - 1  # the device payload comes last
        entity_topics = {t for t in old if f"/{node}/" in t}
        markers = [m for m in ours if m.payload and "migrate_discovery" in m.payload]
        clears = ours[len(markers) : device]
        assert ours[: len(markers)] == markers
        assert all(json.loads(m.payload) == {"migrate_discovery": True} for m in markers)
        assert [m.topic for m in clears] == [m.topic for m in markers]
        assert {m.topic for m in markers} == entity_topics
        assert all(not m.payload for m in clears)


def test_a_migration_held_through_a_broker_outage_keeps_its_order() -> None:
    """Sent while the broker is away (held in the outbox) and republished on the reconnect:
    markers, clears and device payload still reach the broker in that order, and the removal
    stubs of a withdrawn scope before the device payload that lacks them."""
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev()], mode="entity")
    second = run(broker, memory, [ev()])
    third = run(broker, memory, [ev()], scopes=ALL - {Scope.COMMAND_UNLOCK})
    device = "ha/device/ownerlink_car/config"
    republish = [m for m in third if m.topic == device and m.latest_only]
    outbox = Outbox(max_ordered=1000)
    for message in [*second, *third, *republish]:
        outbox.add(message)
    sent = [held.message for held in outbox.take(10_000)]
    ours = [m for m in sent if "/ownerlink_car/" in m.topic]
    markers = [i for i, m in enumerate(ours) if "migrate_discovery" in str(m.payload)]
    configs = [i for i, m in enumerate(ours) if m.topic == device]
    clears = [i for i, m in enumerate(ours) if not m.payload]
    assert markers and clears and max(markers) < min(clears) and max(clears) < configs[0]
    # Three, not four: the republished payload took the place of the one held.
    first, stub, final = (json.loads(ours[i].payload)["cmps"] for i in configs)
    assert "lock" in first and stub["lock"] == {"p": "lock"} and "lock" not in final
    fresh = Broker()
    fresh.apply(sent)
    assert fresh.discovery() == broker.discovery()


def test_without_a_record_nothing_is_migrated() -> None:
    """The full range cleared on a start without a record is mostly topics that never existed:
    telling Home Assistant to migrate each of them would only fill its log."""
    broker = Broker()
    run(broker, None, [ev()], mode="entity")
    second = run(broker, None, [ev()])
    assert not any("migrate_discovery" in str(m.payload) for m in second)


def test_a_migration_still_clears_the_entities_no_longer_offered() -> None:
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev()], mode="entity")
    second = run(broker, memory, [ev()], scopes=ALL - {Scope.READ_LOCATION})
    location = "ha/device_tracker/ownerlink_car/location/config"
    assert [m.payload for m in second if m.topic == location] == [""]


def test_a_first_start_that_did_not_finish_is_not_trusted() -> None:
    """A record written by a start that died before every vehicle was synced is incomplete: the
    next start clears the full range again."""
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev("car"), ev("van")], mode="entity", finish=False)
    second = run(broker, memory, [ev("car"), ev("van")])
    assert sum(1 for m in second if not m.payload) > 100
    third = run(broker, memory, [ev("car"), ev("van")])
    assert [m for m in third if not m.payload] == []  # the second start completed the record


def test_clears_the_broker_never_acknowledged_are_sent_again_next_time() -> None:
    """Until the broker confirms the clears, the record keeps what they clear: a crash (or a
    lost connection) before that cannot leave an entity behind for good."""
    broker, memory = Broker(), DictMemory()
    run(broker, memory, [ev("car"), ev("van")])
    quiet = run(broker, memory, [ev("car")], acks=False)
    assert Publish("ha/device/ownerlink_van/config", "", retain=True) in quiet
    broker.retained["ha/device/ownerlink_van/config"] = "{}"  # as if that clear never arrived
    again = run(broker, memory, [ev("car")])
    assert Publish("ha/device/ownerlink_van/config", "", retain=True) in again
    assert "ha/device/ownerlink_van/config" not in broker.retained
    last = run(broker, memory, [ev("car")])
    assert [m for m in last if not m.payload] == []


def test_an_upgrade_from_before_the_record_clears_a_vehicle_taken_out_of_the_config() -> None:
    """A version that wrote nothing down left a van's entities retained; the first start after
    the upgrade, without the van in the config, clears them, as it knows the van was polled."""
    broker = Broker()
    run(broker, None, [ev("car"), ev("van")], mode="entity")  # the older version's start
    memory = DictMemory()
    upgraded = run(broker, memory, [ev("car")], bridged_before=["car", "van"])
    assert Publish("ha/device/ownerlink_van/config", "", retain=True) in upgraded
    assert not [t for t in broker.retained if "ownerlink_van" in t]
    again = run(broker, memory, [ev("car")], bridged_before=["car", "van"])
    assert [m for m in again if not m.payload] == []  # once recorded, the database's list is moot


def test_without_memory_every_start_clears_the_full_range() -> None:
    broker = Broker()
    run(broker, None, [ev()])
    second = run(broker, None, [ev()])
    assert sum(1 for m in second if not m.payload) > 50


def test_a_memory_that_cannot_be_written_does_not_stop_discovery() -> None:
    broker, memory = Broker(), DictMemory()
    memory.fail = True
    sent = run(broker, memory, [ev()])
    assert any(m.topic == "ha/device/ownerlink_car/config" and m.payload for m in sent)
    assert memory.rows == {}  # so the next start clears the full range, as without memory


# -- the stored form -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["device", "entity"])
def test_the_shadow_clears_what_the_real_messages_would(mode: DiscoveryMode) -> None:
    """removals() from the remembered stand-ins equals removals() from what was really sent."""
    sink = ListSink()
    manager = DiscoveryManager(
        sink, TOPICS, mode=mode, ha_app="ha", ha_scopes=ALL, stepup_scopes=frozenset()
    )
    manager.add_vehicle(ev())
    old = manager.current("car")
    manager.set_ha_scopes(frozenset({Scope.READ_STATUS}))
    new = manager.current("car")
    assert removals(from_shadow(shadow(old)), new) == removals(old, new)
    assert removals(from_shadow(shadow(old)), []) == removals(old, [])


@pytest.mark.parametrize("text", ["{}", '[["t"]]', "[[1, null]]", '[["t", 3]]', "not json"])
def test_a_stored_form_we_did_not_write_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        from_shadow(text)


def test_sqlite_memory_round_trip_and_a_damaged_row(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        memory = RetainedDiscovery(store)
        assert memory.load() is None
        device = Publish("ha/device/ownerlink_car/config", '{"cmps":{"lock":{"p":"lock"}}}')
        memory.save("car", [device, Publish("ha/x/config", "", retain=True)])
        memory.save("\0bridge", [])
        loaded = memory.load()
        assert loaded is not None and set(loaded) == {"car", "\0bridge"}
        assert [m.topic for m in loaded["car"]] == [device.topic]  # a clear leaves nothing
        with store.transaction() as conn:
            conn.execute("UPDATE discovery_retained SET messages = 'garbage' WHERE key = 'car'")
        assert memory.load() is None  # untrusted: the next start clears the full range
    finally:
        store.close()


def test_a_topic_given_twice_keeps_every_component_it_may_hold() -> None:
    old = Publish("ha/device/d/config", '{"cmps":{"lock":{"p":"lock"},"range":{"p":"sensor"}}}')
    new = Publish("ha/device/d/config", '{"cmps":{"range":{"p":"sensor"},"horn":{"p":"button"}}}')
    (kept,) = from_shadow(shadow([old, new]))
    assert json.loads(kept.payload)["cmps"] == {
        "lock": {"p": "lock"},
        "range": {"p": "sensor"},
        "horn": {"p": "button"},
    }
