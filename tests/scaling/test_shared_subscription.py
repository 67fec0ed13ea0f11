"""MQTT 5 shared subscriptions on the real Mosquitto: each command reaches exactly one instance."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.scaling import shared_command_filter
from tests.conftest import BrokerAddress

COMMANDS = 40


class Instance:
    """An MQTT 5 client subscribing like an Ownerlink instance (Retain As Published): it records
    every command it is handed, with the retain flag it arrived with."""

    def __init__(self, broker: BrokerAddress, command_filter: str, fence: str) -> None:
        self.received: list[tuple[bytes, bool]] = []
        self.fenced = threading.Event()
        self._subscribed = threading.Event()
        self._fence = fence
        self._filters = [command_filter, fence]
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"instance-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)

    def _on_connect(self, client: paho.Client, *args: object) -> None:
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe([(f, options) for f in self._filters])

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self._fence:
            self.fenced.set()
        else:
            self.received.append((bytes(msg.payload), bool(msg.retain)))

    @property
    def payloads(self) -> list[bytes]:
        return [payload for payload, _ in self.received]

    def start(self) -> None:
        self.client.loop_start()
        assert self._subscribed.wait(5), "no SUBACK"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def instances(broker: BrokerAddress, command_filter: str, fence: str) -> Iterator[list[Instance]]:
    """Two instances, subscribed (SUBACK received) before the block runs."""
    pair = [Instance(broker, command_filter, fence) for _ in range(2)]
    try:
        for instance in pair:
            instance.start()
        yield pair
    finally:
        for instance in pair:
            instance.stop()


@contextmanager
def app_client(broker: BrokerAddress) -> Iterator[paho.Client]:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def send(broker: BrokerAddress, messages: list[tuple[str, bytes, bool]], fence: str) -> None:
    """Publish (topic, payload, retain) in order, then the fence every instance subscribes to:
    Mosquitto delivers to a client in order, so an instance holding the fence holds everything
    the broker gave it."""
    with app_client(broker) as client:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        client.publish(fence, b"fence", qos=1).wait_for_publish(5)


def commands(base: str) -> list[tuple[str, bytes, bool]]:
    """Lock commands from three apps for five vehicles, each with its own id."""
    return [
        (
            f"{base}/app/app{n % 3}/car-{n % 5}/cmd/lock",
            f'{{"action": "LOCK", "id": "cmd-{n}"}}'.encode(),
            False,
        )
        for n in range(COMMANDS)
    ]


def test_a_shared_subscription_hands_each_command_to_exactly_one_instance(
    broker: BrokerAddress, base_topic: str
) -> None:
    """Two instances on `$share/ownerlink/<base>/app/+/+/cmd/+` split the commands: none twice."""
    fence = f"{base_topic}/fence"
    sent = commands(base_topic)
    with instances(broker, shared_command_filter(base_topic), fence) as pair:
        send(broker, sent, fence)
        assert all(i.fenced.wait(5) for i in pair)
    got = [payload for i in pair for payload in i.payloads]
    assert sorted(got) == sorted(payload for _, payload, _ in sent)
    assert all(i.received for i in pair), "the broker gave every command to one instance"


def test_a_plain_subscription_hands_every_command_to_every_instance(
    broker: BrokerAddress, base_topic: str
) -> None:
    """Today's filter, subscribed by two instances, would run every command twice."""
    fence = f"{base_topic}/fence"
    sent = commands(base_topic)
    with instances(broker, f"{base_topic}/app/+/+/cmd/+", fence) as pair:
        send(broker, sent, fence)
        assert all(i.fenced.wait(5) for i in pair)
    assert all(sorted(i.payloads) == sorted(p for _, p, _ in sent) for i in pair)


def test_a_command_published_retained_reaches_one_instance_flagged_retained(
    broker: BrokerAddress, base_topic: str
) -> None:
    """A live retained command reaches one shared subscriber with its retain flag: refused."""
    topic, fence = f"{base_topic}/app/app0/car-0/cmd/lock", f"{base_topic}/fence"
    with instances(broker, shared_command_filter(base_topic), fence) as pair:
        send(broker, [(topic, b"UNLOCK", True)], fence)
        assert all(i.fenced.wait(5) for i in pair)
        send(broker, [(topic, b"", True)], fence)  # clear it from the broker
    deliveries = [r for i in pair for r in i.received if r[0]]
    assert deliveries == [(b"UNLOCK", True)]


def test_a_retained_command_waiting_on_the_broker_only_ever_arrives_flagged_retained(
    broker: BrokerAddress, base_topic: str
) -> None:
    """Replayed to every shared subscriber (Mosquitto 2) or to none (MQTT 5), it is never fresh."""
    topic, fence = f"{base_topic}/app/app0/car-0/cmd/lock", f"{base_topic}/fence"
    send(broker, [(topic, b"UNLOCK", True)], f"{base_topic}/nobody")
    try:
        with instances(broker, shared_command_filter(base_topic), fence) as pair:
            send(broker, [], fence)
            assert all(i.fenced.wait(5) for i in pair)
    finally:
        send(broker, [(topic, b"", True)], f"{base_topic}/nobody")
    deliveries = [r for i in pair for r in i.received if r[0]]
    assert all(retained for _, retained in deliveries)
    assert len(deliveries) <= len(pair)


def test_the_shared_filter_names_the_group_and_the_command_topics() -> None:
    """The filter is `$share/<group>/` in front of the daemon's own command filter."""
    assert shared_command_filter("ownerlink") == "$share/ownerlink/ownerlink/app/+/+/cmd/+"
    assert shared_command_filter("home/cars", group="fleet") == (
        "$share/fleet/home/cars/app/+/+/cmd/+"
    )
