"""A broker for the demo: one already reachable, else a Mosquitto we start, else an embedded one."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.errors import BrokerError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


@dataclass(frozen=True, slots=True)
class DemoBroker:
    host: str
    port: int
    kind: str  # "existing", "mosquitto" or "embedded"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_for(host: str, port: int) -> int:
    """The port a broker we start should listen on: the one asked for when it is on this machine
    and nothing holds it (so the printed commands and the owner's own clients find it where they
    were told), else any free one (a broker that refused us already has it)."""
    if host not in {"127.0.0.1", "localhost"}:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def accepts_anonymous(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when an MQTT broker at host:port accepts an anonymous connection."""
    accepted = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ownerlink-probe-{port}")
    client.on_connect = lambda *args: accepted.set() if not args[3].is_failure else None
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


def retained_payload(broker: DemoBroker, topic: str, timeout_s: float = 3.0) -> bytes | None:
    """The message the broker keeps retained on `topic`, or None (none, or no answer in time).
    A retained message follows the subscription's acknowledgement at once."""
    got: list[bytes] = []
    answered = threading.Event()
    client_id = f"ownerlink-demo-probe-{secrets.token_hex(3)}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)

    def on_connect(client: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(*_args: object) -> None:
        # Nothing retained: a moment of silence after the acknowledgement.
        timer = threading.Timer(0.3, answered.set)
        timer.daemon = True
        timer.start()

    def on_message(_c: object, _u: object, message: paho.MQTTMessage) -> None:
        if message.retain:
            got.append(bytes(message.payload))
            answered.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError:
        return None
    client.loop_start()
    try:
        answered.wait(timeout_s)
        return got[0] if got else None
    finally:
        client.disconnect()
        client.loop_stop()


def clear_retained(broker: DemoBroker, topics: Iterable[str], timeout_s: float = 5.0) -> int:
    """Delete retained messages (an empty retained publish each); returns how many were sent.
    Used when the demo shared a broker it did not start, so it leaves nothing behind there."""
    wanted = sorted(set(topics))
    if not wanted:
        return 0
    client_id = f"ownerlink-demo-clear-{secrets.token_hex(3)}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in wanted]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        return sum(1 for info in infos if info.is_published())
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.contextmanager
def demo_broker(host: str, port: int) -> Iterator[DemoBroker]:
    """Yield a broker: the one at host:port if it takes anonymous clients, else one we start."""
    if accepts_anonymous(host, port):
        yield DemoBroker(host, port, "existing")
        return
    binary = shutil.which("mosquitto") or next(
        (p for p in MOSQUITTO_PATHS if Path(p).exists()), None
    )
    if binary is not None:
        with _mosquitto(binary, port_for(host, port)) as broker:
            yield broker
        return
    with _embedded(port_for(host, port)) as broker:
        yield broker


@contextlib.contextmanager
def _mosquitto(binary: str, port: int) -> Iterator[DemoBroker]:
    with tempfile.TemporaryDirectory(prefix="ownerlink-demo-mqtt-") as folder:
        config = Path(folder) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        errors = Path(folder) / "mosquitto.err"
        with errors.open("wb") as sink:
            proc = subprocess.Popen(  # noqa: S603 - a fixed binary with our own config
                [binary, "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        try:
            _wait_listening(port, proc, errors)
            yield DemoBroker("127.0.0.1", port, "mosquitto")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _embedded(port: int) -> Iterator[DemoBroker]:
    """amqtt (pure Python) on its own thread and event loop, for machines without Mosquitto."""
    import logging

    from amqtt.broker import Broker

    # amqtt logs every probe and its own shutdown at INFO/ERROR; the demo's output is ours.
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.CRITICAL)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    broker = Broker(config, loop=loop)
    thread = threading.Thread(target=loop.run_forever, name="demo-broker", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(timeout=15)
    try:
        _wait_listening(port, None)
        yield DemoBroker("127.0.0.1", port, "embedded")
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def _wait_listening(
    port: int,
    proc: subprocess.Popen[bytes] | None,
    errors: Path | None = None,
    timeout: float = 10,
) -> None:
    """Return once the broker we started listens; BrokerError (one line for the owner, with
    Mosquitto's own last words) when it exits or never listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            said = _last_line(errors)
            why = f"mosquitto said {said!r}" if said else f"mosquitto exited {proc.returncode}"
            raise BrokerError(f"could not start a broker on 127.0.0.1:{port}: {why}")
        # An MQTT answer, not just a TCP one: whatever else took the port would also accept.
        if accepts_anonymous("127.0.0.1", port, timeout_s=0.5):
            return
        time.sleep(0.05)
    raise BrokerError(f"could not start a broker: nothing listened on 127.0.0.1:{port}")


def _last_line(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    lines = path.read_text(errors="replace").strip().splitlines()
    # Mosquitto starts each line with its epoch timestamp: "1796007543: Error: …".
    return re.sub(r"^\d+:\s*", "", lines[-1].strip()) if lines else ""
