"""The outbox that holds messages while the broker is away: one entry per latest-only topic,
order kept, the ordered part bounded."""

from __future__ import annotations

from bridge.mqtt.outbox import Outbox
from bridge.mqtt.topics import Publish


def doc(topic: str, payload: str) -> Publish:
    return Publish(topic, payload, retain=True, latest_only=True)


def sent(outbox: Outbox) -> list[tuple[str, str | bytes]]:
    return [(held.message.topic, held.message.payload) for held in outbox.take(1_000_000)]


def test_a_newer_latest_only_message_replaces_the_held_one_in_its_place() -> None:
    """Thousands of values of one document cost one entry, sent where the first one stood."""
    outbox = Outbox(max_ordered=10)
    outbox.add(doc("ol/car/status", "0"))
    outbox.add(Publish("ol/app/ha/car/result", "r1"))
    for n in range(1, 5000):
        outbox.add(doc("ol/car/status", str(n)))
    assert len(outbox) == 2 and outbox.replaced == 4999
    assert sent(outbox) == [("ol/car/status", "4999"), ("ol/app/ha/car/result", "r1")]
    assert len(outbox) == 0


def test_an_ordered_message_on_a_topic_is_never_overtaken_by_an_older_value() -> None:
    """A migration marker between two configs of its topic: the later config goes after it, so
    the broker ends with the newest value and Home Assistant still sees the marker."""
    outbox = Outbox(max_ordered=10)
    outbox.add(doc("ha/sensor/car/range/config", "old"))
    outbox.add(Publish("ha/sensor/car/range/config", '{"migrate_discovery":true}', retain=True))
    outbox.add(doc("ha/device/car/config", "device"))
    outbox.add(doc("ha/sensor/car/range/config", ""))
    outbox.add(doc("ha/device/car/config", "device again"))  # a republish: keeps its place
    assert sent(outbox) == [
        ("ha/sensor/car/range/config", "old"),
        ("ha/sensor/car/range/config", '{"migrate_discovery":true}'),
        ("ha/device/car/config", "device again"),
        ("ha/sensor/car/range/config", ""),
    ]


def test_ordered_messages_beyond_the_bound_are_refused_and_counted() -> None:
    """Results and alerts are kept in order up to the bound; latest-only ones are never refused."""
    outbox = Outbox(max_ordered=3)
    accepted = [outbox.add(Publish("ol/bridge/event", str(n))) for n in range(5)]
    assert accepted == [True, True, True, False, False] and outbox.refused == 2
    assert outbox.add(doc("ol/car/status", "x"))
    assert [payload for _topic, payload in sent(outbox)] == ["0", "1", "2", "x"]
    assert outbox.add(Publish("ol/bridge/event", "after"))  # room again once sent


def test_waiters_of_a_replaced_message_move_to_its_replacement() -> None:
    """A confirmation awaited for a replaced message comes with the newer value's."""
    outbox = Outbox(max_ordered=3)
    calls: list[str] = []
    outbox.add(doc("ol/x", "1"), lambda: calls.append("first"))
    outbox.add(doc("ol/x", "2"), lambda: calls.append("second"))
    (held,) = outbox.take(10)
    for waiter in held.waiters:
        waiter()
    assert held.message.payload == "2" and calls == ["first", "second"]


def test_clear_forgets_everything_and_frees_the_bound() -> None:
    """stop() drops what is held; the bound counts from zero again."""
    outbox = Outbox(max_ordered=1)
    outbox.add(Publish("ol/e", "1"))
    outbox.add(doc("ol/d", "1"))
    assert outbox.clear() == 2 and len(outbox) == 0
    assert outbox.add(Publish("ol/e", "2"))
