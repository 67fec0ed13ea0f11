"""Broker chaos: the broker restarts at random moments while commands flow and the car's day runs.

A client sends LOCK with a unique id every second at QoS 1 (paho queues while disconnected and
resends after reconnecting) and, like a careful app, sends a command again under the same id when
no final result came within `RETRY_AFTER_S`. The broker runs without persistence, so a restart
loses every session, subscription and retained message, as a crashed broker would.

How commands are judged. MQTT itself loses some messages here, and no bridge can help it: a
command published while the broker is down or before the bridge has subscribed again (nobody is
listening), a message the broker took in the instant before it stopped, and a result published
while the test client itself was not subscribed. So:

- a command the broker acknowledged (PUBACK) while the bridge was listening — after the bridge's
  `online` of that broker run and at least `STOP_MARGIN_S` before the broker stopped — must
  reach the bridge: the audit log has its decision;
- such a command is owed exactly one final result, unless that result fell in a window where
  MQTT could not deliver it to us (`excused_windows`);
- every command gets at most one final result other than `duplicate_id` (the answer to a copy
  of a command the bridge already ran), at most one `allowed` decision, and none is executed
  twice (simulator ground truth, linked to command ids by the audit log's `provider_command_id`);
- with the app's retries every command ends with a final answer; one whose every copy MQTT
  lost is provably never executed (the audit log never saw its id, no execution maps to it).

Byte-identical copies of one result (QoS 1 redelivery) count once.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.mqtt.topics import Topics
from tests.reliability.checks import decisions, find_secrets, match_executions, tally_results
from tests.reliability.conftest import Figures
from tests.support.broker import MosquittoProcess
from tests.support.daemon import (
    CHAOS_APP,
    PAHO_SOCKET_ERROR,
    TRACEBACK,
    CommandStream,
    DaemonConfig,
    DaemonProcess,
    MqttObserver,
    Sent,
    audit_records,
    daemon_running,
    error_lines,
    iso,
    known_secrets,
    login_cli,
    run_sources,
    running_simulator,
    wait_until,
)

STOP_MARGIN_S = 0.1
RETRY_AFTER_S = 4.0
RECOVERY_BAR_S = 5.0
DOWNTIME_S = (0.2, 2.0)
CALM_S = (0.8, 2.0)  # commands flowing between one recovery and the next restart


@dataclass(frozen=True, slots=True)
class Outage:
    stopped_at: float  # monotonic
    stopped_wall: float
    up_at: float
    downtime_s: float
    online_s: float  # broker up → the bridge's `online`
    republish_s: float  # the bridge's `online` → every retained topic is back
    observer_first: bool  # the test client was subscribed again before the bridge reconnected
    observer_wall: float  # when the test client was subscribed again (wall clock)

    @property
    def total_s(self) -> float:
        return self.online_s + self.republish_s


# -- recovery ------------------------------------------------------------------------------------


def retained_topics(mqtt: MqttObserver, config: DaemonConfig, since: float = 0.0) -> set[str]:
    """Topics of retained documents (states, discovery, bridge state) holding a payload now."""
    latest = {}
    for message in mqtt.snapshot():
        if message.at >= since and message.topic.startswith(
            (f"{config.base}/", f"{config.prefix}/")
        ):
            latest[message.topic] = message.payload
    transient = (f"{config.base}/app/", f"{config.base}/bridge/event")
    return {t for t, payload in latest.items() if payload and not t.startswith(transient)}


def needed_topics(config: DaemonConfig) -> set[str]:
    kinds = ("status", "health", "availability", "budget")
    needed = {f"{config.base}/{slug}/{kind}" for slug in config.vehicles for kind in kinds}
    return needed | {
        f"{config.base}/bridge/state",
        f"{config.prefix}/device/{Topics(base=config.base).bridge_node_id}/config",
    }


def baseline(mqtt: MqttObserver, config: DaemonConfig, daemon: DaemonProcess) -> set[str]:
    """The retained topics a healthy bridge keeps, once states and discovery are all out."""
    try:
        topics: set[str] = wait_until(
            lambda: (
                needed_topics(config) <= retained_topics(mqtt, config)
                and retained_topics(mqtt, config)
            ),
            30,
            what="states and discovery",
        )
    except AssertionError as exc:
        missing = needed_topics(config) - retained_topics(mqtt, config)
        raise AssertionError(f"{exc}: missing {sorted(missing)}\n{daemon.tail()}") from None
    return topics


def restart_and_recover(
    broker: MosquittoProcess,
    mqtt: MqttObserver,
    config: DaemonConfig,
    expected: set[str],
    downtime: float,
) -> Outage:
    """Restart the broker, then time the bridge's reconnect and its republishing."""
    stopped_at, stopped_wall = time.monotonic(), time.time()
    broker.restart(downtime)
    up_at = time.monotonic()
    online = wait_until(
        lambda: mqtt.first(f"{config.base}/bridge/state", b"online", since=stopped_at),
        30,
        what="the bridge's online after the restart",
    )

    def complete() -> float | None:
        seen = {m.topic: m.at for m in mqtt.snapshot() if m.at >= stopped_at and m.payload}
        return max(seen[t] for t in expected) if expected <= seen.keys() else None

    done = wait_until(complete, 30, what="every retained topic republished")
    observer = next(s for s in mqtt.subscribed if s[0] >= stopped_at)
    return Outage(
        stopped_at=stopped_at,
        stopped_wall=stopped_wall,
        up_at=up_at,
        downtime_s=downtime,
        online_s=max(0.0, online.at - up_at),
        republish_s=done - online.at,
        observer_first=not online.retain,  # a live `online`: we were listening when it came
        observer_wall=observer[1],
    )


# -- judging -------------------------------------------------------------------------------------


def listening_windows(
    mqtt: MqttObserver, config: DaemonConfig, outages: list[Outage]
) -> list[tuple[float, float]]:
    """[the bridge's online, the next broker stop minus margin) for each broker run (monotonic)."""
    starts = [0.0, *(o.stopped_at for o in outages)]
    ends = [*(o.stopped_at for o in outages), float("inf")]
    windows = []
    for start, end in zip(starts, ends, strict=True):
        online = mqtt.first(f"{config.base}/bridge/state", b"online", since=start)
        if online is not None:
            windows.append((online.at, end - STOP_MARGIN_S))
    return windows


def reached_bridge(item: Sent, acks: dict[int, float], windows: list[tuple[float, float]]) -> bool:
    """Acknowledged by the broker while the bridge was listening: MQTT owed it delivery."""
    acked = acks.get(item.mid)
    return acked is not None and any(s <= item.at and acked <= e for s, e in windows)


def excused_windows(outages: list[Outage]) -> list[tuple[float, float]]:
    """Wall-clock spans in which a result could be lost by MQTT, not by the bridge: just before
    each stop, and — when the test client subscribed again only after the bridge reconnected —
    the whole outage until the client was back."""
    spans = []
    for o in outages:
        end = o.stopped_wall if o.observer_first else o.observer_wall
        spans.append((o.stopped_wall - STOP_MARGIN_S, end))
    return spans


def result_moment(records: list[dict[str, Any]], command_id: str) -> float | None:
    """When the bridge published the command's own final result (not the `duplicate_id` answer
    to a later copy): the time of its outcome, or of its refusal."""
    own = [
        r
        for r in records
        if r.get("id") == command_id
        and r.get("kind") in ("command.decision", "command.outcome")
        and r.get("reason") != "duplicate_id"
    ]
    ending = next((r for r in own if r["kind"] == "command.outcome"), own[0] if own else None)
    return iso(ending["ts"]).timestamp() if ending else None


def judge(
    stream: CommandStream,
    mqtt: MqttObserver,
    config: DaemonConfig,
    executed: list[dict[str, Any]],
    outages: list[Outage],
    figures: Figures,
) -> None:
    windows = listening_windows(mqtt, config, outages)
    excused = excused_windows(outages)
    tally = tally_results(mqtt.results(config.base))
    records = audit_records(config.state_dir)
    decided = Counter(str(r["id"]) for r in decisions(records))
    allowed = Counter(str(r["id"]) for r in decisions(records, "allowed"))
    match = match_executions(executed, records)
    delivered = Counter(s.id for s in stream.sent if reached_bridge(s, mqtt.acks, windows))

    def owed_result(command_id: str) -> bool:
        moment = result_moment(records, command_id)
        return moment is not None and not any(a <= moment <= b for a, b in excused)

    owed = [cid for cid in delivered if owed_result(cid)]
    figures.update(
        restarts=len(outages),
        outages=[asdict(o) for o in outages],
        downtime_s_max=round(max((o.downtime_s for o in outages), default=0), 3),
        online_s_max=round(max((o.online_s for o in outages), default=0), 3),
        republish_s_max=round(max((o.republish_s for o in outages), default=0), 3),
        broker_up_to_complete_s_max=round(max((o.total_s for o in outages), default=0), 3),
        commands=len(stream.ids),
        publishes=len(stream.sent),
        retries=sum(1 for s in stream.sent if s.attempt > 1),
        publishes_delivered_by_mqtt=sum(delivered.values()),
        commands_owed_a_result=len(owed),
        commands_with_one_final=sum(1 for cid in stream.ids if tally.count(cid) == 1),
        commands_answered_only_duplicate=sum(
            1 for cid in stream.ids if tally.count(cid) == 0 and tally.duplicates[cid]
        ),
        commands_never_decided=sum(1 for cid in stream.ids if cid not in decided),
        duplicate_refusals=sum(tally.duplicates.values()),
        final_statuses=dict(
            Counter(f"{r[0]['status']}/{r[0]['reason']}" for r in tally.finals.values())
        ),
        executed=len(executed),
        executed_twice=sum(1 for v in match.by_id.values() if len(v) > 1),
    )
    unheard = [cid for cid, n in delivered.items() if decided[cid] < n]
    assert not unheard, f"publishes MQTT delivered that the bridge never decided: {unheard}"
    missing = [cid for cid in owed if tally.count(cid) != 1]
    assert not missing, f"owed commands without exactly one final result: {missing}"
    several = {cid: len(v) for cid, v in tally.finals.items() if len(v) > 1}
    assert not several, f"commands with more than one final result: {several}"
    twice_allowed = [cid for cid, n in allowed.items() if n > 1]
    assert not twice_allowed, f"commands allowed more than once: {twice_allowed}"
    twice = {cid: len(v) for cid, v in match.by_id.items() if len(v) > 1}
    assert not twice, f"commands executed more than once: {twice}"
    assert not match.unmatched, f"executions no outcome record accounts for: {match.unmatched}"
    ran = [cid for cid in stream.ids if cid not in decided and cid in match.by_id]
    assert not ran, f"commands the bridge never decided were executed: {ran}"
    slow = [o for o in outages if o.republish_s > RECOVERY_BAR_S]
    assert not slow, (
        f"discovery and states not back within {RECOVERY_BAR_S} s of reconnecting: {slow}"
    )


# -- the run -------------------------------------------------------------------------------------


def run_broker_chaos(
    broker: MosquittoProcess,
    root: Path,
    base: str,
    rng: random.Random,
    restarts: int,
    figures: Figures,
) -> None:
    with (
        running_simulator(vehicles=1, speed=60) as sim,
        MqttObserver(broker.host, broker.port) as mqtt,
    ):
        config = DaemonConfig.for_simulator(root, sim, broker, base).write()
        login_output = login_cli(config)
        outages: list[Outage] = []
        with daemon_running(config, mqtt) as daemon:
            expected = baseline(mqtt, config, daemon)
            topic = f"{base}/app/{CHAOS_APP}/car-1/cmd/lock"
            stream = CommandStream(mqtt, topic, base=base, retry_after_s=RETRY_AFTER_S).start()
            try:
                for _ in range(restarts):
                    time.sleep(rng.uniform(*CALM_S))  # the chaos schedule: a random moment
                    outages.append(
                        restart_and_recover(
                            broker, mqtt, config, expected, rng.uniform(*DOWNTIME_S)
                        )
                    )
                time.sleep(rng.uniform(*CALM_S))
                stream.finish()
                # The broker is steady now: every command still unanswered gets through on its
                # app's next retry.
                wait_until(lambda: not stream.unanswered(), 30, what="an answer to every command")
                wait_until(lambda: settled(config), 30, what="every allowed command to end")
            finally:
                stream.stop()
                keep_evidence(root, mqtt, sim.executed(), stream.sent)
            exit_code = daemon.stop()
        executed = sim.executed()
        sources = run_sources(config, mqtt, ("login", login_output))
        secrets = known_secrets(config, sim)
    judge(stream, mqtt, config, executed, outages, figures)
    assert exit_code == 0, "SIGTERM must stop the daemon cleanly"
    assert not TRACEBACK.search(daemon.output()), daemon.tail()
    assert not error_lines(daemon.output()), error_lines(daemon.output())[:5]
    figures["paho_socket_error_lines"] = daemon.output().count(PAHO_SOCKET_ERROR)
    leaks = find_secrets(sources, secrets)
    figures["secret_leaks"] = len(leaks)
    assert not leaks, leaks[:5]


def settled(config: DaemonConfig) -> bool:
    """Every command the bridge decided has its final record (nothing is still at the car)."""
    records = audit_records(config.state_dir)
    allowed = {str(r["id"]) for r in decisions(records, "allowed")}
    ended = {str(r["id"]) for r in records if r.get("kind") == "command.outcome"}
    return allowed <= ended


def keep_evidence(
    root: Path, mqtt: MqttObserver, executed: list[dict[str, Any]], sent: list[Sent]
) -> None:
    """What the run saw, next to the daemon's files, for a post-mortem of a failure."""
    mqtt.dump(root / "mqtt.jsonl")
    (root / "executed.json").write_text(json.dumps(executed, indent=1))
    (root / "sent.json").write_text(
        json.dumps([asdict(s) | {"ack": mqtt.acks.get(s.mid)} for s in sent], indent=1)
    )


def test_commands_survive_broker_restarts(
    own_broker: MosquittoProcess,
    tmp_path: Path,
    base_topic: str,
    chaos_random: random.Random,
    figures: Figures,
) -> None:
    """Across 3 random broker restarts every command is answered once and none runs twice."""
    run_broker_chaos(own_broker, tmp_path, base_topic, chaos_random, 3, figures)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_commands_survive_broker_restarts_soak(
    own_broker: MosquittoProcess,
    tmp_path: Path,
    base_topic: str,
    chaos_random: random.Random,
    figures: Figures,
) -> None:
    """Across 20 random broker restarts every command is answered once and none runs twice."""
    run_broker_chaos(own_broker, tmp_path, base_topic, chaos_random, 20, figures)


def test_broker_going_away_is_not_logged_as_an_error() -> None:
    """paho's socket error on a broker restart is routine: not an ERROR line in the daemon log."""
    import bridge.mqtt.client  # noqa: F401 - installs the filters on the paho logger

    paho_log = logging.getLogger("bridge.mqtt.paho")
    record = paho_log.makeRecord(
        paho_log.name,
        logging.ERROR,
        __file__,
        0,
        "failed to receive on socket: %s",
        (ConnectionResetError(104, "Connection reset by peer"),),
        None,
    )
    assert not paho_log.filter(record) or record.levelno < logging.ERROR
