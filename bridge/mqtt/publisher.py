"""The diffing state publisher and the discovery manager: they decide what to send, a sink sends it.

Both run on the event loop (not thread-safe) and hand `Publish` values to a `PublishSink` (the MQTT
client, or a list in tests). Wiring in the daemon, roughly:

    discovery = DiscoveryManager(client, topics, mode=..., ha_app=..., ha_scopes=..., ...)
    states = StatePublisher(client, topics, location_allowed=..., discovery=discovery)
    client = MqttClient(config, loop=loop, on_message=route, on_connect=states.republish_all)
    # route(): a message on topics.ha_status goes to states.handle_ha_status(message.payload)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from bridge.logs import get_logger
from bridge.model import Location, Scope, VehicleState, to_document
from bridge.mqtt.discovery import (
    DiscoveryMode,
    Origin,
    VehicleDescription,
    build_bridge_discovery,
    build_vehicle_discovery,
    migrations,
    removals,
    vehicle_discovery_universe,
)
from bridge.mqtt.topics import Publish, PublishSink, StateKind, Topics, encode

ONLINE = "online"
OFFLINE = "offline"
# The API reports no accuracy for a position; a car's GNSS fix is typically good to about 10 m.
# Home Assistant uses gps_accuracy when it decides whether the car is inside a zone.
DEFAULT_GPS_ACCURACY_M = 10
# Home Assistant restarting makes every bridge republish at once; a random delay spreads them out.
BIRTH_DELAY_S = (0.5, 3.0)
# The key under which the bridge's own discovery is kept (cannot clash with a vehicle slug).
_BRIDGE = "\0bridge"
# Written to the discovery memory once a start has synced every key (see clear_forgotten).
_COMPLETE = "\0complete"

log = get_logger(__name__)


# -- documents (pure) --------------------------------------------------------------------------


def _when(updated_at: datetime | None) -> str | None:
    return updated_at.isoformat() if updated_at is not None else None


def status_document(state: VehicleState) -> dict[str, Any]:
    """`<base>/<vehicle>/status`: what read:status reveals, with the car's last upload time."""
    return {**to_document(state.status), "updated_at": _when(state.updated_at)}


def health_document(state: VehicleState) -> dict[str, Any]:
    """`<base>/<vehicle>/health`: what read:health reveals."""
    return {**to_document(state.health), "updated_at": _when(state.updated_at)}


def location_document(location: Location, updated_at: datetime | None) -> dict[str, Any]:
    """`<base>/<vehicle>/location`, shaped for a Home Assistant device_tracker's attributes."""
    return {
        **to_document(location),
        "gps_accuracy": DEFAULT_GPS_ACCURACY_M,
        "updated_at": _when(updated_at),
    }


def _retained(topic: str, payload: str) -> Publish:
    """A retained document (or its clear): only the newest one matters, so one still waiting for
    the broker is replaced by a newer one rather than sent first (`bridge.mqtt.outbox`)."""
    return Publish(topic, payload, retain=True, latest_only=True)


def _replaceable(messages: Sequence[Publish]) -> list[Publish]:
    """Discovery configs and clears are latest-only. Device-payload stubs (which remove a
    component) and migration markers are not: Home Assistant acts on seeing them, in turn."""
    return [replace(message, latest_only=True) for message in messages]


# -- states ------------------------------------------------------------------------------------


class StatePublisher:
    """Publishes vehicle documents (retained) only when they change; republishes on demand."""

    def __init__(
        self,
        sink: PublishSink,
        topics: Topics,
        *,
        location_allowed: Callable[[], bool],
        discovery: DiscoveryManager | None = None,
        rng: random.Random | None = None,
        birth_delay_s: tuple[float, float] = BIRTH_DELAY_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sink = sink
        self._topics = topics
        self._location_allowed = location_allowed
        self._discovery = discovery
        self._rng = rng or random.Random()
        self._birth_delay_s = birth_delay_s
        self._sleep = sleep
        # topic -> the last message sent there; the diff and the source of every republish.
        self._sent: dict[str, Publish] = {}
        # vehicle -> its latest location document, kept even while no app may see it.
        self._locations: dict[str, Publish] = {}
        self._vehicles: set[str] = set()
        self._birth_task: asyncio.Task[None] | None = None

    def update(self, vehicle: str, state: VehicleState) -> None:
        """Publish the vehicle's status, health and (if allowed) location documents that changed."""
        self._vehicles.add(vehicle)
        self._send_changed(self._document(vehicle, "status", status_document(state)))
        self._send_changed(self._document(vehicle, "health", health_document(state)))
        if state.location is not None:
            document = location_document(state.location, state.updated_at)
            self._locations[vehicle] = self._document(vehicle, "location", document)
        self._apply_location_policy(vehicle)

    def set_availability(self, vehicle: str, online: bool) -> None:
        """`<base>/<vehicle>/availability`: is the car's API reachable and authorised."""
        self._vehicles.add(vehicle)
        payload = ONLINE if online else OFFLINE
        self._send_changed(_retained(self._topics.availability(vehicle), payload))

    def publish_budget(self, vehicle: str, document: Mapping[str, Any]) -> None:
        """`<base>/<vehicle>/budget`: calls used and left today, the next poll, the polling mode."""
        self._send_changed(self._document(vehicle, "budget", document))

    def location_policy_changed(self) -> None:
        """Call when read:location is granted or withdrawn: publish or clear every location now."""
        for vehicle in sorted(self._vehicles):
            self._apply_location_policy(vehicle)

    def forget_vehicle(self, vehicle: str) -> None:
        """Clear every retained document of a vehicle that is no longer bridged."""
        kinds: tuple[StateKind, ...] = ("status", "health", "location", "budget")
        topics = [self._topics.state(vehicle, kind) for kind in kinds]
        for topic in (*topics, self._topics.availability(vehicle)):
            self._sent.pop(topic, None)
            self._sink.publish(_retained(topic, ""))
        self._locations.pop(vehicle, None)
        self._vehicles.discard(vehicle)

    def republish_states(self) -> None:
        """Send every last known document again, locations cleared first if no app may see them."""
        self.location_policy_changed()
        for message in list(self._sent.values()):
            self._sink.publish(message)

    def republish_all(self) -> None:
        """After a (re)connect: discovery first (so the entities exist), then every state."""
        if self._discovery is not None:
            self._discovery.republish()
        self.republish_states()

    def handle_ha_status(self, payload: bytes) -> None:
        """Home Assistant's birth message: republish everything after a short random delay."""
        if payload.strip() != ONLINE.encode():
            return
        if self._birth_task is not None and not self._birth_task.done():
            return  # one republish already pending covers this birth too
        delay = self._rng.uniform(*self._birth_delay_s)
        self._birth_task = asyncio.get_running_loop().create_task(self._republish_after(delay))

    async def stop(self) -> None:
        """Cancel a pending birth republish."""
        task, self._birth_task = self._birth_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _republish_after(self, delay: float) -> None:
        await self._sleep(delay)
        log.info("home assistant came online, republishing", delay_s=round(delay, 2))
        self.republish_all()

    def _apply_location_policy(self, vehicle: str) -> None:
        if self._location_allowed():
            latest = self._locations.get(vehicle)
            if latest is not None:
                self._send_changed(latest)
            return
        # No app may see where the car is: make sure no retained copy is left for anyone, including
        # one an earlier run published (hence a clear on first sight, not only after a location).
        self._send_changed(_retained(self._topics.state(vehicle, "location"), ""))

    def _document(self, vehicle: str, kind: StateKind, document: Mapping[str, Any]) -> Publish:
        return _retained(self._topics.state(vehicle, kind), encode(document))

    def _send_changed(self, message: Publish) -> None:
        if self._sent.get(message.topic) != message:
            self._send(message)

    def _send(self, message: Publish) -> None:
        self._sent[message.topic] = message
        self._sink.publish(message)


# -- discovery ---------------------------------------------------------------------------------


class DiscoveryMemory(Protocol):
    """What discovery earlier runs left retained, per key (`bridge.mqtt.memory`)."""

    def load(self) -> dict[str, list[Publish]] | None:
        """Per key what is retained; None when nothing was ever written down."""
        ...

    def save(self, key: str, messages: Sequence[Publish]) -> None:
        """`messages` is what is retained for `key` from now on (raises StateError)."""
        ...


class DiscoveryManager:
    """Keeps the published discovery per vehicle in step with the Home Assistant app's grant.

    With a `memory`, what may be left retained is written down before it is sent (and narrowed
    once the broker acknowledged the clears), and the next start clears exactly that, including
    the discovery of vehicles no longer configured (`clear_forgotten`); without one, or on the
    first start, it clears everything an earlier run could have left.
    """

    def __init__(
        self,
        sink: PublishSink,
        topics: Topics,
        *,
        mode: DiscoveryMode,
        ha_app: str | None,
        ha_scopes: frozenset[Scope],
        stepup_scopes: frozenset[Scope],
        origin: Origin | None = None,
        memory: DiscoveryMemory | None = None,
    ) -> None:
        self._sink = sink
        self._memory = memory
        # What earlier runs left, per key, until this run has synced that key (None: unknown).
        self._earlier: dict[str, list[Publish]] | None = None
        self._topics = topics
        self._mode = mode
        self._ha_app = ha_app
        self._ha_scopes = ha_scopes
        self._stepup_scopes = stepup_scopes
        self._origin = origin or Origin()
        self._vehicles: dict[str, VehicleDescription] = {}
        # key (vehicle slug or _BRIDGE) -> what is retained on the broker for it now.
        self._published: dict[str, list[Publish]] = {}

    def start(self) -> None:
        """Publish the bridge's own device (and clear what an earlier run may have left)."""
        self._earlier = self._load()
        self._sync(_BRIDGE)

    def clear_forgotten(
        self,
        on_forgotten: Callable[[str], None] | None = None,
        *,
        bridged_before: Iterable[str] = (),
    ) -> None:
        """Clear what an earlier run left for vehicles not added this time (call once every
        configured vehicle has been added); `on_forgotten(slug)` clears the rest of theirs.

        `bridged_before` names vehicles the state database says an earlier run bridged. They
        count only when nothing was written down (a version before the record, or a first start
        cut short): such a vehicle taken out of the config then has its full range cleared,
        where it used to keep its entities, and its last position, on the broker for good."""
        earlier = self._earlier if self._earlier is not None else self._guessed(bridged_before)
        self._earlier = {}
        for key, previous in sorted(earlier.items()):
            if key in self._published or key in self._vehicles or key in (_COMPLETE, _BRIDGE):
                continue
            self._clear(key, previous)
            if on_forgotten is not None:
                on_forgotten(key)
        # Only now does the record cover every key: a start that died half-way through its
        # first sync must not leave a partial record that later starts would trust.
        self._remember(_COMPLETE, [])

    def _guessed(self, slugs: Iterable[str]) -> dict[str, list[Publish]]:
        """The full range of every named vehicle not added this time (nothing written down)."""
        return {
            slug: vehicle_discovery_universe(
                vehicle=VehicleDescription(slug=slug, name=slug),
                ha_app=self._ha_app or "-",
                topics=self._topics,
            )
            for slug in sorted(set(slugs) - self._vehicles.keys())
        }

    def add_vehicle(self, vehicle: VehicleDescription) -> None:
        """Offer a vehicle (or update its description) to Home Assistant."""
        self._vehicles[vehicle.slug] = vehicle
        self._sync(vehicle.slug)

    def remove_vehicle(self, slug: str) -> None:
        """Remove every entity of a vehicle from Home Assistant."""
        previous = self._published.pop(slug, [])
        self._vehicles.pop(slug, None)
        self._clear(slug, previous)

    def set_ha_scopes(self, scopes: frozenset[Scope]) -> None:
        """The Home Assistant app's scopes changed: add what is now allowed, remove what is not."""
        self.set_ha_app(self._ha_app, scopes)

    def set_ha_app(self, ha_app: str | None, scopes: frozenset[Scope]) -> None:
        """Another app (or none) is now Home Assistant; None withdraws all discovery."""
        self._ha_app, self._ha_scopes = ha_app, scopes
        # Sorted: the bridge ("\0bridge") first, so vehicles' `via_device` already exists.
        for key in sorted(self._published.keys() | self._vehicles.keys()):
            self._sync(key)

    def republish(self) -> None:
        """Send the current discovery again (after a reconnect or Home Assistant's birth)."""
        for messages in self._published.values():
            self._send(_replaceable(messages))

    def current(self, slug: str) -> list[Publish]:
        """What is published for a vehicle now (for inspection and tests)."""
        return list(self._published.get(slug, []))

    def _sync(self, key: str) -> None:
        current = self._build(key)
        previous = self._published.get(key)
        # Without a record the full range is guessed: mostly topics that never existed, which
        # are cleared, never migrated.
        guessed = previous is None and self._earlier is None
        if previous is None:
            # First time this run: what a previous run left (other scopes, other layout).
            previous = self._left_behind(key)
        elif previous == current:
            return
        before, after = ([], []) if guessed else migrations(previous, current)
        moved = {message.topic for message in after}
        clears = removals([m for m in previous if m.topic not in moved], current)
        self._published[key] = current
        if not (clears or after):
            self._remember(key, current)  # nothing to take away: safe to write down at once
            self._send(_replaceable(current))
            return
        # Until the broker has the clears, what is retained may be either: remember both.
        self._remember(key, [*previous, *current])
        # `clears` holds empty payloads (replaceable) and device stubs (to be seen in turn).
        removing = [replace(m, latest_only=not m.payload) for m in clears]
        # A migrated entity's old topic is cleared after its marker, before the device payload:
        # Home Assistant has then let go of the old topic (the entity stays in its registry). A
        # clear after the device payload reaches an entity now bound to the device topic, and
        # Home Assistant logs a "conflicting MQTT discovery message" warning for each one.
        messages = [*before, *_replaceable(after), *removing, *_replaceable(current)]
        self._send(messages, then=lambda: self._settled(key, current))

    def _clear(self, key: str, previous: list[Publish]) -> None:
        """Clear everything `previous` left; forget it once the broker has the clears."""

        def cleared() -> None:
            if key not in self._published:  # not offered again meanwhile
                self._remember(key, [])

        self._send(_replaceable(removals(previous, [])), then=cleared)

    def _settled(self, key: str, current: list[Publish]) -> None:
        """The broker has what was sent for `key`: unless a later change is on its way, the
        record can shrink to what is retained now."""
        if self._published.get(key) is current:
            self._remember(key, current)

    def _left_behind(self, key: str) -> list[Publish]:
        if self._earlier is None:
            return self._universe(key)  # nothing written down: anything that could exist
        return self._earlier.pop(key, [])

    def _load(self) -> dict[str, list[Publish]] | None:
        if self._memory is None:
            return None
        try:
            earlier = self._memory.load()
        except Exception:
            log.exception("discovery memory unreadable; clearing everything that could exist")
            return None
        return earlier if earlier is not None and _COMPLETE in earlier else None

    def _remember(self, key: str, messages: list[Publish]) -> None:
        if self._memory is None:
            return
        try:
            self._memory.save(key, messages)
        except Exception:  # discovery still goes out; only the next start's clearing is at risk
            log.exception("could not write down the discovery sent", key=key.strip("\0"))

    def _build(self, key: str) -> list[Publish]:
        if self._ha_app is None:
            return []
        if key == _BRIDGE:
            return build_bridge_discovery(topics=self._topics, mode=self._mode, origin=self._origin)
        return build_vehicle_discovery(
            vehicle=self._vehicles[key],
            scopes=self._ha_scopes,
            ha_app=self._ha_app,
            topics=self._topics,
            mode=self._mode,
            stepup_scopes=self._stepup_scopes,
            origin=self._origin,
        )

    def _universe(self, key: str) -> list[Publish]:
        if key == _BRIDGE:
            modes: tuple[DiscoveryMode, ...] = ("device", "entity")
            return [
                message
                for mode in modes
                for message in build_bridge_discovery(topics=self._topics, mode=mode)
            ]
        return vehicle_discovery_universe(
            vehicle=self._vehicles[key], ha_app=self._ha_app or "-", topics=self._topics
        )

    def _send(self, messages: list[Publish], then: Callable[[], None] | None = None) -> None:
        """Publish `messages` in order; `then()` once the broker acknowledged the last of them,
        when the sink can tell (`MqttClient.publish_confirmed`), else never."""
        if not messages:
            if then is not None:
                then()
            return
        confirming = getattr(self._sink, "publish_confirmed", None) if then else None
        for message in messages[:-1]:
            self._sink.publish(message)
        if confirming is not None:
            confirming(messages[-1], then)
        else:
            self._sink.publish(messages[-1])
