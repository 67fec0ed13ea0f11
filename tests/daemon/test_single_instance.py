"""One daemon per state directory: a second `ownerlink run` on it stops at once, saying why.

Two daemons sharing a state directory both poll every car (twice the calls the budget plans for),
both refresh the account's rotating refresh token, and, with different broker client ids, both
receive every command: one sent without an id would run at the car twice.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from tests.conftest import BrokerAddress
from tests.support.daemon import (
    CHAOS_APP,
    FINAL_STATUSES,
    DaemonConfig,
    DaemonProcess,
    MqttObserver,
    login_direct,
    running_simulator,
    wait_until,
)


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    with (
        running_simulator(vehicles=1) as sim,
        MqttObserver(broker.host, broker.port, (f"{base_topic}/#",)) as mqtt,
    ):
        first = DaemonConfig.for_simulator(tmp_path / "first", sim, broker, base_topic).write()
        login_direct(first)
        # The same state, under another broker client id: both would hear every command.
        second = DaemonConfig.for_simulator(
            tmp_path / "second",
            sim,
            broker,
            base_topic,
            extra={"state_dir": str(first.state_dir), "mqtt": {"client_id": "another"}},
        ).write()
        running, intruder = DaemonProcess(first), DaemonProcess(second)
        try:
            running.start()
            running.wait_online(mqtt)
            intruder.start()
            wait_until(lambda: not intruder.alive, 30, what="the second daemon to exit")
            assert intruder.returncode == 1
            err = (second.log_dir / "run-1.err").read_text()
            assert f"another ownerlink daemon (pid {running.pid}) is running" in err
            assert "Traceback" not in err

            # The first is undisturbed: a command without an id runs once, answered once.
            topic = f"{base_topic}/app/{CHAOS_APP}/car-1/cmd/lock"
            mqtt.publish(topic, json.dumps({"action": "LOCK"}))
            wait_until(lambda: finals(mqtt, base_topic), 20, what="the command's final result")
            assert [r["status"] for r in finals(mqtt, base_topic)] == ["succeeded"]
            assert len(sim.executed()) == 1

            # Once the first is gone (even by kill -9), the state directory is free again.
            running.kill()
            intruder.start()
            intruder.wait_online(mqtt)
            assert intruder.stop() == 0
        finally:
            for daemon in (running, intruder):
                if daemon.alive:
                    daemon.stop()


def finals(mqtt: MqttObserver, base: str) -> list[dict[str, object]]:
    return [r for r in mqtt.results(base) if r.get("status") in FINAL_STATUSES]


def test_a_taken_web_port_stops_the_start_before_the_broker_or_the_car_hears_of_it(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """Another program on the page's port ends the start with exit status 1 (systemd tries
    again; 2 would stop it for good), one line naming the address, before the bridge has said
    `online` or read the car: it used to fail as a config error once all that had happened."""
    with (
        running_simulator(vehicles=1) as sim,
        MqttObserver(broker.host, broker.port, (f"{base_topic}/#",)) as mqtt,
        socket.socket() as holder,
    ):
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = DaemonConfig.for_simulator(
            tmp_path, sim, broker, base_topic, web_port=port
        ).write()
        login_direct(config)
        calls_before = sum(a["calls"] for a in sim.accounts())
        daemon = DaemonProcess(config)
        daemon.start()
        wait_until(lambda: not daemon.alive, 30, what="the daemon to exit")
        assert daemon.returncode == 1
        err = (config.log_dir / "run-1.err").read_text()
        assert f"cannot listen on 127.0.0.1:{port}: another program is using it" in err
        assert "Traceback" not in err
        time.sleep(0.5)  # anything it had published would have reached the observer by now
        assert mqtt.on(f"{base_topic}/bridge/state") == []
        assert mqtt.on(f"{base_topic}/car-1/") == []
        assert sum(a["calls"] for a in sim.accounts()) == calls_before
