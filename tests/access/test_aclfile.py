"""acl-file enforcement: the rendered password_file and acl_file loaded into a real Mosquitto."""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.access.aclfile import AclFileEnforcement
from bridge.access.broker import build_enforcement
from bridge.access.passwords import mosquitto_hash
from tests.access.conftest import DAEMON_PASSWORD, DAEMON_USER, mqtt_config
from tests.access.support import Harness, Probe, make_harness
from tests.support.broker import MosquittoProcess


class AclBroker:
    """A Mosquitto reading the files a registry renders, plus the registry and its probes."""

    def __init__(self, tmp_path: Path, base_topic: str) -> None:
        self.proc = MosquittoProcess()
        self.acl_dir = tmp_path / "broker"
        config = mqtt_config(
            self.proc.host, self.proc.port, base_topic, enforcement="acl-file", acl_dir=self.acl_dir
        )
        self.harness = make_harness(
            tmp_path / "state", build_enforcement(config), reserved=[DAEMON_USER]
        )
        self.probes: list[Probe] = []

    def start(self) -> None:
        self.harness.registry.sync_broker()  # renders the files, with the daemon's login
        self.proc.extra_config = (
            f"allow_anonymous false\npassword_file {self.acl_dir}/passwd\n"
            f"acl_file {self.acl_dir}/acl"
        )
        self.proc.start()

    def reload(self) -> None:
        """SIGHUP, then wait for Mosquitto to say it reloaded."""
        assert self.proc.proc is not None
        before = self.proc.log().count("Reloading config")
        self.proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while self.proc.log().count("Reloading config") == before:
            assert time.monotonic() < deadline, "Mosquitto did not reload"
            time.sleep(0.02)

    def login(self, username: str, password: str) -> Probe:
        probe = Probe(self.proc.host, self.proc.port, username, password)
        self.probes.append(probe)
        assert probe.connect(), f"{username} could not log in"
        return probe

    def refused(self, username: str, password: str) -> bool:
        probe = Probe(self.proc.host, self.proc.port, username, password)
        self.probes.append(probe)
        return not probe.connect()

    def daemon(self) -> Probe:
        return self.login(DAEMON_USER, DAEMON_PASSWORD)

    def stop(self) -> None:
        for probe in self.probes:
            probe.close()
        self.proc.stop()


@pytest.fixture
def acl(tmp_path: Path, base_topic: str) -> Iterator[AclBroker]:
    broker = AclBroker(tmp_path, base_topic)
    yield broker
    broker.stop()


def test_rendered_hashes_authenticate_against_mosquitto(acl: AclBroker) -> None:
    """Our `$7$` hashes log in; a wrong password does not; anonymous clients are refused."""
    new = acl.harness.registry.add("nr", scopes=["read:status"])
    acl.start()
    acl.login("nr", new.password)
    acl.daemon()
    assert acl.refused("nr", "not-the-password")
    assert acl.refused("", "")


def test_acl_file_gives_the_same_read_matrix(acl: AclBroker, base_topic: str) -> None:
    """Even subscribed to everything, an app without read:location never receives location."""
    registry = acl.harness.registry
    plain = registry.add("plain", scopes=["read:status"])
    located = registry.add("located", scopes=["read:status", "read:location"], allow_location=True)
    acl.start()
    apps = [acl.login("plain", plain.password), acl.login("located", located.password)]
    for app in apps:
        app.subscribe(f"{base_topic}/#")  # acl_file may grant the filter; delivery is checked
    daemon = acl.daemon()
    status, location = f"{base_topic}/car/status", f"{base_topic}/car/location"
    daemon.publish(location, "{}")
    daemon.publish(status, "{}")
    assert apps[0].collect_until(status) == [status]
    assert apps[1].collect_until(status) == [location, status]


def test_acl_file_keeps_the_alert_feed_for_home_assistant(acl: AclBroker, base_topic: str) -> None:
    """Subscribed to everything, an app receives its own alerts only; HA receives the feed."""
    registry = acl.harness.registry
    a = registry.add("a", scopes=["read:status"])
    ha = registry.add("ha", scopes=["read:status"], home_assistant=True)
    acl.start()
    probes = [acl.login("a", a.password), acl.login("ha", ha.password)]
    for probe in probes:
        probe.subscribe(f"{base_topic}/#")
    daemon = acl.daemon()
    feed, own, other = (
        f"{base_topic}/bridge/event",
        f"{base_topic}/app/a/event",
        f"{base_topic}/app/b/event",
    )
    for topic in (feed, other, own):
        daemon.publish(topic, "{}")
    assert probes[0].collect_until(own) == [own]
    assert probes[1].collect_until(feed) == [feed]


def test_acl_file_gives_the_same_publish_matrix(acl: AclBroker, base_topic: str) -> None:
    """Another app's commands, ungranted commands and state topics never reach the daemon."""
    a = acl.harness.registry.add("a", scopes=["command:lock"])
    acl.harness.registry.add("b", scopes=["command:charge"])
    acl.start()
    daemon = acl.daemon()
    daemon.subscribe(f"{base_topic}/#")
    app = acl.login("a", a.password)
    app.publish(f"{base_topic}/app/b/car/cmd/charge", "START")
    app.publish(f"{base_topic}/app/a/car/cmd/charge", "START")
    app.publish(f"{base_topic}/car/status", "{}")
    allowed = f"{base_topic}/app/a/car/cmd/lock"
    app.publish(allowed, "LOCK")
    assert daemon.collect_until(allowed) == [allowed]


def test_acl_file_home_assistant_app(acl: AclBroker, base_topic: str) -> None:
    """The HA app reads retained discovery and publishes its status; another app cannot."""
    prefix = f"{base_topic}-ha"
    ha = acl.harness.registry.add("ha", scopes=["read:status"], home_assistant=True)
    nr = acl.harness.registry.add("nr", scopes=["read:status"])
    acl.start()
    daemon = acl.daemon()
    config = f"{prefix}/sensor/car_odometer/config"
    daemon.publish(config, "{}", retain=True)
    daemon.subscribe(f"{prefix}/status")
    ha_probe, other = acl.login("ha", ha.password), acl.login("nr", nr.password)
    ha_probe.subscribe(f"{prefix}/#")
    assert ha_probe.collect_until(config) == [config]
    other.publish(f"{prefix}/status", "offline")
    ha_probe.publish(f"{prefix}/status", "online")
    assert daemon.next_payload(f"{prefix}/status") == b"online"


def test_revoked_app_is_disconnected_on_reload(acl: AclBroker, base_topic: str) -> None:
    """On SIGHUP after revoke, Mosquitto 2.0 drops the live session and refuses the password."""
    new = acl.harness.registry.add("nr", scopes=["read:status"])
    acl.start()
    app = acl.login("nr", new.password)
    acl.harness.registry.revoke("nr")
    assert not app.disconnected.is_set()  # nothing happens until the broker reloads
    acl.reload()
    assert app.disconnected.wait(5)
    assert acl.refused("nr", new.password)


def test_withdrawn_scope_stops_the_next_message_after_reload(
    acl: AclBroker, base_topic: str
) -> None:
    """After reload, a narrowed live session stays connected but gets no more location."""
    new = acl.harness.registry.add(
        "nr", scopes=["read:status", "read:location"], allow_location=True
    )
    acl.start()
    app = acl.login("nr", new.password)
    app.subscribe(f"{base_topic}/+/location")
    daemon = acl.daemon()
    daemon.subscribe(f"{base_topic}/+/location")
    acl.harness.registry.withdraw("nr", ["read:location"])
    acl.reload()
    daemon.publish(f"{base_topic}/car/location", "{}")
    assert daemon.next_payload(f"{base_topic}/car/location") == b"{}"
    with pytest.raises(queue.Empty):
        app.messages.get(timeout=0.3)  # no event to await for a message that must not come
    assert not app.disconnected.is_set()  # a reload does not kick a still-valid login


def test_local_entries_are_kept_and_files_are_private(tmp_path: Path, base_topic: str) -> None:
    """The owner's local users and rules survive every rewrite; the files are not world-readable."""
    acl_dir = tmp_path / "broker"
    acl_dir.mkdir()
    (acl_dir / "local.passwd").write_text(f"z2m:{mosquitto_hash('z2m-pass')}\n")
    (acl_dir / "local.acl").write_text("user z2m\ntopic readwrite zigbee2mqtt/#\n")
    config = mqtt_config("127.0.0.1", 1883, base_topic, enforcement="acl-file", acl_dir=acl_dir)
    enforcement = build_enforcement(config)
    assert isinstance(enforcement, AclFileEnforcement)
    h = make_harness(tmp_path / "state", enforcement)
    h.registry.add("nr", scopes=["read:status"])
    h.registry.revoke("nr")
    assert "z2m:" in enforcement.password_file.read_text()
    assert "user nr" not in (text := enforcement.acl_file.read_text()) and "user z2m" in text
    assert enforcement.acl_file.stat().st_mode & 0o007 == 0
    assert enforcement.hint is not None and "kill -HUP" in enforcement.hint


def test_daemon_hash_is_stable_across_rewrites(tmp_path: Path, base_topic: str) -> None:
    """Rewriting keeps the daemon's hash while its password is unchanged (no needless reloads)."""
    config = mqtt_config(
        "127.0.0.1", 1883, base_topic, enforcement="acl-file", acl_dir=tmp_path / "broker"
    )
    h: Harness = make_harness(tmp_path / "state", build_enforcement(config))
    h.registry.sync_broker()
    before = (tmp_path / "broker" / "passwd").read_text()
    report = h.registry.sync_broker()
    assert (tmp_path / "broker" / "passwd").read_text() == before
    assert report.changed == ()
