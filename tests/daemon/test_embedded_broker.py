"""The demo's fallback broker (embedded, pure Python, MQTT 3.1.1) carries the whole daemon."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import Settings
from bridge.daemon import Daemon
from bridge.demo.broker import _embedded, demo_broker, free_port
from bridge.demo.run import DEMO_BASE_TOPIC, demo_config, login
from bridge.simulator import SimClock, Simulator, serve_in_thread


async def test_daemon_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    """On a machine without Mosquitto the demo's embedded broker carries states and a LOCK."""
    sim = Simulator(vehicles=1, seed=2, auto_consent=True, admin=True, clock=SimClock(speed=1))
    with serve_in_thread(sim) as url, _embedded(free_port()) as broker:
        document = demo_config(tmp_path, url, broker, 0, {"car": sim.vehicles[0].vehicle_id})
        document["logging"] = {"level": "warning", "format": "json"}
        settings = Settings(**document)
        assert settings.mqtt.protocol == "3.1.1"
        await login(settings)
        daemon = Daemon(settings)
        await daemon.start()
        results: list[dict[str, str]] = []
        seen: set[str] = set()
        arrived = threading.Event()

        def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
            seen.add(msg.topic)
            if msg.topic.endswith("/result"):
                results.append(json.loads(msg.payload))
                if results[-1]["status"] == "succeeded":
                    arrived.set()

        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.subscribe(f"{DEMO_BASE_TOPIC}/#")
        client.loop_start()
        try:
            await asyncio.sleep(1)
            client.publish(f"{DEMO_BASE_TOPIC}/app/homeassistant/car/cmd/lock", "LOCK", qos=1)
            assert await asyncio.to_thread(arrived.wait, 20), results
        finally:
            client.loop_stop()
            client.disconnect()
            await daemon.stop()
    assert {f"{DEMO_BASE_TOPIC}/car/status", f"{DEMO_BASE_TOPIC}/bridge/state"} <= seen
    assert [e.command for e in sim.vehicles[0].executed] == ["lock"]


def test_a_broker_the_demo_starts_listens_where_it_was_asked_to() -> None:
    """`--broker 127.0.0.1:PORT` with nothing there: the demo's own broker takes that port, so
    the printed commands and the owner's clients find it where they were told."""
    port = free_port()
    with demo_broker("127.0.0.1", port) as broker:
        assert (broker.host, broker.port) == ("127.0.0.1", port)
        assert broker.kind in {"mosquitto", "embedded"}
