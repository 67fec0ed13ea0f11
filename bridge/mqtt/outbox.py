"""What the bridge publishes while the broker is away, held in order and bounded (pure).

paho would queue every QoS 1 message for as long as an outage lasts: hours of state updates on a
Raspberry Pi's memory, sent in order on reconnect before the current state. The MQTT adapter holds
them here instead and hands them to paho once connected again. A message that says only its newest
value matters (`Publish.latest_only`: the retained documents, discovery configs and clears, the
audit head) replaces the one held for its topic, in that one's place, so a topic costs one entry
however often it changes. Every other message (command results, alerts, the device-discovery stubs
and migrations Home Assistant must see in turn) is kept in order, at most `max_ordered` of them;
beyond that new ones are refused and counted.

Not thread-safe: the adapter calls it under its own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.mqtt.topics import Publish


@dataclass(slots=True)
class Held:
    """One held message and who waits for the broker to acknowledge it (see publish_confirmed):
    a replaced message's waiters move to its replacement, whose value is at least as new."""

    message: Publish
    waiters: list[Callable[[], None]] = field(default_factory=list)


class Outbox:
    """Messages waiting for a connection, oldest first; one replaceable entry per topic."""

    def __init__(self, max_ordered: int) -> None:
        self.max_ordered = max_ordered
        self._held: OrderedDict[int, Held] = OrderedDict()
        # topic -> key of its held latest-only entry, while nothing ordered on that topic follows
        # it (replacing it then would put the newest value before the ordered message).
        self._replaceable: dict[str, int] = {}
        self._ordered = 0
        self._next_key = 0
        self.replaced = 0  # latest-only messages that never went out: a newer one took their place
        self.refused = 0  # ordered messages turned away because `max_ordered` were held

    def __len__(self) -> int:
        return len(self._held)

    def add(self, message: Publish, waiter: Callable[[], None] | None = None) -> bool:
        """Hold `message`; False if it was refused (the ordered part is full)."""
        waiters = [waiter] if waiter is not None else []
        if message.latest_only:
            self._add_latest(message, waiters)
            return True
        if self._ordered >= self.max_ordered:
            self.refused += 1
            return False
        self._ordered += 1
        self._replaceable.pop(message.topic, None)  # a later value must go out after this one
        self._append(Held(message, waiters))
        return True

    def take(self, limit: int) -> list[Held]:
        """Remove and return up to `limit` held messages, oldest first."""
        taken: list[Held] = []
        while self._held and len(taken) < limit:
            key, held = self._held.popitem(last=False)
            if self._replaceable.get(held.message.topic) == key:
                del self._replaceable[held.message.topic]
            elif not held.message.latest_only:
                self._ordered -= 1
            taken.append(held)
        return taken

    def clear(self) -> int:
        """Forget everything held; returns how many messages that was."""
        count = len(self._held)
        self._held.clear()
        self._replaceable.clear()
        self._ordered = 0
        return count

    def _add_latest(self, message: Publish, waiters: list[Callable[[], None]]) -> None:
        key = self._replaceable.get(message.topic)
        if key is None:
            self._replaceable[message.topic] = self._append(Held(message, waiters))
            return
        earlier = self._held[key]
        self._held[key] = Held(message, [*earlier.waiters, *waiters])  # keeps its place
        self.replaced += 1

    def _append(self, held: Held) -> int:
        self._next_key += 1
        self._held[self._next_key] = held
        return self._next_key
