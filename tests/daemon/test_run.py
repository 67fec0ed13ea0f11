"""The daemon in-process against the real simulator and a real broker: health, metrics, safety."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.access.control import Connection
from bridge.audit.anchor import read_retained
from bridge.audit.chain import read_records
from bridge.audit.log import AuditLog, audit_directory
from bridge.cli import main
from bridge.config import Settings
from bridge.daemon import Anchor, Daemon
from bridge.demo.broker import DemoBroker
from bridge.demo.run import demo_config, login
from bridge.errors import AccessError, ConfigError, StateError
from bridge.mqtt.topics import Topics
from bridge.simulator import FaultKind, SimClock, Simulator, serve_in_thread
from bridge.store import DB_NAME, Store
from tests.conftest import BrokerAddress


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(
        vehicles=1, seed=3, auto_consent=True, admin=True, clock=SimClock(speed=1)
    )
    with serve_in_thread(simulator) as url:
        yield simulator, url


def settings_for(tmp_path: Path, url: str, broker: BrokerAddress, base: str) -> Settings:
    return Settings(**document_for(tmp_path, url, broker, base))


def document_for(tmp_path: Path, url: str, broker: BrokerAddress, base: str) -> dict[str, Any]:
    document = demo_config(
        tmp_path / "state", url, DemoBroker(broker.host, broker.port, "test"), 0, {}
    )
    document["mqtt"]["base_topic"] = base
    document["vehicles"] = {}
    document["logging"] = {"level": "warning", "format": "json"}
    return document


@pytest.fixture
async def daemon(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> AsyncIterator[Daemon]:
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    running = Daemon(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def publish_retained(broker: BrokerAddress, topic: str, payload: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


async def test_healthz_and_metrics_answer(daemon: Daemon) -> None:
    """/healthz says ready once online; /metrics carries polls, budget, commands and MQTT."""
    assert daemon.web is not None
    base = f"http://127.0.0.1:{daemon.web.port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(50):
            health = await client.get("/healthz")
            if health.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert health.status_code == 200
        assert health.json()["ready"] is True
        metrics = (await client.get("/metrics")).text
        # What a DNS-rebinding page would ask for: refused, before the page is even built.
        rebound = await client.get("/metrics", headers={"host": "rebind.attacker.example"})
        assert rebound.status_code == 400
    for name in (
        "ownerlink_up 1.0",
        "ownerlink_mqtt_connected 1.0",
        "ownerlink_mqtt_held_messages 0.0",
        "ownerlink_mqtt_unacknowledged_messages",
        "ownerlink_budget_used",
        "ownerlink_provider_calls_total",
        "ownerlink_audit_head_seq",
    ):
        assert name in metrics


async def test_the_owner_page_is_built_on_its_first_request_not_for_health_checks(
    daemon: Daemon,
) -> None:
    """/healthz and /metrics answer without the page; the first page request builds it, and
    the page then works as usual (its login form is served)."""
    from bridge.web.lazy import LazyApp

    assert daemon.web is not None
    lazy = daemon.web.app
    assert isinstance(lazy, LazyApp)
    base = f"http://127.0.0.1:{daemon.web.port}"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/metrics")).status_code == 200
        await client.get("/healthz")
        assert not lazy.built
        page = await client.get("/login")
        assert lazy.built
    assert page.status_code == 200
    assert "password" in page.text.lower()


async def test_retained_unlock_waiting_at_start_is_never_executed(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """A retained UNLOCK sitting on the broker when the daemon starts is refused, not run."""
    simulator, url = sim
    settings = settings_for(tmp_path, url, broker, base_topic)
    await login(settings)
    vehicle_slug = await _first_slug(settings)
    topic = f"{base_topic}/app/homeassistant/{vehicle_slug}/cmd/lock"
    publish_retained(broker, topic, json.dumps({"action": "LOCK", "id": "retained-1"}))
    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: _decisions(settings), 20)  # after the anchor check's grace
        decisions = _decisions(settings)
    finally:
        await running.stop()
        publish_retained(broker, topic, "")
    assert [d["reason"] for d in decisions] == ["retained"]
    assert all(not v.executed for v in simulator.vehicles)


async def _first_slug(settings: Settings) -> str:
    from bridge.vehicles import derived_slug

    return derived_slug("sim", _sim_vehicle_ids(settings)[0])


def _sim_vehicle_ids(settings: Settings) -> list[str]:
    base = settings.accounts["sim"].api_base_url or ""
    root = base.split("/api/")[0]
    vehicles: list[dict[str, Any]] = httpx.get(f"{root}/sim/vehicles").json()["vehicles"]
    return [v["vehicle_id"] for v in vehicles]


def _decisions(settings: Settings) -> list[dict[str, Any]]:
    path = settings.state_dir / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "command.decision"]


async def test_retained_command_published_while_running_is_refused(
    daemon: Daemon, broker: BrokerAddress, base_topic: str
) -> None:
    """A command published with the retain flag while the daemon listens is refused as retained
    (MQTT 5 Retain As Published), so it cannot be replayed to the daemon on a later restart."""
    slug = daemon.vehicles[0].slug
    topic = f"{base_topic}/app/homeassistant/{slug}/cmd/lock"
    publish_retained(broker, topic, json.dumps({"action": "LOCK", "id": "live-retained"}))
    try:
        await _until(lambda: _decisions(daemon.settings), 20)
    finally:
        publish_retained(broker, topic, "")
    assert [d["reason"] for d in _decisions(daemon.settings)] == ["retained"]


async def test_owner_pages_render_with_the_real_parts(daemon: Daemon) -> None:
    """After logging in, every owner page renders (200) from the daemon's real parts."""
    import re

    from bridge.demo.run import set_owner_password

    password = set_owner_password(daemon.settings)
    assert daemon.web is not None
    base = f"http://127.0.0.1:{daemon.web.port}"
    async with httpx.AsyncClient(base_url=base, follow_redirects=True) as client:
        form = (await client.get("/login")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        login = await client.post(
            "/login", data={"csrf": csrf.group(1), "next": "/apps", "password": password}
        )
        assert login.status_code == 200
        for page in ("/apps", "/vehicles", "/audit", "/security", "/apps/homeassistant"):
            response = await client.get(page)
            assert response.status_code == 200, (page, response.text[:300])
        # The budget chart is drawn against the configured hourly cap, from the real budget.
        cap = daemon.settings.budget.calls_per_hour * len(daemon.settings.accounts)
        assert f"{cap} an hour" in (await client.get("/vehicles")).text


class Listener:
    """Every message under a filter while it listens: retained ones at subscribe, then live."""

    def __init__(self, broker: BrokerAddress, topic_filter: str) -> None:
        self.retained: dict[str, bytes] = {}
        self.live: list[tuple[str, bytes]] = []
        # Subscribed after the filter: the broker queues the filter's retained messages, and
        # forwards what others published before our sentinel, ahead of the sentinel itself.
        self._sentinel = f"ownerlink-test-sentinel/{uuid.uuid4().hex}"
        self._settled = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self._message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe([(topic_filter, 0), (self._sentinel, 0)])
        self._client.loop_start()

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if message.topic == self._sentinel:
            self._settled.set()
        elif message.retain:
            self.retained[message.topic] = message.payload
        else:
            self.live.append((message.topic, message.payload))

    async def close(self, *, settle: bool = True) -> None:
        """Stop listening; with `settle`, once every retained message and everything published
        before this call has arrived (a sentinel of ours came back after them)."""
        if settle:
            self._client.publish(self._sentinel, b"x")
            assert await asyncio.to_thread(self._settled.wait, 15), "the sentinel never came"
        self._client.loop_stop()
        self._client.disconnect()


def _devices(topics: Any) -> set[str]:
    return {topic.split("/")[2] for topic in topics}


async def _run_once(settings: Settings, listener_filter: str, broker: BrokerAddress) -> Listener:
    listener = Listener(broker, listener_filter)
    running = Daemon(settings)
    await running.start()
    await running.stop()
    await listener.close()
    return listener


async def _discovery_document(
    tmp_path: Path, url: str, broker: BrokerAddress, base_topic: str
) -> tuple[dict[str, Any], str]:
    """A config document whose discovery goes under its own prefix, logged in; and the prefix."""
    prefix = f"{base_topic}-ha"
    document = document_for(tmp_path, url, broker, base_topic)
    document["mqtt"]["discovery_prefix"] = prefix
    await login(Settings(**document))
    return document, prefix


async def test_a_restart_clears_vehicles_taken_out_of_the_config_and_nothing_more(
    tmp_path: Path, broker: BrokerAddress, base_topic: str
) -> None:
    """The next start knows what the last one left retained: it clears a vehicle taken out of
    the config, and no longer clears the whole range of topics that could ever have existed."""
    simulator = Simulator(vehicles=2, seed=5, auto_consent=True, admin=True)
    with serve_in_thread(simulator) as url:
        document, prefix = await _discovery_document(tmp_path, url, broker, base_topic)
        settings = Settings(**document)
        first = await _run_once(settings, f"{prefix}/#", broker)
        again = await _run_once(settings, f"{prefix}/#", broker)
        document["vehicles"] = {"kept": {"account": "sim", "id": _sim_vehicle_ids(settings)[0]}}
        narrowed = await _run_once(Settings(**document), f"{prefix}/#", broker)
        after = Listener(broker, f"{prefix}/#")
        await after.close()
    clears = [[topic for topic, payload in run.live if not payload] for run in (first, again)]
    assert len(clears[0]) > 100  # the first start with this state clears the full range
    assert clears[1] == []
    assert len(_devices(again.retained)) == 3  # the bridge and both vehicles
    bridge = Topics(base=base_topic).bridge_node_id
    assert _devices(after.retained) == {bridge, "ownerlink_kept"}
    gone = _devices(again.retained) - {bridge}
    assert all(not payload for topic, payload in narrowed.live if topic.split("/")[2] in gone), (
        "the vehicles no longer configured were only cleared"
    )


async def test_a_restart_clears_the_retained_state_of_vehicles_taken_out_of_the_config(
    tmp_path: Path, broker: BrokerAddress, base_topic: str
) -> None:
    """A vehicle taken out of the config loses its retained status, location and the rest at
    the next start, so no client finds a sold car's last position; the kept one keeps its own."""
    simulator = Simulator(vehicles=2, seed=5, auto_consent=True, admin=True)
    with serve_in_thread(simulator) as url:
        document, _prefix = await _discovery_document(tmp_path, url, broker, base_topic)
        ids = _sim_vehicle_ids(Settings(**document))
        document["vehicles"] = {
            "kept": {"account": "sim", "id": ids[0]},
            "sold": {"account": "sim", "id": ids[1]},
        }
        document["apps"]["tracker"] = {"scopes": ["read:status", "read:location"]}
        running = Daemon(Settings(**document))
        await running.start()
        listener = Listener(broker, f"{base_topic}/+/+")
        await _until(
            lambda: (
                {f"{base_topic}/{v}/location" for v in ("kept", "sold")}
                <= listener.retained.keys() | {t for t, _ in listener.live}
            ),
            30,
        )
        await running.stop()
        await listener.close()
        document["vehicles"] = {"kept": document["vehicles"]["kept"]}
        await _run_once(Settings(**document), f"{base_topic}/#", broker)
        after = Listener(broker, f"{base_topic}/+/+")
        await after.close()
    left = {topic.split("/")[1] for topic, payload in after.retained.items() if payload}
    assert left == {"bridge", "kept"}, (
        f"retained after the vehicle left the config: {after.retained.keys()}"
    )


async def test_an_upgrade_from_before_the_discovery_record_clears_a_vehicle_taken_out(
    tmp_path: Path, broker: BrokerAddress, base_topic: str
) -> None:
    """Versions before the discovery record kept none: an owner who upgrades and takes a car out
    of the config in the same step finds its entities and its retained state cleared, since the
    database shows the car was polled; the kept car and the bridge keep theirs."""
    simulator = Simulator(vehicles=2, seed=5, auto_consent=True, admin=True)
    with serve_in_thread(simulator) as url:
        document, prefix = await _discovery_document(tmp_path, url, broker, base_topic)
        ids = _sim_vehicle_ids(Settings(**document))
        document["vehicles"] = {
            "kept": {"account": "sim", "id": ids[0]},
            "sold": {"account": "sim", "id": ids[1]},
        }
        await _run_once(Settings(**document), f"{prefix}/#", broker)
        _as_before_the_discovery_record(Settings(**document).state_dir)
        document["vehicles"] = {"kept": document["vehicles"]["kept"]}
        await _run_once(Settings(**document), f"{prefix}/#", broker)
        after = Listener(broker, f"{prefix}/#")
        states = Listener(broker, f"{base_topic}/+/+")
        await after.close()
        await states.close(settle=False)
    bridge = Topics(base=base_topic).bridge_node_id
    assert _devices(after.retained) == {bridge, "ownerlink_kept"}
    left = {topic.split("/")[1] for topic, payload in states.retained.items() if payload}
    assert "sold" not in left


def _as_before_the_discovery_record(state_dir: Path) -> None:
    """The state database as a version without `bridge.mqtt.memory` left it."""
    with sqlite3.connect(state_dir / DB_NAME) as conn:
        conn.execute("DROP TABLE discovery_retained")
        conn.execute("DELETE FROM schema_versions WHERE part = 'discovery'")
    conn.close()


async def test_a_command_a_kill_left_at_the_car_is_charged_to_the_budget_once(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """A kill after a command's request left but before its budget row was written leaves an
    allowed decision without an outcome and no row: the next start charges it (naming the
    record), answers it, and a start after that charges nothing more."""
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    slug = await _first_slug(settings)
    Store.open(settings.state_dir).close()  # the killed daemon's database, older than its record
    with AuditLog(
        audit_directory(settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=settings.audit.rotate_bytes,
    ) as log:
        decision = log.append(
            "command.decision",
            source="mqtt",
            app="node-red",
            vehicle=slug,
            command="lock",
            action="LOCK",
            id="k1",
            decision="allowed",
            reason="ok",
        )

    def charged() -> list[tuple[str, str, int]]:
        with sqlite3.connect(settings.state_dir / DB_NAME) as conn:
            rows = conn.execute(
                "SELECT account, kind, ref FROM budget_calls WHERE ref IS NOT NULL"
            ).fetchall()
        return [(str(a), str(k), int(r)) for a, k, r in rows]

    for _ in range(2):
        running = Daemon(settings)
        await running.start()
        # Answered (and charged) once the log has been checked against the broker's head.
        await _until(lambda: running._anchor is Anchor.HELD)  # noqa: B023 - awaited here
        await running.stop()
        assert charged() == [("sim", "command", decision["seq"])]
    records = read_records(audit_directory(settings.state_dir))
    outcomes = [r for r in records if r["kind"] == "command.outcome"]
    assert [(o["id"], o["status"]) for o in outcomes] == [("k1", "timed_out")]


async def test_a_start_while_the_provider_cannot_list_keeps_the_cars_as_they_were(
    tmp_path: Path, broker: BrokerAddress, base_topic: str
) -> None:
    """The vehicle list and the positions the car reports are remembered: a restart sends Home
    Assistant the same device at once (not the default doors first, then the car's own), and so
    does a restart during an outage (or with the day's budget spent), instead of a bare device
    whose entities replace those the owner named."""
    simulator = Simulator(vehicles=1, seed=5, auto_consent=True, admin=True)
    with serve_in_thread(simulator) as url:
        document, prefix = await _discovery_document(tmp_path, url, broker, base_topic)
        vehicle_id = _sim_vehicle_ids(Settings(**document))[0]
        document["vehicles"] = {"car": {"account": "sim", "id": vehicle_id}}
        settings = Settings(**document)
        await _run_once(settings, f"{prefix}/#", broker)
        before = Listener(broker, f"{prefix}/#")
        await before.close()
        again = await _run_once(settings, f"{prefix}/#", broker)
        simulator.faults.rates = {FaultKind.SERVER_ERROR: 1.0}
        during = await _run_once(settings, f"{prefix}/#", broker)
        after = Listener(broker, f"{prefix}/#")
        await after.close()
    config = f"{prefix}/device/ownerlink_car/config"
    assert json.loads(before.retained[config])["dev"].get("model"), "the simulator lists a model"
    assert after.retained == before.retained, "Home Assistant was sent a different car"
    sent = [payload for topic, payload in again.live if topic == config]
    assert set(sent) <= {before.retained[config]}, "a restart offered other entities first"
    assert not [topic for topic, payload in during.live if not payload], "nothing was removed"


async def test_a_stop_asked_for_while_a_hung_api_holds_up_the_start_ends_it_at_once(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """Every call to a car maker's API that hangs waits out its timeout, one after another
    while the daemon starts: a SIGTERM meanwhile abandons the start instead of waiting for them
    all (past systemd's TimeoutStopSec), and the stop that follows is clean."""
    simulator, url = sim
    settings = settings_for(tmp_path, url, broker, base_topic)
    await login(settings)
    simulator.faults.rates = {FaultKind.TIMEOUT: 1.0}
    running = Daemon(settings)
    starting = asyncio.create_task(running.start_unless_stopped())
    await _until(lambda: hasattr(running, "providers"))  # the vehicle list is on its way
    running.request_stop()
    try:
        async with asyncio.timeout(5):
            assert await starting is False
    finally:
        await running.stop()
    assert not running.ready.is_set()


async def _run_until_anchored(settings: Settings) -> Daemon:
    """Start, wait until the broker's copy of the audit head has been checked, and stop."""
    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: running._anchor in (Anchor.HELD, Anchor.BROKEN))
    finally:
        await running.stop()
    return running


def _retained_head(broker: BrokerAddress, topic: str) -> bytes | None:
    got = read_retained(
        Connection(broker.host, broker.port, "", "", f"head-{uuid.uuid4().hex[:6]}"), topic, 5.0
    )
    return got or None


def _head_payload(record: dict[str, Any]) -> bytes:
    return json.dumps(
        {"hash": record["hash"], "seq": record["seq"]}, separators=(",", ":")
    ).encode()


async def test_the_audit_head_is_published_again_on_every_start(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """A broker that lost its retained messages gets the anchor back when the bridge starts,
    not only at the next record."""
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    topic = f"{base_topic}/bridge/audit_head"
    await _run_until_anchored(settings)
    publish_retained(broker, topic, "")  # as a broker restarted without persistence would be
    await _run_until_anchored(settings)
    records = list(read_records(audit_directory(settings.state_dir)))
    assert records, "the first start writes records (the config's apps)"
    assert _retained_head(broker, topic) == _head_payload(records[-1])


async def test_a_restart_does_not_hand_out_a_fresh_minute_of_commands(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The rate limits count the last minute's commands from the audit log when the daemon
    starts: two allowed, a restart, and the third within the minute is still refused."""
    document = document_for(tmp_path, sim[1], broker, base_topic)
    document.setdefault("commands", {})["rate_limit_per_minute"] = 2
    settings = Settings(**document)
    await login(settings)
    statuses = []
    for _ in range(3):  # one command per start
        running = Daemon(settings)
        await running.start()
        try:
            slug = running.vehicles[0].slug
            result = await running.pipeline.submit_owner(slug, "lock", "LOCK")
            statuses.append((result.status.value, result.reason))
        finally:
            await running.stop()
    assert statuses == [("succeeded", "ok"), ("succeeded", "ok"), ("rejected", "rate_limited")]
    assert [e.command for e in sim[0].vehicles[0].executed].count("lock") == 2


async def test_commands_sent_by_ownerlink_command_beside_the_daemon_count_against_its_limit(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The car's limit is shared by every app and the owner's CLI: two `ownerlink command`s
    run beside the daemon use it up, and the daemon's next command within the minute is
    refused. (The daemon counted them only from its next start: a script calling the CLI in
    a loop, and the apps, had a minute's allowance each.)"""
    from bridge.cli.command import send
    from bridge.commands.apps import OWNER_APP
    from bridge.config import VehicleConfig
    from bridge.events import CollectingAlerts
    from bridge.model import Command

    document = document_for(tmp_path, sim[1], broker, base_topic)
    document.setdefault("commands", {})["rate_limit_per_minute"] = 2
    settings = Settings(**document)
    await login(settings)
    running = Daemon(settings)
    await running.start()
    try:
        car = running.vehicles[0]
        owner = settings.model_copy(
            update={"vehicles": {car.slug: VehicleConfig(account=car.account, id=car.vehicle_id)}}
        )
        for _ in range(2):
            done = await send(
                owner, car.slug, Command.LOCK, "LOCK", code=None, alerts=CollectingAlerts()
            )
            assert done.status.value == "succeeded"
        # The daemon reads what other processes appended each second.
        await _until(lambda: not running.pipeline.rates.allows(OWNER_APP, car.slug, time.time()))
        result = await running.pipeline.submit_owner(car.slug, "lock", "LOCK")
        assert (result.status.value, result.reason) == ("rejected", "rate_limited")
    finally:
        await running.stop()
    assert [e.command for e in sim[0].vehicles[0].executed].count("lock") == 2


async def test_a_log_cut_short_while_stopped_is_refused_and_the_brokers_head_kept(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """Publishing the shortened log's head would overwrite the only evidence of the cut."""
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    topic = f"{base_topic}/bridge/audit_head"
    await _run_until_anchored(settings)
    held = _retained_head(broker, topic)
    current = audit_directory(settings.state_dir) / "audit.jsonl"
    current.write_bytes(b"".join(current.read_bytes().splitlines(keepends=True)[:-1]))
    events = Listener(broker, f"{base_topic}/bridge/event")
    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: running._anchor is Anchor.BROKEN)
        slug = running.vehicles[0].slug
        result = await running.pipeline.submit_owner(slug, "lock", "LOCK")
        assert (result.status.value, result.reason) == ("rejected", "audit_tampered")
        assert running.audit_problem is not None and "forget-head" in running.audit_problem
    finally:
        await running.stop()
        await events.close()
    assert any(b"audit_tampered" in payload for _, payload in events.live)
    assert _retained_head(broker, topic) == held


async def test_a_replaced_state_database_stops_the_start_before_anything_runs(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The database emptied under a stopped daemon (its revocations and executed ids gone with
    it): the next start refuses, saying what happened and what to do;
    with the audit files moved aside (starting over on purpose) it starts."""
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    running = Daemon(settings)
    await running.start()
    running.registry.add("garage", scopes=["command:lock"])
    running.registry.revoke("garage")
    await running.stop()
    (settings.state_dir / DB_NAME).write_bytes(b"")

    refused = Daemon(settings)
    with pytest.raises(StateError, match=r"record \d+ \(app\.added\) was written by an earlier"):
        await refused.start()
    await refused.stop()

    audit = audit_directory(settings.state_dir)
    audit.rename(settings.state_dir / "audit-2026-11-29")
    again = Daemon(settings)
    await again.start()
    await again.stop()


async def test_the_bridges_broker_login_is_never_an_apps_id(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The daemon's registry (the owner page's) refuses an app under the bridge's broker login,
    and a start where such an app was registered before the name became the login stops
    (exit 2), saying which keys to change: the two would share one broker identity."""
    document = document_for(tmp_path, sim[1], broker, base_topic)
    await login(Settings(**document))
    running = Daemon(Settings(**{**document, "mqtt": {**document["mqtt"], "username": "Hub"}}))
    await running.start()
    try:
        with pytest.raises(AccessError, match="reserved"):
            running.registry.add("hub", scopes=["read:status"])
        running.registry.add("garage", scopes=["read:status"])
    finally:
        await running.stop()

    clashing = Settings(**{**document, "mqtt": {**document["mqtt"], "username": "garage"}})
    refused = Daemon(clashing)
    with pytest.raises(ConfigError, match=r"mqtt.username .*'garage' is also the id of a"):
        await refused.start()
    await refused.stop()


async def _until(check: Any, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not within the time allowed")


def _another_process_appends(daemon: Daemon) -> tuple[int, str]:
    """What `ownerlink apps revoke` or `ownerlink command` does: its own AuditLog, same files."""
    cli = AuditLog(
        audit_directory(daemon.settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=daemon.settings.audit.rotate_bytes,
    )
    cli.open()
    try:
        cli.append("app.revoked", app="nodered", reason="test")
    finally:
        cli.close()
    return cli.head


async def test_records_written_by_another_process_move_the_published_head(
    daemon: Daemon, broker: BrokerAddress
) -> None:
    """Otherwise a log cut back to just before the CLI's records (a revocation, an owner's
    unlock) would still contain the head on the broker, and `audit verify --mqtt` would pass."""
    topic = daemon.topics.audit_head
    await _until(lambda: daemon._anchor is Anchor.HELD)
    anchor = Listener(broker, topic)
    try:
        seq, value = _another_process_appends(daemon)
        expected = json.dumps({"hash": value, "seq": seq}, separators=(",", ":")).encode()
        await _until(lambda: (topic, expected) in anchor.live)
    finally:
        await anchor.close(settle=False)


async def test_an_owner_command_from_another_process_is_confirmed_by_a_read(
    daemon: Daemon, sim: tuple[Simulator, str]
) -> None:
    """`ownerlink command` beside the daemon: when its command has ended, the daemon reads the
    car once soon, as after its own commands. (It did not: after an owner's unlock, Home
    Assistant's lock kept saying `locked` until the next regular poll.) A command the CLI
    refused, never sent, asks for no read."""
    from bridge.cli.command import send
    from bridge.config import VehicleConfig
    from bridge.events import CollectingAlerts
    from bridge.model import Command

    await _until(lambda: daemon._anchor is Anchor.HELD)
    asked: list[str] = []
    confirm = daemon.poller.request_confirmation

    def spy(slug: str) -> None:
        asked.append(slug)
        confirm(slug)

    daemon.poller.request_confirmation = spy  # type: ignore[method-assign]
    car = daemon.vehicles[0]
    slug = car.slug
    # The CLI's config names the car the daemon found on the account (the fixture names none).
    vehicles = {slug: VehicleConfig(account=car.account, id=car.vehicle_id)}
    owner = daemon.settings.model_copy(update={"vehicles": vehicles})
    refused = await send(owner, slug, Command.LOCK, "UNLOCK", code=None, alerts=CollectingAlerts())
    assert refused.reason == "stepup_not_enrolled"
    done = await send(owner, slug, Command.LOCK, "LOCK", code=None, alerts=CollectingAlerts())
    assert done.status.value == "succeeded"
    await _until(lambda: asked == [slug], 5)
    await asyncio.sleep(1.5)  # the watch runs each second: nothing more comes
    assert asked == [slug]


async def test_a_log_cut_short_under_the_running_daemon_stops_commands_and_alerts(
    daemon: Daemon, broker: BrokerAddress
) -> None:
    """Found within a second, not at the next command; the broker keeps the old head."""
    slug = daemon.vehicles[0].slug
    topic = daemon.topics.audit_head
    await _until(lambda: daemon._anchor is Anchor.HELD)
    events = Listener(broker, daemon.topics.bridge_event)
    anchor = Listener(broker, topic)
    try:
        _another_process_appends(daemon)
        await _until(lambda: anchor.live)
        current = audit_directory(daemon.settings.state_dir) / "audit.jsonl"
        current.write_bytes(b"".join(current.read_bytes().splitlines(keepends=True)[:-1]))
        await _until(lambda: any(b"audit_tampered" in payload for _, payload in events.live))
        result = await daemon.pipeline.submit_owner(slug, "lock", "LOCK")
        assert (result.status.value, result.reason) == ("rejected", "audit_tampered")
        assert daemon.audit_problem is not None and "cut off" in daemon.audit_problem
        assert len(anchor.live) == 1, "no head was published for the shortened log"
    finally:
        await events.close(settle=False)
        await anchor.close(settle=False)


async def test_starting_over_on_purpose_takes_forget_head_then_commands_run(
    tmp_path: Path,
    sim: tuple[Simulator, str],
    broker: BrokerAddress,
    base_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The owner moved the state aside to start over: the daemon cannot tell that from a cut
    log, so it refuses until the owner says so; the new log records the head given up."""
    document = document_for(tmp_path, sim[1], broker, base_topic)
    settings = Settings(**document)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(document))  # JSON is YAML
    await login(settings)
    topic = f"{base_topic}/bridge/audit_head"
    await _run_until_anchored(settings)
    old_head = _retained_head(broker, topic)
    assert old_head is not None
    state = settings.state_dir
    (state / "audit").rename(tmp_path / "audit-old")
    (state / DB_NAME).rename(tmp_path / "db-old")
    assert (await _run_until_anchored(settings))._anchor is Anchor.BROKEN
    assert _retained_head(broker, topic) == old_head

    assert main(["audit", "forget-head", "--config", str(config)]) == 0
    assert "cleared the audit head" in capsys.readouterr().out
    forgotten = [
        r for r in read_records(audit_directory(state)) if r["kind"] == "audit.head_forgotten"
    ]
    assert [r["forgotten_seq"] for r in forgotten] == [json.loads(old_head)["seq"]]

    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: running._anchor is Anchor.HELD)
        result = await running.pipeline.submit_owner(running.vehicles[0].slug, "lock", "LOCK")
        assert result.status.value == "succeeded", result
    finally:
        await running.stop()
    records = list(read_records(audit_directory(state)))
    assert _retained_head(broker, topic) == _head_payload(records[-1])


async def test_a_state_directory_open_to_others_is_reported_at_start(
    tmp_path: Path,
    sim: tuple[Simulator, str],
    broker: BrokerAddress,
    base_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One the owner made with `mkdir` (0755) keeps its mode, but the owner hears of it."""
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    settings.state_dir.mkdir(mode=0o755)
    settings.state_dir.chmod(0o755)
    await login(settings)
    capsys.readouterr()
    running = Daemon(settings)
    await running.start()
    await running.stop()
    out = capsys.readouterr()
    assert "state directory open to other users" in out.out + out.err
    assert f"chmod 700 {settings.state_dir}" in out.out + out.err


async def test_a_car_first_bridged_during_an_outage_learns_what_it_can_do_from_its_first_read(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The very first start, while the car maker cannot list the account's cars: the car is
    bridged from the config alone, powertrain unknown. Its first read says it is electric: from
    then on it can be told to charge, and Home Assistant is offered the charge switch. (Before,
    charging was refused `unsupported` until a restart, whatever the reads said.)"""
    simulator, url = sim
    document = document_for(tmp_path, url, broker, base_topic)
    await login(Settings(**document))
    document["vehicles"] = {
        "car": {"account": "sim", "id": _sim_vehicle_ids(Settings(**document))[0]}
    }
    settings = Settings(**document)
    simulator.faults.rates = {FaultKind.SERVER_ERROR: 1.0}  # no list, and no earlier one
    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: running.poller.status("car")["last_error"])  # its first poll
        simulator.faults.rates = {}
        running.poller.resume("sim")  # no need to wait out the back-off of the failed first poll
        await _until(lambda: "car" in running.vehicles_view.latest)
        result = await running.pipeline.submit_owner("car", "charge", "STOP")
        assert result.reason != "unsupported", result
        offered = [json.loads(m.payload) for m in running.discovery.current("car") if m.payload]
        assert any(doc.get("cmps", {}).get("charge", {}).get("p") == "switch" for doc in offered)
    finally:
        await running.stop()


async def test_cars_of_an_account_that_could_not_be_listed_at_the_first_start_are_bridged_later(
    tmp_path: Path,
    sim: tuple[Simulator, str],
    broker: BrokerAddress,
    base_topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No vehicles configured (every car of the account is bridged) and the very first start
    falls in an outage: nothing to bridge and no earlier list. The account is listed again
    until it answers, and its cars are then polled and offered without a restart. (Before, the
    daemon bridged nothing until it was restarted.)"""
    import bridge.daemon

    monkeypatch.setattr(bridge.daemon, "LIST_RETRY_S", 0.2)
    simulator, url = sim
    settings = settings_for(tmp_path, url, broker, base_topic)
    await login(settings)
    simulator.faults.rates = {FaultKind.SERVER_ERROR: 1.0}
    running = Daemon(settings)
    await running.start()
    try:
        assert running.vehicles == []
        await asyncio.sleep(0.5)  # a retry or two meets the outage too
        simulator.faults.rates = {}
        await _until(
            lambda: running.vehicles and running.vehicles[0].slug in running.vehicles_view.latest
        )
        slug = running.vehicles[0].slug
        assert running.discovery.current(slug)
        result = await running.pipeline.submit_owner(slug, "lock", "LOCK")
        assert result.status.value == "succeeded", result
    finally:
        await running.stop()


async def test_an_upgrade_during_an_outage_keeps_the_entities_of_cars_not_listed_yet(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """No vehicles configured, and the first start after an upgrade from a version before the
    discovery record falls in an outage with no list remembered: the car it polled is not yet
    listed, not taken out, so its Home Assistant entities stay (clearing them would lose the
    owner's names and areas when it comes back)."""
    simulator, url = sim
    document, prefix = await _discovery_document(tmp_path, url, broker, base_topic)
    settings = Settings(**document)
    await _run_until_polled(settings)
    with sqlite3.connect(settings.state_dir / DB_NAME) as conn:
        conn.execute("DELETE FROM vehicle_lists")  # the older version remembered no list
    conn.close()
    _as_before_the_discovery_record(settings.state_dir)
    before = Listener(broker, f"{prefix}/#")
    await before.close()
    simulator.faults.rates = {FaultKind.SERVER_ERROR: 1.0}
    await _run_once(settings, f"{prefix}/#", broker)
    after = Listener(broker, f"{prefix}/#")
    await after.close()
    assert len(_devices(before.retained)) == 2  # the bridge and the car
    assert _devices(after.retained) == _devices(before.retained)


async def _run_until_polled(settings: Settings) -> None:
    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: any(v.slug in running.vehicles_view.latest for v in running.vehicles))
    finally:
        await running.stop()


async def test_an_audit_log_that_cannot_be_opened_at_start_is_no_tampering_alarm(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The audit file cannot be opened for writing at start (made immutable here; a read-only
    mount, a full disk while repairing a torn tail, wrong ownership): commands are refused
    `audit_unavailable`, as when a write fails later, and no `audit_tampered` alarm is raised.
    (Before, the start called it a failed verification and raised one: a false alarm.)"""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root to make the file immutable")
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    await _run_until_anchored(settings)  # the log exists, intact
    audit_file = audit_directory(settings.state_dir) / "audit.jsonl"
    if subprocess.run(["chattr", "+i", str(audit_file)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    events = Listener(broker, f"{base_topic}/bridge/event")
    try:
        running = Daemon(settings)
        await running.start()
        try:
            result = await running.pipeline.submit_owner(running.vehicles[0].slug, "lock", "LOCK")
        finally:
            await running.stop()
    finally:
        subprocess.run(["chattr", "-i", str(audit_file)], check=False)
        await events.close()
    assert (result.status.value, result.reason) == ("rejected", "audit_unavailable")
    assert not [p for _, p in events.live if b"audit_tampered" in p]
