"""Fuzzed MQTT commands into a running `ownerlink run`: one final result each, and no crash.

Hypothesis draws batches of messages for `<base>/app/<app>/<vehicle>/cmd/<command>`, mixing
real apps, vehicles and commands with random names (any text a topic level may hold), and
payloads from plain action words and well-formed JSON to broken JSON, wrong types, oversized
and binary payloads. Every message must get exactly one final result on its app's result topic
(byte-identical QoS 1 copies count once), none may end in `internal_error`, and the daemon must
still be running and answering at the end, with nothing like a traceback in its output.

Topics with an empty level (`<base>/app//car-1/cmd/lock`) match the daemon's subscription but
name no app to answer; they are refused and audited without a result, and are left out here.
The pipeline's own in-process fuzz (tests/commands/test_fuzz.py) covers parse and decide in
depth; this one is about the whole daemon behind a real broker.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import BrokerAddress
from tests.reliability.checks import FINAL
from tests.support.daemon import (
    CHAOS_APP,
    HA_APP,
    TRACEBACK,
    DaemonConfig,
    MqttObserver,
    daemon_running,
    error_lines,
    login_direct,
    running_simulator,
    wait_until,
)

# A topic level the broker accepts: no separators or wildcards, and none of the code points
# MQTT forbids or Mosquitto refuses (controls, surrogates, non-characters); a publisher that
# uses one is disconnected by the broker, so the daemon never sees it.
LEVEL = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Cn"), exclude_characters="/+#\ufffe\uffff"),
    min_size=1,
    max_size=16,
)
APP = st.sampled_from([CHAOS_APP, HA_APP, "stranger", "owner"]) | LEVEL
VEHICLE = st.sampled_from(["car-1", "car-9"]) | LEVEL
COMMAND = st.sampled_from(["lock", "engine", "charge", "refresh", "horn_lights", "sunroof"]) | LEVEL
WORD = st.sampled_from(["LOCK", "UNLOCK", "lock\n", " Start ", "STOP", "REFRESH", "", "??"])
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "action": WORD | JSON_VALUE,
        "id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True) | JSON_VALUE,
        "code": st.from_regex(r"[0-9]{6}", fullmatch=True) | JSON_VALUE,
        "issued_at": st.floats(0, 4e9) | st.text(max_size=30) | JSON_VALUE,
        "extra": JSON_VALUE,
    },
)
PAYLOAD = st.one_of(
    WORD.map(str.encode),
    FIELDS.map(lambda d: json.dumps(d).encode()),
    JSON_VALUE.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.binary(min_size=1000, max_size=1100),  # around the 1024-byte limit
    st.just(b'{"action": "LOCK", "action": "UNLOCK"}'),
)
MESSAGE = st.tuples(APP, VEHICLE, COMMAND, PAYLOAD)
BATCH = st.lists(MESSAGE, min_size=1, max_size=4)


class Tally:
    """What was sent, per result topic, and the final results seen there."""

    def __init__(self, mqtt: MqttObserver, base: str) -> None:
        self.mqtt, self.base = mqtt, base
        self.expected: Counter[str] = Counter()

    def finals(self) -> Counter[str]:
        # Every message, not MqttObserver.results(): that drops byte-identical copies (a broker
        # restart's resends), and no broker restarts here, while two refusals of one batch
        # (the same id sent twice) can be byte-identical when answered within a millisecond.
        counts: Counter[str] = Counter()
        for message in self.mqtt.on(f"{self.base}/app/"):
            if message.topic.endswith("/result") and message.json().get("status") in FINAL:
                counts[message.topic] += 1
        return counts

    def internal_errors(self) -> list[dict[str, object]]:
        return [r for r in self.mqtt.results(self.base) if r.get("reason") == "internal_error"]


def run_fuzz(broker: BrokerAddress, root: Path, base: str, examples: int) -> None:
    with (
        running_simulator(vehicles=1) as sim,
        MqttObserver(broker.host, broker.port, (f"{base}/#",)) as mqtt,
    ):
        config = DaemonConfig.for_simulator(root, sim, broker, base).write()
        login_direct(config)
        tally = Tally(mqtt, base)
        with daemon_running(config, mqtt) as daemon:

            @settings(
                max_examples=examples,
                deadline=None,
                # Shrinking against a live daemon takes minutes; the failure names its batch.
                phases=(Phase.explicit, Phase.reuse, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            )
            @given(BATCH)
            def one_batch(batch: list[tuple[str, str, str, bytes]]) -> None:
                before = tally.finals()
                assert before == tally.expected, "a result arrived for nothing sent"
                wanted = Counter(tally.expected)
                for app, vehicle, command, payload in batch:
                    mqtt.publish(f"{base}/app/{app}/{vehicle}/cmd/{command}", payload)
                    wanted[f"{base}/app/{app}/{vehicle}/result"] += 1
                try:
                    wait_until(
                        lambda: tally.finals() == wanted, 20, what=f"one result each: {batch!r}"
                    )
                finally:
                    tally.expected = tally.finals()  # the next batch starts from what is true
                assert daemon.alive, daemon.tail()

            one_batch()
            assert daemon.alive, daemon.tail()
            mqtt.publish(
                f"{base}/app/{CHAOS_APP}/car-1/cmd/lock", b'{"action": "LOCK", "id": "last"}'
            )
            wait_until(
                lambda: any(
                    r.get("id") == "last" and r.get("status") == "succeeded"
                    for r in mqtt.results(base)
                ),
                20,
                what="the daemon to still run a command",
            )
            exit_code = daemon.stop()
    assert not tally.internal_errors(), tally.internal_errors()[:3]
    assert exit_code == 0
    assert not TRACEBACK.search(daemon.output()), daemon.tail()
    assert not error_lines(daemon.output()), error_lines(daemon.output())[:5]


def test_fuzzed_commands_each_get_one_result(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """40 batches of fuzzed command messages: one final result each, and the daemon carries on."""
    run_fuzz(broker, tmp_path, base_topic, 40)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_fuzzed_commands_each_get_one_result_soak(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """1000 batches of fuzzed command messages: one final result each, the daemon carries on."""
    run_fuzz(broker, tmp_path, base_topic, 1000)
