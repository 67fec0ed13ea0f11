"""The diffing state publisher and the discovery manager, driven with a list-backed sink."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.access.alerts import event_messages
from bridge.events import Alert, AlertKind
from bridge.model import OpenState, Scope
from bridge.mqtt.discovery import DiscoveryMode, removals
from bridge.mqtt.publisher import DiscoveryManager, StatePublisher
from bridge.mqtt.topics import Publish, Topics
from tests.mqtt.helpers import UPLOADED, ListSink, ev, state

TOPICS = Topics(base="ol", discovery_prefix="ha")
ALL = frozenset(Scope)


class Permission:
    """A switchable read:location grant."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    def __call__(self) -> bool:
        return self.allowed


def publisher(sink: ListSink, *, location: bool = True, **kwargs: Any) -> StatePublisher:
    return StatePublisher(sink, TOPICS, location_allowed=Permission(location), **kwargs)


def manager(
    sink: ListSink,
    *,
    scopes: frozenset[Scope] = ALL,
    mode: DiscoveryMode = "device",
    ha_app: str | None = "homeassistant",
) -> DiscoveryManager:
    return DiscoveryManager(
        sink,
        TOPICS,
        mode=mode,
        ha_app=ha_app,
        ha_scopes=scopes,
        stepup_scopes=frozenset(),
    )


# -- states ------------------------------------------------------------------------------------


def test_first_update_publishes_status_health_and_location_retained() -> None:
    """Each document goes to `<base>/<vehicle>/<kind>`, retained, with the car's upload time."""
    sink = ListSink()
    publisher(sink).update("car", state())
    assert sink.topics() == ["ol/car/status", "ol/car/health", "ol/car/location"]
    assert all(m.retain for m in sink.messages)
    for message in sink.messages:
        assert json.loads(message.payload)["updated_at"] == UPLOADED.isoformat()


def test_identical_states_are_not_republished() -> None:
    """The same reading twice publishes nothing the second time."""
    sink = ListSink()
    states = publisher(sink)
    states.update("car", state())
    sink.take()
    states.update("car", state())
    assert sink.messages == []


def test_only_the_changed_document_is_republished() -> None:
    """A door opening changes the status document only."""
    sink = ListSink()
    states = publisher(sink)
    states.update("car", state())
    sink.take()
    states.update("car", state(doors={"front_left": OpenState.OPEN}))
    [message] = sink.messages
    assert message.topic == "ol/car/status"
    assert json.loads(message.payload)["doors"] == {"front_left": "open"}


def test_a_new_upload_time_alone_is_a_change() -> None:
    """The car uploading again (same values) refreshes every document's `updated_at`."""
    sink = ListSink()
    states = publisher(sink)
    states.update("car", state())
    sink.take()
    later = state()
    later = type(later)(
        vehicle_id=later.vehicle_id,
        updated_at=datetime(2025, 6, 2, tzinfo=UTC),
        status=later.status,
        health=later.health,
        location=later.location,
    )
    states.update("car", later)
    assert sink.topics() == ["ol/car/status", "ol/car/health", "ol/car/location"]


def test_location_document_is_shaped_for_a_device_tracker() -> None:
    """The location has latitude, longitude and gps_accuracy for Home Assistant."""
    sink = ListSink()
    publisher(sink).update("car", state())
    doc = json.loads(sink.messages[-1].payload)
    assert (doc["latitude"], doc["longitude"]) == (51.5, -0.12)
    assert isinstance(doc["gps_accuracy"], int) and doc["gps_accuracy"] > 0


def test_no_location_without_read_location_and_its_retained_copy_is_cleared() -> None:
    """Without permission the location is never sent; an empty retained payload clears it."""
    sink = ListSink()
    states = publisher(sink, location=False)
    states.update("car", state())
    assert Publish("ol/car/location", "", retain=True) in sink.messages
    assert not [m for m in sink.messages if m.topic == "ol/car/location" and m.payload]
    sink.take()
    states.update("car", state(range_km=1.0))
    assert "ol/car/location" not in sink.topics()  # cleared once, not on every update


def test_withdrawing_read_location_clears_the_retained_location_at_once() -> None:
    """location_policy_changed() clears without waiting for the next poll."""
    sink = ListSink()
    permission = Permission(True)
    states = StatePublisher(sink, TOPICS, location_allowed=permission)
    states.update("car", state())
    sink.take()
    permission.allowed = False
    states.location_policy_changed()
    assert sink.messages == [Publish("ol/car/location", "", retain=True)]


def test_granting_read_location_publishes_the_latest_position_at_once() -> None:
    """The last position read is published as soon as the scope is granted."""
    sink = ListSink()
    permission = Permission(False)
    states = StatePublisher(sink, TOPICS, location_allowed=permission)
    states.update("car", state())
    sink.take()
    permission.allowed = True
    states.location_policy_changed()
    [message] = sink.messages
    assert message.topic == "ol/car/location" and json.loads(message.payload)["latitude"] == 51.5


def test_availability_and_budget_are_diffed_too() -> None:
    """Availability and the budget document are sent on change only."""
    sink = ListSink()
    states = publisher(sink)
    budget = {
        "calls_used_today": 3,
        "calls_left_today": 247,
        "next_poll": "2025-06-01T09:00:00+00:00",
        "mode": "parked",
    }
    for _ in range(2):
        states.set_availability("car", True)
        states.publish_budget("car", budget)
    assert sink.messages == [
        Publish("ol/car/availability", "online", retain=True),
        Publish(
            "ol/car/budget", json.dumps(budget, sort_keys=True, separators=(",", ":")), retain=True
        ),
    ]
    states.set_availability("car", False)
    assert sink.messages[-1] == Publish("ol/car/availability", "offline", retain=True)


def test_republish_all_sends_discovery_then_every_known_state() -> None:
    """After a reconnect: discovery first, then availability, documents and budget, all forced."""
    sink = ListSink()
    discovery = manager(sink)
    states = publisher(sink, discovery=discovery)
    discovery.start()
    discovery.add_vehicle(ev())
    states.set_availability("car", True)
    states.update("car", state())
    states.publish_budget("car", {"mode": "parked"})
    sink.take()
    states.republish_all()
    topics = sink.topics()
    bridge = f"ha/device/{TOPICS.bridge_node_id}/config"
    assert topics[:2] == [bridge, "ha/device/ownerlink_car/config"]
    assert set(topics[2:]) == {
        "ol/car/availability",
        "ol/car/status",
        "ol/car/health",
        "ol/car/location",
        "ol/car/budget",
    }


def test_republish_keeps_a_withdrawn_location_cleared() -> None:
    """A republish never resurrects a location no app may see."""
    sink = ListSink()
    permission = Permission(True)
    states = StatePublisher(sink, TOPICS, location_allowed=permission)
    states.update("car", state())
    permission.allowed = False
    sink.take()
    states.republish_states()
    located = [m for m in sink.messages if m.topic == "ol/car/location"]
    assert located and all(m.payload == "" for m in located)


def test_forget_vehicle_clears_its_retained_documents() -> None:
    """A vehicle that is no longer bridged leaves nothing retained."""
    sink = ListSink()
    states = publisher(sink)
    states.update("car", state())
    sink.take()
    states.forget_vehicle("car")
    assert {m.topic for m in sink.messages} == {
        "ol/car/status",
        "ol/car/health",
        "ol/car/location",
        "ol/car/budget",
        "ol/car/availability",
    }
    assert all(m.payload == "" and m.retain for m in sink.messages)


def test_event_message_is_json_with_event_type_and_not_retained() -> None:
    """Alerts go to `<base>/bridge/event` as JSON carrying `event_type`, and an alert about one
    app also to that app's own `<base>/app/<app>/event`, with the same bytes."""
    alert = Alert(
        AlertKind.COMMAND_REFUSED, "unlock refused", UPLOADED, app="nodered", vehicle="car"
    )
    owner, own = event_messages(TOPICS, alert)
    assert owner.topic == "ol/bridge/event" and not owner.retain
    assert own.topic == "ol/app/nodered/event" and own.payload == owner.payload and not own.retain
    doc = json.loads(owner.payload)
    assert doc["event_type"] == "command_refused" and doc["vehicle"] == "car"


@pytest.mark.parametrize("app", [None, "", "a/b", "a+", "#", "x" * 65])
def test_alert_about_no_app_or_an_impossible_name_goes_to_the_owner_only(app: str | None) -> None:
    """An account alert names no app; a name that is not one topic level names no registered app
    and must not be published under (`a/b` would land in another topic tree)."""
    alert = Alert(AlertKind.COMMAND_REFUSED, "refused", UPLOADED, app=app)
    assert [m.topic for m in event_messages(TOPICS, alert)] == ["ol/bridge/event"]


# -- Home Assistant's birth message --------------------------------------------------------------


class FakeSleep:
    """Records requested delays; returns once the test releases it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.release = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.release.wait()


async def test_ha_online_republishes_after_a_random_delay() -> None:
    """`online` on homeassistant/status waits rng-chosen seconds, then republishes everything."""
    sink, sleep = ListSink(), FakeSleep()
    discovery = manager(sink)
    states = publisher(
        sink, discovery=discovery, rng=random.Random(7), sleep=sleep, birth_delay_s=(1.0, 2.0)
    )
    discovery.add_vehicle(ev())
    states.update("car", state())
    sink.take()
    states.handle_ha_status(b"online")
    await asyncio.sleep(0)  # let the task reach the sleep
    assert sink.messages == []
    assert sleep.delays == [random.Random(7).uniform(1.0, 2.0)]
    sleep.release.set()
    async with asyncio.timeout(2):
        await sink.arrived.wait()
    assert sink.topics()[0] == "ha/device/ownerlink_car/config"
    assert "ol/car/status" in sink.topics()
    await states.stop()


async def test_ha_offline_and_repeated_births_do_not_pile_up() -> None:
    """`offline` is ignored and a second birth while one is pending adds nothing."""
    sink, sleep = ListSink(), FakeSleep()
    states = publisher(sink, sleep=sleep)
    states.update("car", state())
    states.handle_ha_status(b"offline")
    states.handle_ha_status(b"online")
    states.handle_ha_status(b"online")
    await asyncio.sleep(0)
    assert len(sleep.delays) == 1
    await states.stop()


# -- the discovery manager -----------------------------------------------------------------------


def test_first_publication_sweeps_what_an_earlier_run_may_have_left() -> None:
    """On start-up, stale entity-layout topics are cleared and the device gets removal stubs."""
    sink = ListSink()
    discovery = manager(sink, scopes=frozenset({Scope.READ_STATUS}))
    discovery.add_vehicle(ev())
    cleared = {m.topic for m in sink.messages if m.payload == ""}
    assert "ha/lock/ownerlink_car/lock/config" in cleared
    assert "ha/sensor/ownerlink_car/range/config" in cleared
    device = [m for m in sink.messages if m.topic == "ha/device/ownerlink_car/config"]
    stub, final = (json.loads(m.payload)["cmps"] for m in device)
    assert stub["lock"] == {"p": "lock"} and "lock" not in final
    assert "range" in final


def test_withdrawn_scope_removes_its_entities() -> None:
    """set_ha_scopes publishes removal stubs, then the device payload without them."""
    sink = ListSink()
    discovery = manager(sink)
    discovery.add_vehicle(ev())
    before = discovery.current("car")
    sink.take()
    discovery.set_ha_scopes(ALL - {Scope.COMMAND_UNLOCK})
    after = discovery.current("car")
    assert sink.messages == [*removals(before, after), *after]
    cmps = json.loads(sink.messages[0].payload)["cmps"]
    assert cmps["lock"] == {"p": "lock"}
    assert "lock_button" in json.loads(sink.messages[-1].payload)["cmps"]


def test_unchanged_scopes_publish_nothing() -> None:
    """Re-applying the same grant sends no discovery."""
    sink = ListSink()
    discovery = manager(sink)
    discovery.start()
    discovery.add_vehicle(ev())
    sink.take()
    discovery.set_ha_scopes(ALL)
    discovery.add_vehicle(ev())
    assert sink.messages == []


def test_entity_mode_withdrawal_clears_config_topics() -> None:
    """In the per-entity layout a withdrawn entity's config is cleared with an empty payload."""
    sink = ListSink()
    discovery = manager(sink, mode="entity")
    discovery.add_vehicle(ev())
    sink.take()
    discovery.set_ha_scopes(ALL - {Scope.READ_LOCATION})
    cleared = {m.topic for m in sink.messages if m.payload == ""}
    assert cleared == {
        "ha/device_tracker/ownerlink_car/location/config",
        "ha/sensor/ownerlink_car/speed/config",
        "ha/sensor/ownerlink_car/heading/config",
    }


def test_no_home_assistant_app_means_no_discovery() -> None:
    """Unsetting the Home Assistant app removes the bridge and every vehicle device."""
    sink = ListSink()
    discovery = manager(sink)
    discovery.start()
    discovery.add_vehicle(ev())
    sink.take()
    discovery.set_ha_app(None, frozenset())
    assert {m.topic for m in sink.messages} == {
        f"ha/device/{TOPICS.bridge_node_id}/config",
        "ha/device/ownerlink_car/config",
    }
    assert all(m.payload == "" for m in sink.messages)
    sink.take()
    discovery.republish()
    assert sink.messages == []


def test_remove_vehicle_clears_its_device() -> None:
    """remove_vehicle deletes the vehicle's device from Home Assistant."""
    sink = ListSink()
    discovery = manager(sink)
    discovery.add_vehicle(ev())
    sink.take()
    discovery.remove_vehicle("car")
    assert sink.messages == [Publish("ha/device/ownerlink_car/config", "", retain=True)]


@pytest.mark.parametrize("mode", ["device", "entity"])
def test_republish_sends_the_current_discovery_again(mode: DiscoveryMode) -> None:
    """republish() repeats exactly what is current, nothing removed."""
    sink = ListSink()
    discovery = manager(sink, mode=mode)
    discovery.add_vehicle(ev())
    sink.take()
    discovery.republish()
    assert sink.messages == discovery.current("car")
