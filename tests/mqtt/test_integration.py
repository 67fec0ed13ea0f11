"""Client, discovery manager and state publisher on a real broker, as the daemon wires them."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from bridge.access.alerts import event_messages
from bridge.events import Alert, AlertKind
from bridge.model import Scope, VehicleInfo
from bridge.mqtt.client import InboundMessage, MqttClient
from bridge.mqtt.discovery import DiscoveryMode, VehicleDescription
from bridge.mqtt.publisher import DiscoveryManager, StatePublisher
from bridge.mqtt.topics import Publish, Topics
from tests.conftest import BrokerAddress
from tests.mqtt.helpers import UPLOADED, VIN, Watcher, ev, mqtt_config, retained, state

ALL = frozenset(Scope)


@dataclass
class Stack:
    client: MqttClient
    discovery: DiscoveryManager
    states: StatePublisher
    topics: Topics
    location: list[bool]  # [allowed]: flipped by tests

    def device(self, slug: str = "car") -> str:
        return f"{self.topics.discovery_prefix}/device/ownerlink_{slug}/config"

    async def flushed(self, broker: BrokerAddress) -> None:
        """Return once the broker has handled everything this client published so far."""
        sentinel = f"{self.topics.base}/zz-flush/{uuid.uuid4().hex[:8]}"
        async with Watcher(broker.host, broker.port, sentinel) as watcher:
            # One client's messages are handled in order: the sentinel comes after the rest.
            self.client.publish(Publish(sentinel, b"x"))
            await watcher.wait_for(sentinel)


@asynccontextmanager
async def stack(
    broker: BrokerAddress,
    base_topic: str,
    *,
    scopes: frozenset[Scope] = ALL,
    mode: DiscoveryMode = "device",
    location: bool = True,
) -> AsyncIterator[Stack]:
    """The MQTT side as `ownerlink run` composes it, with a zero-length birth delay."""
    config = mqtt_config(broker.host, broker.port, base_topic, discovery_mode=mode)
    topics = Topics(base=base_topic, discovery_prefix=config.discovery_prefix)
    allowed = [location]

    def route(message: InboundMessage) -> None:
        if message.topic == topics.ha_status:
            parts.states.handle_ha_status(message.payload)

    client = MqttClient(
        config,
        loop=asyncio.get_running_loop(),
        on_message=route,
        on_connect=lambda: parts.states.republish_all(),  # noqa: PLW0108 - parts is built below
    )
    discovery = DiscoveryManager(
        client,
        topics,
        mode=mode,
        ha_app="homeassistant",
        ha_scopes=scopes,
        stepup_scopes=frozenset(),
    )
    states = StatePublisher(
        client,
        topics,
        location_allowed=lambda: allowed[0],
        discovery=discovery,
        rng=random.Random(1),
        birth_delay_s=(0.0, 0.0),
    )
    parts = Stack(client, discovery, states, topics, allowed)
    client.subscribe(topics.ha_status)
    client.start()
    try:
        await client.wait_connected(10)
        discovery.start()
        yield parts
    finally:
        await states.stop()
        await client.stop()


async def clear_retained(broker: BrokerAddress, *prefixes: str) -> None:
    """Leave the shared broker clean: empty every retained topic under the prefixes."""
    for prefix in prefixes:
        left = await retained(broker.host, broker.port, prefix)
        async with Watcher(broker.host, broker.port, f"{prefix}/zz-unused") as cleaner:
            for topic in left:
                await cleaner.publish(topic, b"", retain=True)


@pytest.fixture
async def tidy(broker: BrokerAddress, base_topic: str) -> AsyncIterator[None]:
    """Clears what a test left retained on the session broker."""
    yield
    await clear_retained(broker, base_topic, f"{base_topic}ha")


async def test_home_assistant_birth_triggers_republishing(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """`online` on homeassistant/status makes the bridge resend discovery, then every state."""
    async with stack(broker, base_topic) as s:
        s.discovery.add_vehicle(ev())
        s.states.set_availability("car", True)
        s.states.update("car", state())
        await s.flushed(broker)
        async with Watcher(
            broker.host, broker.port, f"{base_topic}/#", f"{s.topics.discovery_prefix}/#"
        ) as w:
            await w.settled()
            mark = w.mark()
            await w.publish(s.topics.ha_status, b"online")
            device = await w.wait_for(s.device(), since=mark)
            status = await w.wait_for(s.topics.state("car", "status"), since=mark)
            await w.wait_for(s.topics.availability("car"), b"online", since=mark)
    assert not device.retain and not status.retain  # live deliveries: really sent again
    assert w.messages.index(device) < w.messages.index(status)


async def test_identical_states_are_not_republished_on_the_broker(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """Publishing the same reading twice puts one status message on the wire."""
    async with stack(broker, base_topic) as s:
        async with Watcher(broker.host, broker.port, f"{base_topic}/#") as w:
            s.states.update("car", state())
            s.states.update("car", state())
            # Messages from one client arrive in order: once the budget is seen, so is any repeat.
            s.states.publish_budget("car", {"mode": "parked"})
            await w.wait_for(s.topics.state("car", "budget"))
    assert len(w.on(s.topics.state("car", "status"))) == 1


async def test_withdrawn_scope_removes_its_entity_from_the_broker(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """After set_ha_scopes the retained device config no longer has the component."""
    async with stack(broker, base_topic) as s:
        s.discovery.add_vehicle(ev())
        await s.flushed(broker)
        async with Watcher(broker.host, broker.port, f"{s.topics.discovery_prefix}/#") as w:
            await w.wait_for(s.device())
            mark = w.mark()
            s.discovery.set_ha_scopes(ALL - {Scope.COMMAND_HORN_LIGHTS})
            stub = await w.wait_for(s.device(), since=mark)
            final = await w.wait_for(s.device(), since=w.messages.index(stub) + 1)
        await s.flushed(broker)
        snapshot = await retained(broker.host, broker.port, s.topics.discovery_prefix)
    assert json.loads(stub.payload)["cmps"]["horn_lights"] == {"p": "button"}
    assert "horn_lights" not in json.loads(final.payload)["cmps"]
    assert "horn_lights" not in json.loads(snapshot[s.device()])["cmps"]


async def test_entity_mode_withdrawal_deletes_the_retained_config(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """In the per-entity layout the withdrawn entity's config topic is emptied on the broker."""
    async with stack(broker, base_topic, mode="entity") as s:
        s.discovery.add_vehicle(ev())
        prefix = s.topics.discovery_prefix
        config_topic = f"{prefix}/button/ownerlink_car/refresh/config"
        await s.flushed(broker)
        async with Watcher(broker.host, broker.port, f"{prefix}/#") as w:
            await w.wait_for(config_topic)
            s.discovery.set_ha_scopes(ALL - {Scope.COMMAND_REFRESH})
            await w.wait_for(config_topic, b"")
        snapshot = await retained(broker.host, broker.port, prefix)
    assert config_topic not in snapshot
    assert f"{prefix}/sensor/ownerlink_car/range/config" in snapshot


async def test_no_location_topic_without_read_location(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """Without read:location no position is ever retained, and no tracker is discovered."""
    scopes = ALL - {Scope.READ_LOCATION}
    async with stack(broker, base_topic, scopes=scopes, location=False) as s:
        s.discovery.add_vehicle(ev())
        s.states.update("car", state())
        s.states.publish_budget("car", {"mode": "parked"})
        async with Watcher(broker.host, broker.port, f"{base_topic}/#") as w:
            await w.wait_for(s.topics.state("car", "budget"))
        snapshot = await retained(broker.host, broker.port, base_topic)
        discovered = await retained(broker.host, broker.port, s.topics.discovery_prefix)
    assert s.topics.state("car", "location") not in snapshot
    assert not [m for m in w.on(s.topics.state("car", "location")) if m.payload]
    assert "location" not in json.loads(discovered[s.device()])["cmps"]


async def test_withdrawn_location_is_cleared_from_the_broker(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """Withdrawing read:location empties the retained location and removes the tracker."""
    async with stack(broker, base_topic) as s:
        s.discovery.add_vehicle(ev())
        s.states.update("car", state())
        location = s.topics.state("car", "location")
        async with Watcher(broker.host, broker.port, f"{base_topic}/#") as w:
            await w.wait_for(location)
            s.location[0] = False
            s.discovery.set_ha_scopes(ALL - {Scope.READ_LOCATION})
            s.states.location_policy_changed()
            await w.wait_for(location, b"")
        snapshot = await retained(broker.host, broker.port, base_topic)
    assert location not in snapshot


async def test_no_vin_in_any_topic_or_payload(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """Everything the MQTT side publishes for a vehicle whose provider id is its VIN omits it."""
    info = VehicleInfo(vehicle_id=VIN, make="F", model="Kuga", year=2022, nickname="Kuga")
    vehicle = VehicleDescription.from_info("kuga", info, operations=ev().operations)
    async with stack(broker, base_topic) as s:
        async with Watcher(
            broker.host, broker.port, f"{base_topic}/#", f"{s.topics.discovery_prefix}/#"
        ) as w:
            s.discovery.add_vehicle(vehicle.with_positions_from(state()))
            s.states.set_availability("kuga", True)
            s.states.update("kuga", state())
            s.states.publish_budget("kuga", {"calls_used_today": 1, "mode": "parked"})
            alert = Alert(AlertKind.APP_ADDED, "added", UPLOADED, vehicle="kuga")
            for message in event_messages(s.topics, alert):
                s.client.publish(message)
            s.states.republish_all()
            await w.wait_for(s.topics.bridge_event)
            await w.wait_for(s.topics.state("kuga", "budget"))
    assert len(w.messages) > 5
    for message in w.messages:
        assert VIN not in message.topic
        assert VIN.encode() not in message.payload
        assert VIN.lower().encode() not in message.payload.lower()


async def test_two_vehicles_coexist_on_one_broker(
    broker: BrokerAddress, base_topic: str, tidy: None
) -> None:
    """Two vehicles get two devices whose unique_ids do not overlap."""
    async with stack(broker, base_topic) as s:
        s.discovery.add_vehicle(ev("car"))
        s.discovery.add_vehicle(ev("car_door"))
        await s.flushed(broker)
        snapshot = await retained(broker.host, broker.port, s.topics.discovery_prefix)
        one = json.loads(snapshot[s.device("car")])["cmps"]
        two = json.loads(snapshot[s.device("car_door")])["cmps"]
    ids_one = {c["unique_id"] for c in one.values()}
    ids_two = {c["unique_id"] for c in two.values()}
    assert ids_one and ids_two and not ids_one & ids_two
