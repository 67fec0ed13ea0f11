"""The paho adapter against a real Mosquitto: will, reconnects, clean sessions, credentials, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.commands.delivery import ResultDelivery
from bridge.commands.results import CommandResult
from bridge.config import TlsConfig
from bridge.errors import BrokerError
from bridge.model import CommandStatus, Scope
from bridge.mqtt.client import InboundMessage, MqttClient, QueueDepth
from bridge.mqtt.publisher import DiscoveryManager, StatePublisher
from bridge.mqtt.topics import Publish, Topics
from bridge.store import Store
from tests.conftest import BrokerAddress
from tests.mqtt.conftest import Inbox, PasswordBroker, TlsBroker, running
from tests.mqtt.helpers import Watcher, ev, mqtt_config, retained, state
from tests.support.broker import MosquittoProcess

REPO = Path(__file__).resolve().parents[2]


# -- connecting, publishing, subscribing ---------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_connect_publishes_online_retained(
    broker: BrokerAddress, base_topic: str, protocol: str
) -> None:
    """On connect the bridge state becomes `online`, retained, over MQTT 5 and 3.1.1."""
    config = mqtt_config(broker.host, broker.port, base_topic, protocol=protocol)
    async with running(config) as client:
        assert client.connected
        snapshot = await retained(broker.host, broker.port, base_topic)
    assert snapshot[f"{base_topic}/bridge/state"] == b"online"


async def test_stop_leaves_offline_retained(broker: BrokerAddress, base_topic: str) -> None:
    """A graceful stop publishes `offline` (retained) before disconnecting."""
    config = mqtt_config(broker.host, broker.port, base_topic)
    async with running(config) as client:
        pass
    assert not client.connected
    snapshot = await retained(broker.host, broker.port, base_topic)
    assert snapshot[f"{base_topic}/bridge/state"] == b"offline"


async def test_messages_arrive_on_the_event_loop_as_inbound_messages(
    broker: BrokerAddress, base_topic: str
) -> None:
    """Subscriptions deliver InboundMessage (topic, payload, retain, qos) on the loop's thread."""
    inbox, threads = Inbox(), set[int]()

    def on_message(message: InboundMessage) -> None:
        threads.add(threading.get_ident())
        inbox(message)

    config = mqtt_config(broker.host, broker.port, base_topic)
    async with Watcher(broker.host, broker.port, f"{base_topic}/#") as watcher:
        await watcher.publish(f"{base_topic}/kept", b"old", retain=True)
        async with running(config, on_message) as client:
            client.subscribe(f"{base_topic}/kept", qos=1)
            client.subscribe(f"{base_topic}/live", qos=1)
            kept = await inbox.wait_for(f"{base_topic}/kept")
            await watcher.publish(f"{base_topic}/live", b"new")
            live = await inbox.wait_for(f"{base_topic}/live")
        await watcher.publish(f"{base_topic}/kept", b"", retain=True)
    assert (kept.payload, kept.retain, kept.qos) == (b"old", True, 1)
    assert (live.payload, live.retain) == (b"new", False)
    assert live.received_monotonic >= kept.received_monotonic
    assert threads == {threading.get_ident()}


async def test_publish_is_delivered_with_retain_flag(
    broker: BrokerAddress, base_topic: str
) -> None:
    """publish(Publish) sends the payload, QoS and retain flag as given."""
    config = mqtt_config(broker.host, broker.port, base_topic)
    async with Watcher(broker.host, broker.port, f"{base_topic}/#") as watcher:
        async with running(config) as client:
            client.publish(Publish(f"{base_topic}/x", '{"a":1}', retain=True))
            await watcher.wait_for(f"{base_topic}/x", b'{"a":1}')
        snapshot = await retained(broker.host, broker.port, base_topic)
        await watcher.publish(f"{base_topic}/x", b"", retain=True)
    assert snapshot[f"{base_topic}/x"] == b'{"a":1}'


async def test_publish_before_start_and_to_a_wildcard_are_errors(
    broker: BrokerAddress, base_topic: str
) -> None:
    """Misuse raises BrokerError rather than failing silently."""
    config = mqtt_config(broker.host, broker.port, base_topic)
    client = MqttClient(config, loop=asyncio.get_running_loop(), on_message=lambda _m: None)
    with pytest.raises(BrokerError):
        client.publish(Publish(f"{base_topic}/x", "1"))
    async with running(config) as client:
        with pytest.raises(BrokerError):
            client.publish(Publish(f"{base_topic}/#", "1"))


async def test_publish_from_another_thread_is_delivered_in_order(
    broker: BrokerAddress, base_topic: str
) -> None:
    """publish() from a thread that is not the loop's (the audit flusher's, say) reaches the
    broker, each thread's messages in the order it sent them."""
    config = mqtt_config(broker.host, broker.port, base_topic)
    topic = f"{base_topic}/from-thread"
    async with Watcher(broker.host, broker.port, f"{base_topic}/#") as watcher:
        async with running(config) as client:

            def send() -> None:
                for n in range(50):
                    client.publish(Publish(topic, str(n), qos=1))

            await asyncio.to_thread(send)
            await watcher.wait_for(topic, b"49")
    assert [m.payload for m in watcher.on(topic)] == [str(n).encode() for n in range(50)]


async def test_a_burst_of_messages_is_read_whole(broker: BrokerAddress, base_topic: str) -> None:
    """Hundreds of messages arriving back to back are all handed over, in order."""
    inbox = Inbox()
    config = mqtt_config(broker.host, broker.port, base_topic)
    topic = f"{base_topic}/burst"
    async with running(config, inbox) as client:
        client.subscribe(topic, qos=0)
        await _until_subscribed(client, inbox, topic)
        await asyncio.to_thread(_publish_burst, broker.host, broker.port, topic, 500, None)
        await inbox.wait_for(topic, b"499")
    assert [m.payload for m in inbox.messages if m.topic == topic and m.payload != PROBE] == [
        str(n).encode() for n in range(500)
    ]


PROBE = b"probe"


async def _until_subscribed(client: MqttClient, inbox: Inbox, topic: str) -> None:
    """Publish a probe on `topic` until it comes back: the subscription is live (a fixed wait
    for the SUBACK raced a busy broker). Late copies of the probe may follow."""
    async with asyncio.timeout(10):
        while True:
            client.publish(Publish(topic, PROBE))
            with contextlib.suppress(TimeoutError):
                await inbox.wait_for(topic, PROBE, timeout=0.2)
                return


async def test_stop_lets_go_of_a_broker_that_never_answers(base_topic: str) -> None:
    """A TCP peer that accepts but never sends a CONNACK: stop() still returns promptly, and the
    client is not connected."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = mqtt_config("127.0.0.1", port, base_topic)
    client = MqttClient(config, loop=asyncio.get_running_loop(), on_message=lambda _m: None)
    try:
        client.start()
        async with asyncio.timeout(5):
            while not accepted:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            await client.stop()
        assert not client.connected
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def _publish_burst(host: str, port: int, topic: str, count: int, ca: Path | None) -> None:
    """Publish `count` QoS 0 messages as fast as paho writes them, from a plain client."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{uuid.uuid4().hex[:6]}")
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, str(n), qos=0) for n in range(count)]
        for info in infos:
            info.wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


# -- sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_commands_queued_in_a_persistent_session_are_never_delivered(
    broker: BrokerAddress, base_topic: str, protocol: str
) -> None:
    """Clean start/session: a command queued for our client id while away is discarded."""
    config = mqtt_config(broker.host, broker.port, base_topic, protocol=protocol)
    command_filter = Topics(base=base_topic).command_filter
    await leave_persistent_session(broker, config.client_id, command_filter)
    inbox = Inbox()
    async with Watcher(broker.host, broker.port, f"{base_topic}/#") as watcher:
        await watcher.publish(f"{base_topic}/app/ha/car/cmd/lock", b"UNLOCK")  # queued, stale
        # Subscribed before the start, so the SUBSCRIBE leaves before "online" (the daemon's
        # order): once the watcher sees "online", a command it sends cannot overtake it.
        client = MqttClient(config, loop=asyncio.get_running_loop(), on_message=inbox)
        client.subscribe(command_filter)
        client.start()
        try:
            await watcher.wait_for(f"{base_topic}/bridge/state", b"online")
            await watcher.publish(f"{base_topic}/app/ha/car/cmd/lock", b"LOCK")
            await inbox.wait_for(f"{base_topic}/app/ha/car/cmd/lock")
        finally:
            await client.stop()
    assert [m.payload for m in inbox.messages] == [b"LOCK"]


async def leave_persistent_session(broker: BrokerAddress, client_id: str, topic: str) -> None:
    """Connect with clean_session=False, subscribe at QoS 1 and leave: the broker keeps a queue."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=False,
    )
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert await asyncio.to_thread(subscribed.wait, 5)
    client.disconnect()
    await asyncio.to_thread(client.loop_stop)


# -- the last will -------------------------------------------------------------------------------

CHILD = """
import asyncio, sys
from bridge.config import MqttConfig
from bridge.logs import configure
from bridge.mqtt.client import InboundMessage, MqttClient, QueueDepth

async def main() -> None:
    configure("warning", "console", sys.stderr)  # stdout carries only our "connected" line
    host, port, base, client_id = sys.argv[1:5]
    config = MqttConfig(host=host, port=int(port), base_topic=base, client_id=client_id)
    client = MqttClient(config, loop=asyncio.get_running_loop(), on_message=lambda m: None)
    client.start()
    await client.wait_connected(10)
    print("connected", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_last_will_marks_the_bridge_offline_when_killed(
    broker: BrokerAddress, base_topic: str
) -> None:
    """kill -9 of a connected bridge process makes the broker publish `offline` (retained)."""
    state_topic = f"{base_topic}/bridge/state"
    async with Watcher(broker.host, broker.port, f"{base_topic}/#") as watcher:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            broker.host,
            str(broker.port),
            base_topic,
            f"killed-{uuid.uuid4().hex[:8]}",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(15):
                assert await child.stdout.readline() == b"connected\n"
            await watcher.wait_for(state_topic, b"online")
            mark = watcher.mark()
            child.kill()  # SIGKILL: no chance to say goodbye
            await child.wait()
            await watcher.wait_for(state_topic, b"offline", since=mark, timeout=10)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    snapshot = await retained(broker.host, broker.port, base_topic)
    assert snapshot[state_topic] == b"offline"


# -- reconnecting --------------------------------------------------------------------------------


async def test_broker_restart_restores_online_subscriptions_discovery_and_states(
    own_broker: MosquittoProcess, base_topic: str
) -> None:
    """After a broker restart: `online`, resubscribed, discovery and states republished."""
    host, port = own_broker.host, own_broker.port
    config = mqtt_config(host, port, base_topic)
    topics = Topics(base=base_topic, discovery_prefix=config.discovery_prefix)
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    client = MqttClient(
        config,
        loop=loop,
        on_message=inbox,
        on_connect=lambda: states.republish_all(),  # noqa: PLW0108 - states is built below
    )
    discovery = DiscoveryManager(
        client,
        topics,
        mode="device",
        ha_app="homeassistant",
        ha_scopes=frozenset(Scope),
        stepup_scopes=frozenset(),
    )
    states = StatePublisher(client, topics, location_allowed=lambda: False, discovery=discovery)
    client.subscribe(f"{base_topic}/ping")
    client.start()
    try:
        await client.wait_connected(10)
        discovery.start()
        discovery.add_vehicle(ev())
        states.set_availability("car", True)
        states.update("car", state())
        device = f"{config.discovery_prefix}/device/ownerlink_car/config"
        async with Watcher(host, port, f"{base_topic}/#", f"{config.discovery_prefix}/#") as w:
            await w.settled()
            mark = w.mark()
            await asyncio.to_thread(own_broker.restart)  # persistence is off: retained is gone
            for topic, payload in [
                (topics.bridge_state, b"online"),
                (device, None),
                (topics.state("car", "status"), None),
                (topics.availability("car"), b"online"),
            ]:
                await w.wait_for(topic, payload, since=mark, timeout=10)
            await w.publish(f"{base_topic}/ping", b"after restart")
            await inbox.wait_for(f"{base_topic}/ping", b"after restart")
        assert client.reconnects == 1
    finally:
        await client.stop()


async def test_an_outage_sends_the_latest_state_once_and_every_result_after_it(
    own_broker: MosquittoProcess, base_topic: str, tmp_path: Path
) -> None:
    """A broker outage during which a retained document changes 5,000 times and a command's
    result is decided: the client holds two messages (paho none), and once the broker is back
    it receives the newest document once (the reconnect's republish included) and the result,
    whose confirmation moves the delivery mark."""
    host, port = own_broker.host, own_broker.port
    config = mqtt_config(host, port, base_topic)
    topics = Topics(base=base_topic, discovery_prefix=config.discovery_prefix)
    inbox = Inbox()  # the app waiting for the result: subscribed again before anything is sent
    client = MqttClient(
        config,
        loop=asyncio.get_running_loop(),
        on_message=inbox,
        on_connect=lambda: states.republish_states(),  # noqa: PLW0108 - states is built below
    )
    states = StatePublisher(client, topics, location_allowed=lambda: False)
    store = Store.open(tmp_path)
    delivery = ResultDelivery(store=store, sink=client, topics=topics)
    delivery.start(head_seq=0)
    budget, result = topics.state("car", "budget"), topics.result("ha", "car")
    client.subscribe(result)
    client.start()
    try:
        await client.wait_connected(10)
        async with Watcher(host, port, f"{base_topic}/#") as w:
            await asyncio.to_thread(own_broker.stop)
            await _wait_until(lambda: not client.connected)
            for n in range(5000):
                states.publish_budget("car", {"left": n})
            delivery.send(_final_result(), seq=1)
            with pytest.raises(BrokerError):
                client.publish(Publish(f"{base_topic}/#", "held or not, a wildcard is an error"))
            assert client.queue_depth() == QueueDepth(held=2, in_paho=0)
            mark = w.mark()
            await asyncio.to_thread(own_broker.start)
            await w.wait_for(budget, b'{"left":4999}', since=mark, timeout=15)
            assert json.loads((await inbox.wait_for(result, timeout=15)).payload)["id"] == "c1"
            await _wait_until(lambda: _mark(store) == 1)
            assert len(w.on(budget, since=mark)) == 1
        assert client.queue_depth() == QueueDepth(held=0, in_paho=0)
    finally:
        await client.stop()
        store.close()
    received = _received_since_start(own_broker, client_id=config.client_id)
    assert received.count(budget) == 1 and received.count(result) == 1


async def test_held_messages_go_out_in_order_across_batches_after_a_reconnect(
    own_broker: MosquittoProcess, base_topic: str
) -> None:
    """2,000 alerts published while the broker is away arrive in order once it is back, and one
    published while the held ones are still going out arrives after them."""
    config = mqtt_config(own_broker.host, own_broker.port, base_topic)
    inbox = Inbox()
    topic = f"{base_topic}/bridge/event"
    loop = asyncio.get_running_loop()
    clients: list[MqttClient] = []
    held_when_published: list[int] = []

    def publish_after() -> None:
        held_when_published.append(clients[0].queue_depth().held)
        clients[0].publish(Publish(topic, "after"))

    def reconnected() -> None:
        # Scheduled from the connect hook, so it runs after the first batch went to paho and
        # before the next one: the moment the reconnect could be racing (whenever the test
        # itself wakes up, the flush may already be over).
        if clients and clients[0].reconnects:
            loop.call_soon(publish_after)

    async with running(config, inbox, on_connect=reconnected) as client:
        clients.append(client)
        client.subscribe(topic)
        await asyncio.to_thread(own_broker.stop)
        await _wait_until(lambda: not client.connected)
        for n in range(2000):
            client.publish(Publish(topic, str(n)))
        await asyncio.to_thread(own_broker.start)
        await inbox.wait_for(topic, b"after", timeout=15)
    assert held_when_published and held_when_published[0] > 0  # published mid-flush
    got = [m.payload for m in inbox.messages if m.topic == topic]
    assert got == [*(str(n).encode() for n in range(2000)), b"after"]


async def _wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def _final_result() -> CommandResult:
    return CommandResult(
        id="c1",
        command="lock",
        action="LOCK",
        status=CommandStatus.SUCCEEDED,
        reason="ok",
        ts=datetime.now(UTC),
        app="ha",
        vehicle="car",
    )


def _mark(store: Store) -> int:
    rows = store.query("SELECT seq FROM result_delivery")
    return int(rows[0][0]) if rows else -1


def _received_since_start(broker: MosquittoProcess, *, client_id: str) -> list[str]:
    """The topics the broker's log says it received from `client_id` since it last started."""
    log = broker.log().rsplit(" starting", 1)[-1]
    prefix = f"Received PUBLISH from {client_id} "
    return [line.split("'")[1] for line in log.splitlines() if prefix in line]


async def test_first_connect_is_retried_until_the_broker_is_up(
    own_broker: MosquittoProcess, base_topic: str
) -> None:
    """A broker that is down at start-up is retried with backoff; the client connects later."""
    own_broker.stop()
    failed = asyncio.Event()
    config = mqtt_config(own_broker.host, own_broker.port, base_topic)
    client = MqttClient(
        config,
        loop=asyncio.get_running_loop(),
        on_message=lambda _m: None,
        on_connect_failed=lambda _reason: failed.set(),
    )
    client.start()
    try:
        async with asyncio.timeout(10):
            await failed.wait()
        assert not client.connected and "Refused" in (client.last_error or "")
        await asyncio.to_thread(own_broker.start)
        await client.wait_connected(10)
        assert client.reconnects == 0 and client.connect_failures >= 1
    finally:
        await client.stop()


async def test_wait_connected_names_the_broker_when_it_gives_up(
    own_broker: MosquittoProcess, base_topic: str
) -> None:
    """wait_connected raises BrokerError with the address and the last error."""
    own_broker.stop()
    config = mqtt_config(own_broker.host, own_broker.port, base_topic)
    client = MqttClient(config, loop=asyncio.get_running_loop(), on_message=lambda _m: None)
    client.start()
    try:
        with pytest.raises(BrokerError, match=str(own_broker.port)):
            await client.wait_connected(0.5)
    finally:
        await client.stop()


# -- credentials ---------------------------------------------------------------------------------


async def test_username_and_password_are_sent(
    password_broker: PasswordBroker, base_topic: str
) -> None:
    """The configured credentials (or an override) let the bridge in."""
    config = mqtt_config(
        password_broker.host,
        password_broker.port,
        base_topic,
        username="nobody",
        password=SecretStr("wrong"),
    )
    async with running(
        config, username=password_broker.username, password=SecretStr(password_broker.password)
    ) as client:
        assert client.connected


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_refused_credentials_are_logged_clearly(
    password_broker: PasswordBroker, base_topic: str, protocol: str
) -> None:
    """A wrong password gives one clear log line naming the settings, without the password."""
    refused = asyncio.Event()
    config = mqtt_config(
        password_broker.host,
        password_broker.port,
        base_topic,
        protocol=protocol,
        username="bridge",
        password=SecretStr("not-the-password"),
    )
    client = MqttClient(
        config,
        loop=asyncio.get_running_loop(),
        on_message=lambda _m: None,
        on_connect_failed=lambda _reason: refused.set(),
    )
    with capture_logs() as logs:
        client.start()
        try:
            async with asyncio.timeout(10):
                await refused.wait()
        finally:
            await client.stop()
    lines = [entry for entry in logs if "credentials" in entry["event"]]
    assert lines and lines[0]["log_level"] == "error"
    assert lines[0]["reason"].lower() in {"not authorized", "bad user name or password"}
    assert "mqtt.password" in lines[0]["event"]
    assert "not-the-password" not in repr(logs)
    assert not client.connected


# -- TLS -----------------------------------------------------------------------------------------


def tls(ca: Path, **more: Any) -> TlsConfig:
    return TlsConfig(enabled=True, ca_file=ca, **more)


async def test_tls_with_the_right_ca_connects(tls_broker: TlsBroker, base_topic: str) -> None:
    """A broker certificate signed by the configured CA, for this host name, is accepted."""
    config = mqtt_config(tls_broker.host, tls_broker.port, base_topic, tls=tls(tls_broker.ca))
    async with running(config) as client:
        assert client.connected


async def test_tls_with_a_client_certificate_connects(
    tls_broker: TlsBroker, base_topic: str
) -> None:
    """cert_file/key_file are presented to a broker that requires a client certificate."""
    config = mqtt_config(
        tls_broker.host,
        tls_broker.client_cert_port,
        base_topic,
        tls=tls(tls_broker.ca, cert_file=tls_broker.client_cert, key_file=tls_broker.client_key),
    )
    async with running(config) as client:
        assert client.connected


@pytest.mark.parametrize(
    ("which", "port_name"),
    [("other_ca", "port"), ("ca", "wrong_name_port")],
    ids=["wrong-ca", "wrong-host-name"],
)
async def test_tls_refuses_an_unverified_broker(
    tls_broker: TlsBroker, base_topic: str, which: str, port_name: str
) -> None:
    """A certificate from another CA, or for another host name, is refused."""
    failed: list[str] = []
    event = asyncio.Event()
    ca = tls_broker.ca if which == "ca" else tls_broker.other_ca
    config = mqtt_config(tls_broker.host, getattr(tls_broker, port_name), base_topic, tls=tls(ca))

    def on_failed(reason: str) -> None:
        failed.append(reason)
        event.set()

    client = MqttClient(
        config,
        loop=asyncio.get_running_loop(),
        on_message=lambda _m: None,
        on_connect_failed=on_failed,
    )
    client.start()
    try:
        async with asyncio.timeout(10):
            await event.wait()
        assert not client.connected
    finally:
        await client.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in failed[0] or "match" in failed[0]


async def test_a_burst_over_tls_is_read_whole(tls_broker: TlsBroker, base_topic: str) -> None:
    """A burst over TLS is handed over whole too (the SSL layer may hold decrypted bytes the
    socket no longer shows as readable)."""
    inbox = Inbox()
    config = mqtt_config(tls_broker.host, tls_broker.port, base_topic, tls=tls(tls_broker.ca))
    topic = f"{base_topic}/tls-burst"
    async with running(config, inbox) as client:
        client.subscribe(topic, qos=0)
        await _until_subscribed(client, inbox, topic)
        await asyncio.to_thread(
            _publish_burst, tls_broker.host, tls_broker.port, topic, 300, tls_broker.ca
        )
        await inbox.wait_for(topic, b"299")
    assert len([m for m in inbox.messages if m.topic == topic and m.payload != PROBE]) == 300


async def test_tls_insecure_skip_verify_is_an_explicit_opt_in(
    tls_broker: TlsBroker, base_topic: str
) -> None:
    """With insecure_skip_verify the wrong CA is accepted (and only then)."""
    config = mqtt_config(
        tls_broker.host,
        tls_broker.port,
        base_topic,
        tls=tls(tls_broker.other_ca, insecure_skip_verify=True),
    )
    async with running(config) as client:
        assert client.connected


async def test_unreadable_tls_files_are_a_broker_error(tmp_path: Path, base_topic: str) -> None:
    """A CA file gone since the configuration was checked is reported as BrokerError at start,
    naming mqtt.tls (a missing one in the file is a configuration error, see test_config)."""
    gone = TlsConfig.model_construct(enabled=True, ca_file=tmp_path / "missing.crt")
    config = mqtt_config("127.0.0.1", 1, base_topic).model_copy(update={"tls": gone})
    client = MqttClient(config, loop=asyncio.get_running_loop(), on_message=lambda _m: None)
    with pytest.raises(BrokerError, match=r"mqtt\.tls"):
        client.start()
