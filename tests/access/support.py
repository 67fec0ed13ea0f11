"""Helpers for the access tests: a paho probe client, a fake broker back-end, a registry harness."""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.access.apps import AppChange, AppRegistry
from bridge.access.broker import BrokerIdentity, Enforcement, SyncReport
from bridge.errors import BrokerError
from bridge.events import CollectingAlerts, CollectingAudit
from bridge.store import Store

WAIT = 5.0


def now() -> datetime:
    return datetime.now(UTC)


class Probe:
    """A real MQTT client as an app (or the daemon) would be: connects, subscribes, collects.

    paho reconnects it after a kick and it re-subscribes its filters, like a real app would.
    """

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            protocol=mqtt.MQTTv5,
            client_id=f"probe-{username}-{uuid.uuid4().hex[:6]}",
        )
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.host, self.port = host, port
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connects: queue.Queue[bool] = queue.Queue()
        self.disconnected = threading.Event()
        self.filters: list[str] = []
        self._subacks: dict[int, bool] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))

    def connect(self) -> bool:
        """True if the broker accepted the login."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self.next_connect()

    def next_connect(self, timeout: float = WAIT) -> bool:
        return self.connects.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str) -> bool:
        """True if the broker granted the subscription."""
        self.filters.append(topic)
        _, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            self._cond.wait_for(lambda: mid in self._subacks, timeout=WAIT)
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT)

    def collect_until(self, sentinel: str, timeout: float = WAIT) -> list[str]:
        """Every topic received up to and including `sentinel`. A broker keeps one publisher's
        QoS 1 messages in order, so anything published before the sentinel and not in the
        list was never delivered."""
        seen = []
        while True:
            topic, _ = self.messages.get(timeout=timeout)
            seen.append(topic)
            if topic == sentinel:
                return seen

    def next_payload(self, topic: str, timeout: float = WAIT) -> bytes:
        """The payload of the next message on `topic` (messages on other topics are skipped)."""
        while True:
            got, payload = self.messages.get(timeout=timeout)
            if got == topic:
                return payload

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self.disconnected.clear()
            for topic in self.filters:
                client.subscribe(topic, qos=1)
        self.connects.put(not reason.is_failure)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self.disconnected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        with self._cond:
            self._subacks[mid] = not any(code.is_failure for code in codes)
            self._cond.notify_all()


@dataclass
class FakeEnforcement:
    """An Enforcement that records calls and fails on demand (`down = True`)."""

    mode: str = "fake"
    down: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    applied: dict[str, BrokerIdentity] = field(default_factory=dict)

    @property
    def hint(self) -> str | None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def stored_secret(self, password: str) -> str | None:
        return None

    def _check(self, op: str, app_id: str) -> None:
        self.calls.append((op, app_id))
        if self.down:
            raise BrokerError("broker unreachable (fake)")

    def create(
        self, identity: BrokerIdentity, password: str, desired: Sequence[BrokerIdentity]
    ) -> None:
        self._check("create", identity.app.id)
        self.applied[identity.app.id] = identity

    def update(self, identity: BrokerIdentity, desired: Sequence[BrokerIdentity]) -> None:
        self._check("update", identity.app.id)
        self.applied[identity.app.id] = identity

    def remove(self, app_id: str, desired: Sequence[BrokerIdentity]) -> None:
        self._check("remove", app_id)
        self.applied.pop(app_id, None)

    def sync(self, desired: Sequence[BrokerIdentity], removals: Sequence[str]) -> SyncReport:
        self._check("sync", "*")
        self.applied = {i.app.id: i for i in desired}
        return SyncReport()


@dataclass
class Harness:
    """A registry on a real SQLite file with collecting audit/alerts and recorded listener calls."""

    registry: AppRegistry
    store: Store
    audit: CollectingAudit
    alerts: CollectingAlerts
    changes: list[AppChange]
    sleeps: list[float]

    def audit_kinds(self) -> list[str]:
        return [r["kind"] for r in self.audit.records]

    def alert_kinds(self) -> list[str]:
        return [a.kind.value for a in self.alerts.alerts]


def make_harness(
    state_dir: Path, enforcement: Enforcement, *, reserved: Sequence[str] = ()
) -> Harness:
    store = Store.open(state_dir)
    audit, alerts, changes, sleeps = CollectingAudit(), CollectingAlerts(), [], []
    registry = AppRegistry(
        store=store,
        audit=audit,
        alerts=alerts,
        enforcement=enforcement,
        clock=now,
        reserved_ids=reserved,
        broker_backoff_s=0.5,
        sleep=sleeps.append,
    )
    registry.migrate()
    registry.subscribe(changes.append)
    return Harness(registry, store, audit, alerts, changes, sleeps)


class Hook(ThreadingHTTPServer):
    """A webhook receiver: answers `statuses` in turn (then 200), records every attempt."""

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.statuses = statuses
        self.attempts: queue.Queue[dict[str, Any]] = queue.Queue()
        self.hang = threading.Event()  # set: requests wait until released
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook/secret-id"


class HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.hang.is_set():
            self.server.release.wait(10)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.server.attempts.put({"status": status, "body": body})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None
