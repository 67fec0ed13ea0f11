"""AlertHub and the webhook sender, against a real HTTP server in a thread."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from bridge.access.alerts import AlertHub
from bridge.access.webhook import WebhookSender
from bridge.events import Alert, AlertKind
from bridge.mqtt.topics import Publish, Topics
from tests.access.support import Hook

TOPICS = Topics(base="ol")


def alert(n: int = 0) -> Alert:
    return Alert(
        kind=AlertKind.APP_ADDED,
        message=f"app nr{n} was added",
        ts=datetime(2025, 1, 1, tzinfo=UTC),
        app=f"nr{n}",
        details={"scopes": []},
    )


def sender(hook: Hook, retries: int = 5, **kw: Any) -> WebhookSender:
    return WebhookSender(url=hook.url, timeout_s=2, retries=retries, backoff_s=0.01, **kw)


async def attempts(hook: Hook, count: int) -> list[dict[str, Any]]:
    return [await asyncio.to_thread(hook.attempts.get, timeout=5) for _ in range(count)]


class ListSink:
    def __init__(self) -> None:
        self.messages: list[Publish] = []

    def publish(self, message: Publish) -> None:
        self.messages.append(message)


def test_hub_publishes_alerts_as_unretained_json_events() -> None:
    """Each alert becomes a JSON event on <base>/bridge/event, QoS 1, never retained, and the
    same on the app's own <base>/app/<app>/event when it names an app."""
    sink = ListSink()
    AlertHub(topics=TOPICS, publisher=sink, webhook=None).emit(alert())
    assert [m.topic for m in sink.messages] == ["ol/bridge/event", "ol/app/nr0/event"]
    for message in sink.messages:
        assert not message.retain and message.qos == 1
        assert json.loads(message.payload) == alert().as_document()


def test_a_failing_publisher_does_not_reach_the_caller() -> None:
    """An alert that cannot be handed to MQTT is logged; emit still returns normally."""

    class Broken:
        def publish(self, message: Publish) -> None:
            raise RuntimeError("adapter stopped")

    AlertHub(topics=TOPICS, publisher=Broken(), webhook=None).emit(alert())


async def test_webhook_retries_with_backoff_until_delivered(hook: Hook) -> None:
    """A webhook failing twice (503, then 429) gets the same document on the third attempt."""
    hook.statuses[:] = [503, 429]
    webhook = sender(hook)
    hub = AlertHub(topics=TOPICS, publisher=None, webhook=webhook)
    await hub.start()
    hub.emit(alert())
    seen = await attempts(hook, 3)
    await hub.stop()
    assert [a["status"] for a in seen] == [503, 429, 200]
    assert all(a["body"] == alert().as_document() for a in seen)
    assert webhook.delivered == 1 and webhook.failed == 0


async def test_webhook_gives_up_after_the_configured_retries(hook: Hook) -> None:
    """With retries=2, three failed attempts are made and the alert is counted as failed."""
    hook.statuses[:] = [500, 500, 500, 500]
    webhook = sender(hook, retries=2)
    await webhook.start()
    webhook.submit(alert().as_document())
    await attempts(hook, 3)
    await webhook.stop()
    assert hook.attempts.empty() and webhook.failed == 1 and webhook.delivered == 0


async def test_client_errors_are_not_retried(hook: Hook) -> None:
    """A 400 means the body will never be accepted: one attempt only."""
    hook.statuses[:] = [400]
    webhook = sender(hook)
    await webhook.start()
    webhook.submit(alert().as_document())
    await attempts(hook, 1)
    await webhook.stop()
    assert hook.attempts.empty() and webhook.failed == 1


async def test_emit_never_blocks_and_the_queue_is_bounded(hook: Hook) -> None:
    """With the webhook hanging, emit returns at once and the queue drops the oldest extras."""
    hook.hang.set()
    webhook = sender(hook, queue_size=10)
    hub = AlertHub(topics=TOPICS, publisher=None, webhook=webhook)
    await hub.start()

    def burst() -> float:
        started = time.monotonic()
        for n in range(50):
            hub.emit(alert(n))
        return time.monotonic() - started

    took = await asyncio.to_thread(burst)
    assert took < 1.5  # one alert waiting on the hung hook would take its 2 s timeout
    assert webhook.dropped >= 39  # 50 alerts, 10 queued, at most one in flight
    hook.release.set()
    await hub.stop()
    assert webhook.delivered == 50 - webhook.dropped


async def test_alerts_raised_before_start_are_delivered(hook: Hook) -> None:
    """Alerts emitted before the loop runs wait in the queue and go out after start."""
    webhook = sender(hook)
    webhook.submit(alert(1).as_document())
    await webhook.start()
    [seen] = await attempts(hook, 1)
    await webhook.stop()
    assert seen["body"]["app"] == "nr1"


async def test_a_webhook_answering_a_byte_at_a_time_is_given_up_at_the_timeout() -> None:
    """`timeout_s` is a deadline for the whole request, not per read: an endpoint trickling its
    answer is abandoned after it, and the next alert is sent rather than held behind it."""
    arrived: list[float] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.append(time.monotonic())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):  # each byte well inside the timeout; the whole answer far beyond it
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(b"x")
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    webhook = WebhookSender(url=f"http://127.0.0.1:{port}/hook", timeout_s=0.5, retries=0)
    await webhook.start()
    start = time.monotonic()
    webhook.submit(alert(1).as_document())
    webhook.submit(alert(2).as_document())
    while len(arrived) < 2 and time.monotonic() - start < 10:
        await asyncio.sleep(0.02)
    await webhook.stop(drain_timeout_s=0.1)
    server.close()
    assert len(arrived) == 2 and arrived[1] - start < 3.0  # 4 s of trickle, cut at 0.5 s
    assert webhook.failed >= 1
