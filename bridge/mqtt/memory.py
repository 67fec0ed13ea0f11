"""What discovery this bridge left retained on the broker, remembered across restarts.

Without it, every start had to clear everything an earlier run *could* have published: both
layouts, every entity a vehicle could ever have (about 69 messages per vehicle, 35,000 for a fleet
of 500, nearly all of them clears of topics that never existed). And a vehicle taken out of the
config while the bridge was stopped kept its entities in Home Assistant for good, since nothing
cleared topics for a vehicle the bridge no longer knew.

So the discovery manager writes down, before it sends, what each vehicle's (and the bridge's own)
discovery may leave retained, and on the next start clears exactly what is written down and no
longer wanted. While clears are on their way the record holds both the old and the new (either
may be what the broker has); it shrinks to the new once the broker acknowledged them, so a crash
or a lost connection in between means the clears are simply sent again next time.
Only the part a later clear needs is kept: the config topics, and for a device-layout document the
platform of each component (a vanished component is cleared with a `{"p": platform}` stub). With no
record at all (the first start with this state directory) the manager clears the full range of
what could exist, as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.commands.storage import reading, writing
from bridge.mqtt.topics import Publish
from bridge.store import Store

MIGRATIONS = (
    # One row per key (vehicle slug, or the bridge's own): its retained config topics as JSON.
    "CREATE TABLE discovery_retained (key TEXT PRIMARY KEY, messages TEXT NOT NULL)",
)


def shadow(messages: Sequence[Publish]) -> str:
    """The part of published discovery that a later clear needs, as JSON (pure). A topic given
    more than once (what was retained, and what replaces it) keeps the union of its components."""
    kept: dict[str, dict[str, str] | None] = {}
    for message in messages:
        if not message.payload:
            continue  # a clear leaves nothing retained
        platforms = _platforms(message.payload)
        earlier = kept.get(message.topic)
        kept[message.topic] = {**earlier, **platforms} if earlier and platforms else platforms
    return json.dumps(list(kept.items()), separators=(",", ":"))


def from_shadow(text: str) -> list[Publish]:
    """Stand-ins for what `shadow` kept: enough for `discovery.removals` to clear it (pure).

    Raises ValueError on text `shadow` did not write."""
    rows = json.loads(text)
    if not _is_shadow(rows):
        raise ValueError("not a list of retained discovery topics")
    out = []
    for topic, platforms in rows:
        body: dict[str, Any] = {}
        if platforms is not None:
            body["cmps"] = {key: {"p": platform} for key, platform in platforms.items()}
        out.append(Publish(topic, json.dumps(body), retain=True))
    return out


def _is_shadow(rows: Any) -> bool:
    return isinstance(rows, list) and all(
        isinstance(row, list)
        and len(row) == 2
        and isinstance(row[0], str)
        and (row[1] is None or isinstance(row[1], dict))
        for row in rows
    )


def _platforms(payload: str | bytes) -> dict[str, str] | None:
    """component key → platform of a device-layout document; None for any other payload."""
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    components = document.get("cmps") if isinstance(document, dict) else None
    if not isinstance(components, dict):
        return None
    return {
        key: str(value["p"])
        for key, value in components.items()
        if isinstance(value, dict) and "p" in value
    }


class RetainedDiscovery:
    """The `DiscoveryMemory` the daemon uses: one SQLite row per key."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # What each row holds now: a start that changes nothing rewrites no row.
        self._rows: dict[str, str] = {}

    def load(self) -> dict[str, list[Publish]] | None:
        """Everything remembered, or None when nothing ever was (a first start). A row that
        cannot be read makes the whole memory untrusted (None): clearing too much is safe."""
        self.store.migrate("discovery", MIGRATIONS)
        rows = reading(
            self.store, "discovery memory", "SELECT key, messages FROM discovery_retained", ()
        )
        if not rows:
            return None
        try:
            earlier = {str(key): from_shadow(str(text)) for key, text in rows}
        except (ValueError, TypeError):
            return None
        self._rows = {str(key): str(text) for key, text in rows}
        return earlier

    def save(self, key: str, messages: Sequence[Publish]) -> None:
        text = shadow(messages)
        if self._rows.get(key) == text:
            return
        with writing(self.store, "discovery memory") as conn:
            conn.execute(
                "INSERT INTO discovery_retained (key, messages) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET messages = excluded.messages",
                (key, text),
            )
        self._rows[key] = text
