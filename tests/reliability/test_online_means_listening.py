"""`<base>/bridge/state` = online means the bridge hears commands: none sent at once is lost.

An automation may react to the bridge coming online by sending a command straight away. The
test client does exactly that, from inside its MQTT callback, on each of three starts (the
previous run killed with SIGKILL, so the broker's `offline` will sits between them); every such
command must get its final result.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from tests.conftest import BrokerAddress
from tests.reliability.checks import tally_results
from tests.support.daemon import (
    CHAOS_APP,
    DaemonConfig,
    DaemonProcess,
    MqttObserver,
    login_direct,
    running_simulator,
    wait_until,
)


def answered(mqtt: MqttObserver, base: str, command_id: str) -> bool:
    return tally_results(mqtt.results(base)).count(command_id) == 1


def test_command_sent_the_moment_online_arrives_is_answered(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """A command published the instant `online` arrives gets its final result, on every start."""
    with (
        running_simulator(vehicles=1) as sim,
        MqttObserver(broker.host, broker.port, (f"{base_topic}/#",)) as mqtt,
    ):
        config = DaemonConfig.for_simulator(tmp_path, sim, broker, base_topic).write()
        login_direct(config)
        daemon = DaemonProcess(config)
        topic = f"{base_topic}/app/{CHAOS_APP}/car-1/cmd/lock"
        try:
            for start in range(3):
                command = json.dumps({"action": "LOCK", "id": f"at-online-{start}"})
                send = partial(mqtt.publish, topic, command)
                mqtt.when(f"{base_topic}/bridge/state", b"online", send)
                daemon.start()
                daemon.wait_online(mqtt)
                wait_until(
                    partial(answered, mqtt, base_topic, f"at-online-{start}"),
                    15,
                    what=f"the result of the command sent at online (start {start + 1})",
                )
                daemon.kill()
        finally:
            if daemon.alive:
                daemon.stop()
