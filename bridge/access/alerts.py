"""AlertHub: the daemon's AlertSink. Each alert goes out as a JSON event on `<base>/bridge/event`
(never retained: an old alert must not greet every new subscriber) and to the optional webhook.

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


def event_message(topics: Topics, alert: Alert) -> Publish:
    """The MQTT event for an alert: `Alert.as_document()` as JSON, QoS 1, not retained."""
    return Publish(
        topic=topics.bridge_event, payload=encode(alert.as_document()), retain=False, qos=1
    )


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
                self._publisher.publish(event_message(self._topics, alert))
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
