"""A small paho client for Mosquitto's dynamic-security API and one-shot publishes.

Requests go to `$CONTROL/dynamic-security/v1` as `{"commands": [...]}`; the plugin answers on
`$CONTROL/dynamic-security/v1/response` with one `responses` entry per command, each carrying the
`correlationData` we sent. paho's callbacks only decode and resolve futures; the caller's thread
waits on them, so nothing blocks paho's network thread.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import MqttConfig, TlsConfig
from bridge.errors import BrokerError
from bridge.logs import get_logger
from bridge.mqtt.topics import Publish

log = get_logger(__name__)

REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom to connect; the password never reaches a log line (repr=False)."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    client_id: str
    tls: TlsConfig = field(default_factory=TlsConfig)
    protocol: str = "5"
    keepalive: int = 30

    @classmethod
    def from_config(
        cls, mqtt_config: MqttConfig, *, username: str, password: str, client_id: str
    ) -> Connection:
        return cls(
            host=mqtt_config.host,
            port=mqtt_config.port,
            username=username,
            password=password,
            client_id=client_id,
            tls=mqtt_config.tls,
            protocol=mqtt_config.protocol,
            keepalive=mqtt_config.keepalive,
        )


@dataclass(frozen=True, slots=True)
class DynsecReply:
    """One command's answer: `error` is the plugin's message (e.g. "Client not found") or None."""

    command: str
    error: str | None
    data: Mapping[str, Any]


def make_client(conn: Connection) -> mqtt.Client:
    """A configured, unconnected paho client (protocol, login, TLS)."""
    protocol = mqtt.MQTTv5 if conn.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=conn.client_id, protocol=protocol)
    client.username_pw_set(conn.username, conn.password)
    if conn.tls.enabled:
        _configure_tls(client, conn.tls)
    return client


def _configure_tls(client: mqtt.Client, tls: TlsConfig) -> None:
    client.tls_set(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
    )
    if tls.insecure_skip_verify:
        client.tls_insecure_set(True)


class DynsecControl:
    """One admin connection, opened on first use and kept while it stays up."""

    def __init__(self, *, connection: Connection, timeout_s: float = 5.0) -> None:
        self._conn = connection
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._ready = threading.Event()
        self._failure: str | None = None
        self._pending: dict[str, Future[DynsecReply]] = {}

    def execute(self, commands: Sequence[Mapping[str, Any]]) -> list[DynsecReply]:
        """Send commands in one request; their replies in order. Raises BrokerError."""
        if not commands:
            return []
        client = self._connected_client()
        batch, futures = self._register(commands)
        info = client.publish(REQUEST_TOPIC, json.dumps({"commands": batch}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._forget(batch)
            raise BrokerError(f"cannot send dynamic-security request: {mqtt.error_string(info.rc)}")
        return [self._await(fut, batch[i]) for i, fut in enumerate(futures)]

    def stop(self) -> None:
        """Disconnect and join paho's thread."""
        with self._lock:
            self._close()

    # -- connection ---------------------------------------------------------------------------

    def _connected_client(self) -> mqtt.Client:
        """The ready client, connecting first if needed. Holding the lock throughout means
        concurrent callers share one connection attempt."""
        with self._lock:
            if self._client is not None and not self._ready.is_set():
                # Dropped since the last request: reconnect now instead of waiting out paho's
                # reconnect backoff, which can be many seconds after a broker restart.
                self._close()
            if self._client is None:
                self._client = self._open()
                if not self._ready.wait(self._timeout) or self._failure:
                    reason = self._failure or f"no answer from {self._conn.host}:{self._conn.port}"
                    self._close()
                    raise BrokerError(f"broker admin connection failed: {reason}")
            return self._client

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._ready.clear()
        self._fail_pending("admin connection closed")

    def _open(self) -> mqtt.Client:
        self._ready.clear()
        self._failure = None
        client = make_client(self._conn)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        try:
            client.connect(self._conn.host, self._conn.port, keepalive=self._conn.keepalive)
        except (OSError, ValueError) as exc:
            raise BrokerError(
                f"cannot reach the broker at {self._conn.host}:{self._conn.port}: {exc}"
            ) from exc
        client.loop_start()
        return client

    # -- paho callbacks (network thread: decode and hand over only) -----------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            # A refused admin login will not get better by retrying; stop paho's reconnects.
            self._failure = f"login as {self._conn.username!r} refused ({reason})"
            self._ready.set()
            client.disconnect()
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        if any(code.is_failure for code in reasons):
            self._failure = "the admin login may not subscribe to the dynamic-security responses"
        self._ready.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._ready.clear()
        self._fail_pending(f"disconnected from the broker ({reason})")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            log.warning("dynsec_bad_response", size=len(message.payload))
            return
        for item in responses:
            future = self._pending.pop(str(item.get("correlationData")), None)
            if future is not None and not future.done():
                future.set_result(
                    DynsecReply(
                        command=str(item.get("command")),
                        error=item.get("error"),
                        data=item.get("data") or {},
                    )
                )

    # -- requests -----------------------------------------------------------------------------

    def _register(
        self, commands: Sequence[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[Future[DynsecReply]]]:
        batch: list[dict[str, Any]] = []
        futures: list[Future[DynsecReply]] = []
        for command in commands:
            correlation = uuid.uuid4().hex
            future: Future[DynsecReply] = Future()
            self._pending[correlation] = future
            batch.append({**command, "correlationData": correlation})
            futures.append(future)
        return batch, futures

    def _await(self, future: Future[DynsecReply], command: Mapping[str, Any]) -> DynsecReply:
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            self._forget([command])
            raise BrokerError(
                f"no answer to {command['command']} within {self._timeout:g}s "
                "(is the dynamic-security plugin loaded?)"
            ) from None

    def _forget(self, batch: Sequence[Mapping[str, Any]]) -> None:
        for command in batch:
            self._pending.pop(str(command["correlationData"]), None)

    def _fail_pending(self, reason: str) -> None:
        for key in list(self._pending):
            future = self._pending.pop(key, None)
            if future is not None and not future.done():
                future.set_exception(BrokerError(reason))


def publish_once(conn: Connection, messages: Sequence[Publish], *, timeout_s: float = 5.0) -> None:
    """Connect, publish, wait for the acknowledgements and disconnect (for one-off CLI runs)."""
    if not messages:
        return
    client = make_client(conn)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    with running(client, conn):
        if not connected.wait(timeout_s) or refused:
            raise BrokerError(f"broker login as {conn.username!r} failed: {refused or 'timeout'}")
        _publish_all(client, messages, timeout_s)


@contextmanager
def running(client: mqtt.Client, conn: Connection) -> Iterator[mqtt.Client]:
    """`client` (its callbacks set) connected, its network loop on a thread, for the block;
    BrokerError when the broker cannot be reached at all."""
    try:
        client.connect(conn.host, conn.port, keepalive=conn.keepalive)
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot reach the broker at {conn.host}:{conn.port}: {exc}") from exc
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_all(client: mqtt.Client, messages: Sequence[Publish], timeout_s: float) -> None:
    infos = [client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in messages]
    try:
        for info in infos:
            info.wait_for_publish(timeout_s)
    except (ValueError, RuntimeError) as exc:
        raise BrokerError(f"publish failed: {exc}") from exc
    if not all(info.is_published() for info in infos):
        raise BrokerError("the broker did not acknowledge a publish in time")
