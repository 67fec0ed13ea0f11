"""The thin paho-mqtt adapter: connection, last will, remembered subscriptions; callbacks hand over.

paho runs its network loop on its own thread (`loop_start`). Every paho callback here only converts
what it was given and hands it to the asyncio loop with `loop.call_soon_threadsafe`; the one
exception is the connect callback, which also re-subscribes and publishes `online` because those are
paho calls that must happen before anything else on a fresh connection.

While the broker is away, messages are not handed to paho (which would queue every one of them for
the whole outage) but held in an `Outbox`: one entry per latest-only topic, a bounded number of
others. After the next CONNACK and the `on_connect` callback (whose republish replaces what is
held for the same topics), the held messages go to paho in order, a batch per loop iteration;
until the last batch is out, new messages join the outbox behind them.
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
from bridge.mqtt.outbox import Held, Outbox
from bridge.mqtt.topics import Publish, Topics

ONLINE = "online"
OFFLINE = "offline"
# QoS 1 messages paho may hold while a burst is being written (while the broker is away they wait
# in our outbox instead, see MAX_HELD_ORDERED). Beyond this publish() drops and logs. Start-up of
# a 500-vehicle fleet queues ~35,000 small discovery messages in one go (most are clears), so the
# bound sits well above that.
MAX_QUEUED_MESSAGES = 100_000
# Messages that are not latest-only (command results, alerts, discovery stubs and migrations) held
# while the broker is away; beyond this new ones are refused and logged. Latest-only messages are
# held once per topic and never refused. Results are published again by the next start if lost.
MAX_HELD_ORDERED = 10_000
# Held messages handed to paho per event-loop iteration after a reconnect.
FLUSH_BATCH = 500
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
        # What is published while the broker is away waits here (see the module docstring).
        # `_direct`: messages go straight to paho (connected, and the outbox flushed); `_link_up`:
        # paho has a connection. Both set on paho's thread or the loop, under `_outbox_lock` (a
        # leaf, like `_confirm_lock`).
        self._outbox = Outbox(MAX_HELD_ORDERED)
        self._outbox_lock = threading.Lock()
        self._direct = False
        self._link_up = False
        self._flush_generation = 0  # a new connection's flush ends an earlier one's
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
        with self._outbox_lock:
            self._direct = self._link_up = False
            dropped = self._outbox.clear()
        if dropped:  # final results among them go out again at the next start (delivery.py)
            log.warning("mqtt stopped with messages still held for the broker", n=dropped)
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
        if not self._held(message, None):
            self._send(client, message)

    def publish_confirmed(self, message: Publish, on_confirmed: Callable[[], None]) -> None:
        """Queue one message like `publish`; `on_confirmed()` runs on the event loop once the
        broker acknowledged it (QoS 1 PUBACK, QoS 0 written), or acknowledged a newer message
        on the topic of a latest-only one that replaced it unsent. Never called for a message
        that was dropped or was still unacknowledged when we stopped."""
        client = self._require_started()
        if not self._held(message, on_confirmed):
            self._send_confirmed(client, message, on_confirmed)

    def queue_depth(self) -> QueueDepth:
        """How many messages wait for the broker: held by us, and given to paho unacknowledged."""
        with self._outbox_lock:
            held = len(self._outbox)
        client = self._paho
        # paho 2.2 has no public count; its dict of unacknowledged QoS>0 messages is the truth.
        in_paho = len(client._out_messages) if client is not None else 0
        return QueueDepth(held=held, in_paho=in_paho)

    def _held(self, message: Publish, waiter: Callable[[], None] | None) -> bool:
        """Hold `message` in the outbox unless messages go straight to paho (False then)."""
        _check_publishable(message)  # now, not when the outbox is flushed to a caller long gone
        with self._outbox_lock:
            if self._direct:
                return False
            if self._outbox.add(message, waiter):
                return True
            refused = self._outbox.refused
        log.warning("mqtt outbox full, message dropped", topic=message.topic, dropped=refused)
        return True

    def _send(self, client: paho.Client, message: Publish) -> None:
        # paho 2.x publish() only queues under its own locks; the network thread does the writing.
        # Messages given to paho just before it noticed a lost connection stay in its queue and
        # go out after the next CONNACK, before our outbox (so in order).
        try:
            info = client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        except ValueError as exc:  # paho's answer to a wildcard/empty topic or a bad QoS
            raise BrokerError(f"cannot publish to {message.topic!r}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.warning("mqtt queue full, message dropped", topic=message.topic)

    def _send_confirmed(
        self, client: paho.Client, message: Publish, on_confirmed: Callable[[], None]
    ) -> None:
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

    def _release(self, client: paho.Client, held: Held) -> None:
        """Hand one held message to paho (on the loop, while flushing the outbox)."""
        waiters = held.waiters
        try:
            if not waiters:
                self._send(client, held.message)
            elif len(waiters) == 1:
                self._send_confirmed(client, held.message, waiters[0])
            else:
                self._send_confirmed(client, held.message, lambda: _call_all(waiters))
        except BrokerError:  # checked when it was published: only a paho surprise gets here
            log.exception("mqtt held message could not be sent", topic=held.message.topic)

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
        with self._outbox_lock:
            self._link_up = True
        self._hand_over(self._connected, bool(flags.session_present))

    def _paho_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        # Also called after a refused CONNACK, when we were never connected. From now on, until
        # the next connection's flush, messages wait in the outbox instead of paho's queue.
        with self._outbox_lock:
            self._direct = self._link_up = False
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
        self._flush_generation += 1
        try:
            if self._on_connect is not None:
                self._on_connect()  # its republish replaces what the outbox holds for a topic
        finally:
            self._flush(self._flush_generation)

    def _flush(self, generation: int) -> None:
        """Hand a batch of held messages to paho, then yield to the loop and go on; once the
        outbox is empty, new messages go straight to paho. Stops if the connection is lost."""
        client = self._paho
        if client is None or generation != self._flush_generation:
            return
        with self._outbox_lock:
            if not self._link_up:
                return  # the next connection flushes what is left
            batch = self._outbox.take(FLUSH_BATCH)
            self._direct = not batch
            replaced = self._outbox.replaced if not batch else 0
            self._outbox.replaced -= replaced
        if replaced:
            log.info("mqtt outbox sent; older values were replaced unsent", replaced=replaced)
        if not batch:
            return
        for held in batch:
            self._release(client, held)
        self._loop.call_soon(self._flush, generation)

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


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Messages waiting for the broker (see MqttClient.queue_depth)."""

    held: int  # in our outbox while the broker is away
    in_paho: int  # handed to paho and not yet acknowledged


def _check_publishable(message: Publish) -> None:
    """paho's own checks on a topic and QoS, made when a message is published even if it is
    held: a wildcard or empty topic, or a QoS other than 0-2, is the caller's error."""
    topic = message.topic.encode()
    if not topic or b"+" in topic or b"#" in topic or len(topic) > 65535:
        raise BrokerError(f"cannot publish to {message.topic!r}: not a topic to publish to")
    if message.qos not in (0, 1, 2):
        raise BrokerError(f"cannot publish to {message.topic!r}: QoS {message.qos}")


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


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
