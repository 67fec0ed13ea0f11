"""Test helpers for the MQTT suite: a list-backed sink, a recording subscriber, sample data."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import MqttConfig
from bridge.model import (
    ChargingState,
    EngineState,
    Health,
    Ignition,
    Location,
    LockState,
    OpenState,
    Operation,
    Powertrain,
    Status,
    VehicleState,
)
from bridge.mqtt.discovery import VehicleDescription
from bridge.mqtt.topics import Publish

# A syntactically valid VIN: it must never reach a topic or payload.
VIN = "1FMCU9G67LUA12345"
UPLOADED = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)


class ListSink:
    """A PublishSink that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[Publish] = []
        self.arrived = asyncio.Event()  # set on every publish, for tests that await one

    def publish(self, message: Publish) -> None:
        self.messages.append(message)
        self.arrived.set()

    def take(self) -> list[Publish]:
        taken, self.messages = self.messages, []
        self.arrived.clear()
        return taken

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]


def mqtt_config(host: str, port: int, base_topic: str, **overrides: Any) -> MqttConfig:
    """A config for tests: unique client id and discovery prefix, fast reconnects."""
    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "base_topic": base_topic,
        "discovery_prefix": f"{base_topic}ha",
        "client_id": f"ownerlink-{base_topic}-{uuid.uuid4().hex[:6]}",
        "keepalive": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    values.update(overrides)
    return MqttConfig(**values)


def ev(slug: str = "car", **overrides: Any) -> VehicleDescription:
    """An electric vehicle whose provider can do everything."""
    values: dict[str, Any] = {
        "slug": slug,
        "name": f"Car {slug}",
        "manufacturer": "Ford",
        "model": "Mustang Mach-E",
        "year": 2021,
        "powertrain": Powertrain.EV,
        "operations": frozenset(Operation),
    }
    values.update(overrides)
    return VehicleDescription(**values)


def state(*, location: bool = True, **status: Any) -> VehicleState:
    """A plausible reading; `status` overrides Status fields."""
    fields: dict[str, Any] = {
        "lock": LockState.LOCKED,
        "ignition": Ignition.OFF,
        "engine": EngineState.STOPPED,
        "battery_level_pct": 81.0,
        "range_km": 320.5,
        "odometer_km": 12034.2,
        "charging": ChargingState.PLUGGED,
        "plugged_in": True,
        "doors": {"front_left": OpenState.CLOSED, "front_right": OpenState.CLOSED},
        "windows": {"front_left": OpenState.CLOSED},
        "hood": OpenState.CLOSED,
    }
    fields.update(status)
    return VehicleState(
        vehicle_id=VIN,
        updated_at=UPLOADED,
        status=Status(**fields),
        health=Health(
            tyre_pressures_kpa={"front_left": 240.0},
            oil_life_pct=80.0,
            battery_12v_pct=90.0,
            battery_12v_voltage=12.6,
        ),
        location=Location(latitude=51.5, longitude=-0.12, heading_deg=90.0, speed_kmh=0.0)
        if location
        else None,
    )


@dataclass(frozen=True, slots=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool


class Watcher:
    """A plain paho subscriber (reconnecting, resubscribing) that lets a test await messages."""

    def __init__(self, host: str, port: int, *filters: str) -> None:
        self.host, self.port, self.filters = host, port, filters
        self.messages: list[Seen] = []
        self._loop = asyncio.get_running_loop()
        self._new = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watcher-{uuid.uuid4().hex[:8]}"
        )
        self._client.reconnect_delay_set(cast(int, 0.1), cast(int, 0.5))  # fractions work

    async def __aenter__(self) -> Watcher:
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect_async(self.host, self.port, keepalive=5)
        self._client.loop_start()
        async with asyncio.timeout(10):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def settled(self) -> None:
        """Return once every retained message for our filters has arrived (first filter `x/#`)."""
        assert self.filters[0].endswith("/#")
        sentinel = f"{self.filters[0][:-2]}/zz-sentinel-{uuid.uuid4().hex[:8]}"
        # The broker queues retained messages to us while handling SUBSCRIBE, before any later
        # publish: once our own sentinel comes back, every retained message has arrived.
        await self.publish(sentinel, b"x")
        await self.wait_for(sentinel)

    def mark(self) -> int:
        """A position: wait_for(since=mark) only looks at messages that arrive later."""
        return len(self.messages)

    async def wait_for(
        self, topic: str, payload: bytes | None = None, *, since: int = 0, timeout: float = 5.0
    ) -> Seen:
        """The first message on `topic` (with `payload`, if given) at or after `since`."""
        async with asyncio.timeout(timeout):
            while True:
                for seen in self.messages[since:]:
                    if seen.topic == topic and (payload is None or seen.payload == payload):
                        return seen
                since = len(self.messages)
                self._new.clear()
                await self._new.wait()

    def on(self, topic: str, since: int = 0) -> list[Seen]:
        return [m for m in self.messages[since:] if m.topic == topic]

    async def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 5)

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(f, 1) for f in self.filters])

    def _on_subscribe(self, *_: Any) -> None:
        self._loop.call_soon_threadsafe(self._subscribed.set)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        seen = Seen(message.topic, bytes(message.payload), bool(message.retain))
        self._loop.call_soon_threadsafe(self._record, seen)

    def _record(self, seen: Seen) -> None:
        self.messages.append(seen)
        self._new.set()


async def retained(host: str, port: int, prefix: str) -> dict[str, bytes]:
    """Every retained message under `prefix/#` right now (a fresh subscriber, then a sentinel)."""
    async with Watcher(host, port, f"{prefix}/#") as watcher:
        await watcher.settled()
        return {m.topic: m.payload for m in watcher.messages if m.retain}
