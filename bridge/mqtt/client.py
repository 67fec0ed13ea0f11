"""The thin paho-mqtt adapter: connection, last will, remembered subscriptions; callbacks hand over.

paho runs its network loop on its own thread (`loop_start`). Every paho callback here only converts
what it was given and hands it to the asyncio loop with `loop.call_soon_threadsafe`; the one
exception is the connect callback, which also re-subscribes and publishes `online` because those are
paho calls that must happen before anything else on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import SecretStr

from bridge.config import MqttConfig, TlsConfig
from bridge.errors import BrokerError
from bridge.logs import get_logger
from bridge.mqtt.topics import Publish, Topics

ONLINE = "online"
OFFLINE = "offline"
# QoS 1 messages paho may hold while the broker is away or a burst is being written. Beyond this
# publish() drops and logs. Start-up of a 500-vehicle fleet queues ~35,000 small discovery
# messages in one go (most are clears), so the bound sits well above that; every retained
# document is re-sent in full after a reconnect anyway, so a longer queue only costs memory.
MAX_QUEUED_MESSAGES = 100_000
# Reason names a broker gives when it refuses our credentials: MQTT 5 codes 134/135, and the
# 3.1.1 CONNACK codes 4/5 as paho converts them into MQTT 5 reason codes.
CREDENTIAL_REFUSALS = frozenset({"bad user name or password", "not authorized"})
# How long stop() waits for the broker to acknowledge the retained `offline` before hanging up.
STOP_FLUSH_TIMEOUT_S = 3.0

log = get_logger(__name__)


class _QuietPahoFilter(logging.Filter):
    """Drops paho 2.2's ERROR lines for a connection that went away.

    paho logs "Client is not connected" at ERROR on every pass of its loop between a dropped
    connection and the next attempt (and on a clean stop), and "failed to receive on socket"
    when the broker resets the connection: routine, and we log connection changes ourselves.
    Everything else paho says (exceptions caught in callbacks) is kept.
    """

    ROUTINE = ("Client is not connected", "failed to receive on socket")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.ROUTINE)


_paho_log = logging.getLogger("bridge.mqtt.paho")
_paho_log.addFilter(_QuietPahoFilter())


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message received from the broker, as handed to the event loop."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    received_monotonic: float


class MqttClient:
    """Owns one paho client: connects, reconnects with backoff, restores subscriptions.

    `publish` may be called from any thread and never blocks. The connection state (`connected`,
    `reconnects`, `connect_failures`, `last_error`) is updated on the event loop, so code running
    on the loop sees a consistent view. Implements `PublishSink`.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[InboundMessage], None],
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_connect_failed: Callable[[str], None] | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics(base=config.base_topic, discovery_prefix=config.discovery_prefix)
        self._loop = loop
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_connect_failed = on_connect_failed
        self._username = username if username is not None else config.username
        self._password = password if password is not None else config.password
        self._paho: paho.Client | None = None
        # Touched by paho's thread (connect callback) and the loop (subscribe): guarded.
        self._subscriptions: dict[str, int] = {}
        self._lock = threading.Lock()
        # Message id → what to call once the broker has the message (see publish_confirmed).
        self._confirmations: dict[int, Callable[[], None]] = {}
        self._confirming = 0  # publish_confirmed calls inside client.publish() right now
        self._early: set[int] = set()  # message ids acknowledged while one was
        self._confirm_lock = threading.Lock()  # a leaf: never held while calling into paho
        self._online = asyncio.Event()
        self._ever_connected = False
        self._stopping = False
        self.reconnects = 0
        self.connect_failures = 0
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background; a broker that is down is retried with backoff."""
        if self._paho is not None:
            raise BrokerError("the MQTT client is already started")
        client = self._build()
        # connect_async only records the target: the first TCP connect happens on paho's thread,
        # whose loop_forever(retry_first_connection=True) retries it like any later reconnect.
        client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive,
            clean_start=self._clean_start(),
        )
        client.loop_start()
        self._stopping = False
        self._paho = client
        log.info(
            "mqtt connecting",
            host=self.config.host,
            port=self.config.port,
            protocol=self.config.protocol,
            tls=self.config.tls.enabled,
        )

    async def stop(self) -> None:
        """Publish `offline` (retained), disconnect cleanly and join paho's thread."""
        client = self._paho
        if client is None:
            return
        self._stopping = True
        if client.is_connected():
            info = client.publish(self.topics.bridge_state, OFFLINE, qos=1, retain=True)
            await asyncio.to_thread(_wait_published, info, STOP_FLUSH_TIMEOUT_S)
        # A clean DISCONNECT tells the broker to discard the last will: `offline` above replaces it.
        client.disconnect()
        # loop_stop joins the network thread, which may sit in a connect attempt for a few seconds.
        await asyncio.to_thread(client.loop_stop)
        self._paho = None
        self._set_offline()
        log.info("mqtt stopped")

    async def wait_connected(self, within_s: float | None = None) -> None:
        """Return once connected; raise BrokerError after `within_s` seconds without one."""
        try:
            async with asyncio.timeout(within_s):
                await self._online.wait()
        except TimeoutError as exc:
            raise BrokerError(
                f"no MQTT connection to {self.config.host}:{self.config.port} within {within_s}s"
                f" ({self.last_error or 'no answer'})"
            ) from exc

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect (as seen from the loop)."""
        return self._online.is_set()

    # -- publishing and subscribing ----------------------------------------------------------

    def publish(self, message: Publish) -> None:
        """Queue one message; never blocks and may be called from any thread."""
        client = self._require_started()
        # paho 2.x publish() only queues under its own locks; the network thread does the writing.
        # While disconnected, QoS 1 messages wait in paho's queue and go out after the next CONNACK
        # (after our connect callback); QoS 0 messages are dropped.
        try:
            info = client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except ValueError as exc:  # paho's answer to a wildcard/empty topic or a bad QoS
            raise BrokerError(f"cannot publish to {message.topic!r}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.warning("mqtt queue full, message dropped", topic=message.topic)

    def publish_confirmed(self, message: Publish, on_confirmed: Callable[[], None]) -> None:
        """Queue one message like `publish`; `on_confirmed()` runs on the event loop once the
        broker acknowledged it (QoS 1 PUBACK, QoS 0 written). Never called for a message that
        was dropped or was still unacknowledged when we stopped."""
        client = self._require_started()
        # paho may read the PUBACK on its thread before publish() returns us the message id. Our
        # lock must not be held across publish(): paho calls on_publish holding its own locks,
        # which publish() takes too. So acknowledgements that arrive while a call is inside
        # publish() are kept aside (`_early`) and matched once the id is known.
        with self._confirm_lock:
            self._confirming += 1
        info = None
        try:
            info = client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except ValueError as exc:
            raise BrokerError(f"cannot publish to {message.topic!r}: {exc}") from exc
        finally:
            acked = self._after_publish(info, on_confirmed)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.warning("mqtt queue full, message dropped", topic=message.topic)
        elif acked:
            on_confirmed()  # acknowledged before publish() returned (we are on the loop)

    def _after_publish(
        self, info: paho.MQTTMessageInfo | None, on_confirmed: Callable[[], None]
    ) -> bool:
        """Register `on_confirmed` for the message id, or say it was acknowledged already."""
        with self._confirm_lock:
            self._confirming -= 1
            acked = info is not None and info.mid in self._early
            if info is not None and not acked and info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._confirmations[info.mid] = on_confirmed
            if not self._confirming:
                self._early.clear()
        return acked

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        with self._lock:
            self._subscriptions[topic_filter] = qos
        client = self._paho
        # A connect callback running concurrently has either seen the new filter, or the state is
        # already CONNECTED here: a subscription is never missed (at worst it is sent twice).
        if client is not None and client.is_connected():
            self._send_subscribe(client, topic_filter, qos)

    def _send_subscribe(self, client: paho.Client, topic_filter: str, qos: int) -> None:
        if self.config.protocol == "5":
            # Retain As Published: without it the broker clears the retain flag on messages it
            # forwards live, so a command published *with* retain while we are connected would
            # look like a fresh one. With it, the flag reaches us and such a command is refused.
            # (MQTT 3.1.1 has no such option; there only retained-on-subscribe is flagged.)
            options = SubscribeOptions(qos=qos, retainAsPublished=True)
            client.subscribe(topic_filter, options=options)
        else:
            client.subscribe(topic_filter, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        """Forget a subscription and drop it at the broker."""
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
        client = self._paho
        if client is not None and client.is_connected():
            client.unsubscribe(topic_filter)

    # -- building the paho client ----------------------------------------------------------

    def _build(self) -> paho.Client:
        v5 = self.config.protocol == "5"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            # 3.1.1: a clean session, so commands queued for us while we were away are never
            # delivered from a persistent session. MQTT 5 rejects this argument (see _clean_start).
            clean_session=None if v5 else True,
        )
        client.enable_logger(_paho_log)
        # paho re-raises exceptions from callbacks by default, which would kill its network thread
        # and with it every reconnect; ours do not raise, but a bug must not silently end MQTT.
        client.suppress_exceptions = True
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        # Annotated as int, but paho only doubles and sleeps with these, so fractions work.
        client.reconnect_delay_set(
            cast(int, self.config.reconnect_min_s), cast(int, self.config.reconnect_max_s)
        )
        client.will_set(self.topics.bridge_state, OFFLINE, qos=1, retain=True)
        if self._username is not None:
            secret = self._password.get_secret_value() if self._password else None
            client.username_pw_set(self._username, secret)
        if self.config.tls.enabled:
            client.tls_set_context(tls_context(self.config.tls))
        self._attach_callbacks(client)
        return client

    def _clean_start(self) -> bool | Literal[3]:
        # MQTT 5: clean start on *every* connect (paho's default is only the first one) and no
        # session expiry, so the broker keeps nothing for us between connections.
        return True if self.config.protocol == "5" else paho.MQTT_CLEAN_START_FIRST_ONLY

    def _attach_callbacks(self, client: paho.Client) -> None:
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_connect_fail = self._paho_connect_fail
        client.on_message = self._paho_message
        client.on_publish = self._paho_published

    def _require_started(self) -> paho.Client:
        client = self._paho
        if client is None:
            raise BrokerError("the MQTT client is not started")
        return client

    # -- paho callbacks (network thread): convert and hand over only -----------------------

    def _paho_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, reason: Any, _properties: Any
    ) -> None:
        # paho calls on_connect for refusals too; only the reason code tells them apart.
        if reason.is_failure:
            self._hand_over(self._refused, str(reason))
            return
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        # Subscriptions are not guaranteed to survive a reconnect (clean start drops them). They go
        # out before `online`, so anyone who sees `online` knows we are listening again.
        for topic_filter, qos in subscriptions:
            self._send_subscribe(client, topic_filter, qos)
        client.publish(self.topics.bridge_state, ONLINE, qos=1, retain=True)
        self._hand_over(self._connected, bool(flags.session_present))

    def _paho_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        # Also called after a refused CONNACK, when we were never connected.
        self._hand_over(self._disconnected, str(reason))

    def _paho_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        # paho passes no error, but calls this from inside its `except OSError:` block, so the
        # exception being handled is the only place the cause (refused, TLS verify) can be read.
        self._hand_over(self._failed, _describe(sys.exc_info()[1]))

    def _paho_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        try:
            topic = message.topic  # paho decodes lazily; a topic that is not UTF-8 raises here
        except UnicodeDecodeError:
            return
        inbound = InboundMessage(
            topic=topic,
            payload=bytes(message.payload),
            retain=bool(message.retain),
            qos=int(message.qos),
            received_monotonic=time.monotonic(),
        )
        self._hand_over(self._on_message, inbound)

    def _paho_published(
        self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _properties: Any
    ) -> None:
        with self._confirm_lock:
            confirmed = self._confirmations.pop(mid, None)
            if confirmed is None and self._confirming:
                self._early.add(mid)  # perhaps the message a publish_confirmed is waiting on
        if confirmed is not None:
            self._hand_over(confirmed)

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the loop is closed, we are shutting down and nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    # -- connection state (event loop) -----------------------------------------------------

    def _connected(self, session_present: bool) -> None:
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.last_error = None
        self._online.set()
        log.info(
            "mqtt connected",
            host=self.config.host,
            port=self.config.port,
            reconnects=self.reconnects,
        )
        if session_present:
            log.warning("mqtt broker resumed a session despite clean start")
        if self._on_connect is not None:
            self._on_connect()

    def _disconnected(self, reason: str) -> None:
        was_connected = self._online.is_set()
        self._set_offline()
        if not was_connected or self._stopping:
            return
        log.warning("mqtt connection lost, reconnecting", reason=reason)
        if self._on_disconnect is not None:
            self._on_disconnect()

    def _refused(self, reason: str) -> None:
        if reason.lower() in CREDENTIAL_REFUSALS:
            log.error(
                "mqtt broker refused our credentials; check mqtt.username and mqtt.password",
                reason=reason,
                username=self._username or "(none)",
            )
        else:
            log.error("mqtt broker refused the connection", reason=reason)
        self._failed(f"refused by the broker: {reason}")

    def _failed(self, description: str) -> None:
        self.connect_failures += 1
        self.last_error = description
        log.debug(
            "mqtt connection attempt failed", error=description, failures=self.connect_failures
        )
        if self._on_connect_failed is not None:
            self._on_connect_failed(description)

    def _set_offline(self) -> None:
        self._online.clear()


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSL context from the config: CA and server name verified unless insecure is asked for."""
    cafile = str(tls.ca_file) if tls.ca_file is not None else None
    try:
        # With a CA file, only that CA is trusted; without one, the system's.
        context = ssl.create_default_context(cafile=cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise BrokerError(f"mqtt.tls: cannot load the certificates: {exc}") from exc
    if tls.insecure_skip_verify:
        log.warning("mqtt TLS verification is off (mqtt.tls.insecure_skip_verify)")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _wait_published(info: paho.MQTTMessageInfo, timeout: float) -> None:
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError) as exc:  # not queued, or the connection went away meanwhile
        log.debug("mqtt offline message not confirmed", error=str(exc))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection failed"
    return f"{type(exc).__name__}: {exc}"
