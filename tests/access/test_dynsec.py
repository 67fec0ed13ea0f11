"""Dynamic-security enforcement against a real Mosquitto with the plugin, probed by real clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.access.apps import NewApp
from bridge.access.broker import build_enforcement
from bridge.access.dynsec_plan import role_name
from bridge.access.sync import SyncLoop
from bridge.errors import BrokerError
from bridge.model import Scope
from tests.access.conftest import DAEMON_PASSWORD, DAEMON_USER, DynsecBroker, mqtt_config
from tests.access.support import WAIT, Harness, Probe, make_harness

Registry = Callable[..., Harness]


@pytest.fixture
def dyn(tmp_path: Path, dynsec_broker: DynsecBroker, base_topic: str) -> Iterator[Registry]:
    """Builds registries (a daemon, a restarted one, …) on one state dir, enforcing via dynsec."""
    made: list[Harness] = []

    def build(state_dir: Path = tmp_path / "state") -> Harness:
        config = mqtt_config(
            dynsec_broker.host, dynsec_broker.port, base_topic, enforcement="dynsec"
        )
        harness = make_harness(
            state_dir, build_enforcement(config, timeout_s=2.0), reserved=[DAEMON_USER, "admin"]
        )
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.registry.enforcement.stop()


@pytest.fixture
def probes(dynsec_broker: DynsecBroker) -> Iterator[Callable[[str, str], Probe]]:
    """Connected MQTT clients, closed after the test."""
    made: list[Probe] = []

    def connect(username: str, password: str) -> Probe:
        probe = Probe(dynsec_broker.host, dynsec_broker.port, username, password)
        assert probe.connect(), f"{username} could not log in"
        made.append(probe)
        return probe

    yield connect
    for probe in made:
        probe.close()


def login(probes: Callable[[str, str], Probe], new: NewApp) -> Probe:
    return probes(new.app.id, new.password)


def daemon_probe(probes: Callable[[str, str], Probe], h: Harness) -> Probe:
    h.registry.sync_broker()  # creates the daemon's own login and role
    return probes(DAEMON_USER, DAEMON_PASSWORD)


def test_app_without_location_never_receives_location(
    dyn: Registry, probes: Callable[..., Probe], base_topic: str
) -> None:
    """Only granted state kinds can be subscribed; location stays with the app that opted in."""
    h = dyn()
    plain = login(probes, h.registry.add("plain", scopes=["read:status"]))
    located = login(
        probes,
        h.registry.add("located", scopes=["read:status", "read:location"], allow_location=True),
    )
    daemon = daemon_probe(probes, h)
    status, location = f"{base_topic}/car/status", f"{base_topic}/car/location"
    assert not plain.subscribe(f"{base_topic}/+/location")
    assert not plain.subscribe(f"{base_topic}/#")
    assert plain.subscribe(f"{base_topic}/+/status")
    assert located.subscribe(f"{base_topic}/+/location") and located.subscribe(status)
    daemon.publish(location, "{}")
    daemon.publish(status, "{}")
    assert plain.collect_until(status) == [status]
    assert located.collect_until(status) == [location, status]


def test_alerts_reach_the_owner_feed_and_each_app_only_its_own(
    dyn: Registry, probes: Callable[..., Probe], base_topic: str
) -> None:
    """An app never receives the owner's alert feed (it names other apps); it hears its own
    alerts on its own topic; the Home Assistant app, the owner's home, reads the feed."""
    h = dyn()
    a = login(probes, h.registry.add("a", scopes=["read:status"]))
    ha = login(probes, h.registry.add("ha", scopes=["read:status"], home_assistant=True))
    daemon = daemon_probe(probes, h)
    feed, own, other = (
        f"{base_topic}/bridge/event",
        f"{base_topic}/app/a/event",
        f"{base_topic}/app/b/event",
    )
    assert not a.subscribe(feed)
    assert a.subscribe(f"{base_topic}/bridge/state") and a.subscribe(f"{base_topic}/app/a/#")
    assert ha.subscribe(feed)
    for topic in (feed, other, own):
        daemon.publish(topic, "{}")
    assert a.collect_until(own) == [own]
    assert ha.collect_until(feed) == [feed]


def test_app_cannot_publish_outside_its_own_granted_commands(
    dyn: Registry, probes: Callable[..., Probe], base_topic: str
) -> None:
    """Other apps' command topics, ungranted commands and state topics never reach the daemon."""
    h = dyn()
    a = login(probes, h.registry.add("a", scopes=["command:lock"]))
    h.registry.add("b", scopes=["command:charge"])
    daemon = daemon_probe(probes, h)
    assert daemon.subscribe(f"{base_topic}/#")
    a.publish(f"{base_topic}/app/b/car/cmd/charge", "START")
    a.publish(f"{base_topic}/app/a/car/cmd/charge", "START")
    a.publish(f"{base_topic}/app/a/car/cmd/engine", "START")
    a.publish(f"{base_topic}/car/status", "{}")
    allowed = f"{base_topic}/app/a/car/cmd/lock"
    a.publish(allowed, "UNLOCK")  # the topic is open; the daemon's scope check refuses UNLOCK
    assert daemon.collect_until(allowed) == [allowed]


def test_home_assistant_app_gets_discovery_and_birth_topic(
    dyn: Registry, probes: Callable[..., Probe], base_topic: str
) -> None:
    """The HA app reads discovery configs and publishes its status; other apps cannot."""
    h = dyn()
    prefix = f"{base_topic}-ha"
    ha = login(probes, h.registry.add("ha", scopes=["read:status"], home_assistant=True))
    other = login(probes, h.registry.add("nr", scopes=["read:status"]))
    daemon = daemon_probe(probes, h)
    config = f"{prefix}/sensor/car_odometer/config"
    daemon.publish(config, "{}", retain=True)
    assert daemon.subscribe(f"{prefix}/#")
    assert ha.subscribe(f"{prefix}/#")
    assert ha.collect_until(config) == [config]
    assert not other.subscribe(f"{prefix}/#")
    other.publish(f"{prefix}/status", "offline")
    ha.publish(f"{prefix}/status", "online")
    assert daemon.next_payload(f"{prefix}/status") == b"online"  # "offline" never arrived


def test_revocation_kicks_the_session_and_the_old_password_fails(
    dyn: Registry, probes: Callable[..., Probe], dynsec_broker: DynsecBroker
) -> None:
    """Within a second of revoke the session is gone; the login is refused afterwards."""
    h = dyn()
    new = h.registry.add("nr", scopes=["read:status"])
    app = login(probes, new)
    started = time.monotonic()
    h.registry.revoke("nr")
    assert app.disconnected.wait(1.0)
    assert time.monotonic() - started < 1.0
    assert h.registry.get("nr") is None
    assert h.alert_kinds()[-1] == "app_revoked" and h.audit_kinds()[-1] == "app.revoked"
    again = Probe(dynsec_broker.host, dynsec_broker.port, "nr", new.password)
    assert not again.connect()
    again.close()
    assert "nr" not in dynsec_broker.ctrl("listClients")


def test_withdrawn_scopes_stop_the_next_message(
    dyn: Registry, probes: Callable[..., Probe], base_topic: str
) -> None:
    """After withdraw, the next location message and lock command are refused by the broker."""
    h = dyn()
    app = login(
        probes,
        h.registry.add(
            "nr",
            scopes=["read:status", "read:location", "command:lock", "command:charge"],
            allow_location=True,
        ),
    )
    daemon = daemon_probe(probes, h)
    assert daemon.subscribe(f"{base_topic}/app/#")
    status, location = f"{base_topic}/car/status", f"{base_topic}/car/location"
    assert app.subscribe(location) and app.subscribe(status)
    h.registry.withdraw("nr", ["read:location", "command:lock"])
    assert app.disconnected.wait(WAIT)  # access shrank: the broker ended the session
    assert app.next_connect()  # it logs in again; its location subscription is now refused
    assert not app.subscribe(location) and app.subscribe(status)
    daemon.publish(location, "{}")
    daemon.publish(status, "{}")
    assert app.collect_until(status) == [status]
    app.publish(f"{base_topic}/app/nr/car/cmd/lock", "LOCK")
    app.publish(f"{base_topic}/app/nr/car/cmd/charge", "START")
    assert daemon.collect_until(f"{base_topic}/app/nr/car/cmd/charge") == [
        f"{base_topic}/app/nr/car/cmd/charge"
    ]


def test_restart_resyncs_and_reports_hand_made_clients(
    dyn: Registry, probes: Callable[..., Probe], dynsec_broker: DynsecBroker, base_topic: str
) -> None:
    """A restarted daemon repairs tampered roles and reports clients it did not create."""
    h = dyn()
    new = h.registry.add("nr", scopes=["read:status"])
    h.registry.enforcement.stop()
    dynsec_broker.ctrl("createClient", "sneaky", "-p", "sneaky-password")
    dynsec_broker.ctrl("addClientRole", "sneaky", role_name("nr"))
    dynsec_broker.ctrl(
        "addRoleACL", role_name("nr"), "subscribePattern", f"{base_topic}/+/location", "allow"
    )
    dynsec_broker.proc.restart()
    restarted = dyn()
    report = restarted.registry.sync_broker()
    assert any("'sneaky'" in line for line in report.drift)
    assert f"updated ACLs of role {role_name('nr')}" in report.changed
    assert restarted.alert_kinds() == ["broker_drift"]
    assert restarted.audit_kinds() == ["broker.drift"]
    app = login(probes, new)
    assert not app.subscribe(f"{base_topic}/+/location")
    restarted.registry.sync_broker()
    assert restarted.alert_kinds() == ["broker_drift"]  # the same drift is reported once


def test_add_refuses_to_take_over_a_client_it_did_not_create(
    dyn: Registry, dynsec_broker: DynsecBroker
) -> None:
    """An existing broker client with the same name is never replaced; nothing is registered."""
    h = dyn()
    dynsec_broker.ctrl("createClient", "zigbee2mqtt", "-p", "z2m-password")
    with pytest.raises(BrokerError, match="did not create"):
        h.registry.add("zigbee2mqtt", scopes=["read:status"])
    assert h.registry.list() == [] and h.audit.records == []
    assert "zigbee2mqtt" in dynsec_broker.ctrl("listClients")


def test_broker_down_during_changes_is_retried_then_consistent(
    dyn: Registry, probes: Callable[..., Probe], dynsec_broker: DynsecBroker, base_topic: str
) -> None:
    """Changes made while the broker is down are pending, reported, and applied once it is back."""
    h = dyn()
    nr = h.registry.add("nr", scopes=["read:status", "read:location"], allow_location=True)
    old = h.registry.add("old", scopes=["read:status"])
    dynsec_broker.proc.stop()
    with pytest.raises(BrokerError):
        h.registry.add("new", scopes=["read:status"])
    h.registry.withdraw("nr", ["read:location"])
    h.registry.revoke("old")
    assert set(h.registry.pending()) == {"nr", "old"}
    assert h.alert_kinds().count("broker_drift") == 2
    assert h.registry.get("new") is None and h.registry.get("old") is None
    dynsec_broker.proc.start()
    asyncio.run(_run_sync_loop_until_in_sync(h))
    assert h.registry.pending() == {}
    assert not Probe(dynsec_broker.host, dynsec_broker.port, "old", old.password).connect()
    app = login(probes, nr)
    assert not app.subscribe(f"{base_topic}/+/location") and app.subscribe(f"{base_topic}/+/status")


async def _run_sync_loop_until_in_sync(h: Harness) -> None:
    loop = SyncLoop(registry=h.registry, poll_interval_s=0.05, retry_min_s=0.05)
    await loop.start()
    try:
        await asyncio.wait_for(loop.in_sync.wait(), 10)
    finally:
        await loop.stop()


def test_disabled_app_cannot_log_in_until_enabled(
    dyn: Registry, dynsec_broker: DynsecBroker
) -> None:
    """Disabling kicks and refuses the login; enabling lets the same password in again."""
    h = dyn()
    new = h.registry.add("nr", scopes=["read:status"])
    h.registry.set_enabled("nr", False)
    probe = Probe(dynsec_broker.host, dynsec_broker.port, "nr", new.password)
    assert not probe.connect()
    probe.close()
    h.registry.set_enabled("nr", True)
    probe = Probe(dynsec_broker.host, dynsec_broker.port, "nr", new.password)
    assert probe.connect()
    probe.close()
    assert h.registry.details("nr").app.has(Scope.READ_STATUS)
