"""AlertHub: the daemon's AlertSink. Each alert goes out as a JSON event on `<base>/bridge/event`
(never retained: an old alert must not greet every new subscriber) and to the optional webhook.

`<base>/bridge/event` is the owner's feed: it names apps, their refusals and their grants, so the
broker lets only the Home Assistant app read it. An alert about one app is also published on
`<base>/app/<app>/event`, which only that app may read: each app hears about itself and no other.

`emit` never blocks: the publish sink queues for the MQTT adapter and the webhook sender queues
for its own task. A failure to hand an alert over is logged and never reaches the caller, whose
change (a revocation, a refused command) has already happened.
"""

from __future__ import annotations

from bridge.access.webhook import WebhookSender
from bridge.events import Alert
from bridge.logs import get_logger
from bridge.mqtt.topics import Publish, PublishSink, Topics, encode

log = get_logger(__name__)


def event_messages(topics: Topics, alert: Alert) -> list[Publish]:
    """The MQTT events for an alert: `Alert.as_document()` as JSON, QoS 1, not retained, on the
    owner's topic and, when the alert names an app, on that app's own event topic."""
    payload = encode(alert.as_document())
    destinations = [topics.bridge_event]
    own = topics.app_event(alert.app) if alert.app is not None else None
    if own is not None:
        destinations.append(own)
    return [Publish(topic=topic, payload=payload, retain=False, qos=1) for topic in destinations]


class AlertHub:
    """Fans alerts out to MQTT and the webhook. `start()`/`stop()` run the webhook task."""

    def __init__(
        self, *, topics: Topics, publisher: PublishSink | None, webhook: WebhookSender | None
    ) -> None:
        self._topics = topics
        self._publisher = publisher
        self._webhook = webhook

    def emit(self, alert: Alert) -> None:
        log.info(
            "alert",
            event_type=alert.kind.value,
            app=alert.app,
            vehicle=alert.vehicle,
            detail=alert.message,
        )
        if self._publisher is not None:
            try:
                for message in event_messages(self._topics, alert):
                    self._publisher.publish(message)
            except Exception:  # the alert is in the log line above; never fail the caller
                log.exception("alert_publish_failed", event_type=alert.kind.value)
        if self._webhook is not None:
            self._webhook.submit(alert.as_document())

    async def start(self) -> None:
        if self._webhook is not None:
            await self._webhook.start()

    async def stop(self) -> None:
        if self._webhook is not None:
            await self._webhook.stop()
