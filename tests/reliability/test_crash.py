"""Crash: `kill -9` the daemon at random moments while commands flow, and restart it each time.

A client sends LOCK (unique ids) every `INTERVAL_S`; the simulator answers each in about 0.2 s,
so at most moments a command is somewhere between its audit record and the car. Each cycle
starts the daemon, waits for `online`, runs `ownerlink audit verify` (exit 0 required), lets
commands flow for a random time and kills it with SIGKILL; some cycles kill it while it is still
starting. After every kill: the state database passes `PRAGMA integrity_check`, the token file
parses, and (if the daemon had connected) the broker published its last will, `offline`.

At the end the simulator's ground truth is matched against the audit log: every command that
reached a car has a durable `allowed` decision before it (by provider command id where the
outcome was recorded, else by time order), no id is allowed or executed twice, and the daemon
still stops cleanly on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrokerAddress
from tests.reliability.checks import (
    decisions,
    executions_without_decision,
    find_secrets,
    match_executions,
    tally_results,
)
from tests.reliability.conftest import Figures
from tests.support.daemon import (
    CHAOS_APP,
    TRACEBACK,
    CommandStream,
    DaemonConfig,
    DaemonProcess,
    MqttObserver,
    audit_records,
    audit_verify,
    error_lines,
    iso,
    known_secrets,
    login_direct,
    run_sources,
    running_simulator,
    sqlite_integrity,
    token_files_parse,
    wait_until,
)

INTERVAL_S = 0.3
RUN_S = (0.05, 1.0)  # commands flowing after the verify, before the kill
EARLY_KILL_SHARE = 0.25  # cycles killed while the daemon is still starting
EARLY_KILL_S = (0.05, 1.2)


def check_state_files(config: DaemonConfig) -> None:
    """The state a killed daemon leaves must be whole: SQLite, tokens."""
    try:
        integrity = sqlite_integrity(config.state_dir / "ownerlink.db")
    except sqlite3.OperationalError:
        # Read-only opening needs the WAL index a killed writer may not have left; a normal
        # open recovers the WAL exactly as the next daemon start would.
        conn = sqlite3.connect(config.state_dir / "ownerlink.db")
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        conn.close()
    assert integrity == "ok", integrity
    assert "sim" in token_files_parse(config.state_dir)


def will_published(mqtt: MqttObserver, config: DaemonConfig, since: float) -> bool:
    return mqtt.first(f"{config.base}/bridge/state", b"offline", since=since) is not None


def run_crash(
    broker: BrokerAddress, root: Path, base: str, rng: random.Random, kills: int, figures: Figures
) -> None:
    with (
        running_simulator(vehicles=1, speed=1, command_delay_s=0.2) as sim,
        MqttObserver(broker.host, broker.port, (f"{base}/#",)) as mqtt,
    ):
        config = DaemonConfig.for_simulator(root, sim, broker, base).write()
        login_direct(config)
        daemon = DaemonProcess(config)
        topic = f"{base}/app/{CHAOS_APP}/car-1/cmd/lock"
        topic_state = f"{base}/bridge/state"
        stream = CommandStream(mqtt, topic, base=base, interval_s=INTERVAL_S, prefix="c")
        online_s: list[float] = []
        early = 0
        try:
            stream.start()
            for _ in range(kills):
                daemon.start()
                if rng.random() < EARLY_KILL_SHARE:
                    early += 1
                    time.sleep(rng.uniform(*EARLY_KILL_S))  # a random moment of start-up
                else:
                    online_s.append(daemon.wait_online(mqtt))
                    verified = audit_verify(config)
                    assert verified.returncode == 0, verified.stdout + verified.stderr
                    time.sleep(rng.uniform(*RUN_S))  # a random moment while commands flow
                connected = mqtt.first(topic_state, b"online", since=daemon.started_at)
                killed_at = time.monotonic()
                daemon.kill()
                check_state_files(config)
                if connected:  # a daemon killed before it connected has no will to leave
                    will = partial(will_published, mqtt, config, killed_at)
                    wait_until(will, 10, what="the last will")
            last_start = time.time()
            daemon.start()
            online_s.append(daemon.wait_online(mqtt))
            verified = audit_verify(config)
            assert verified.returncode == 0, verified.stdout + verified.stderr
        except BaseException:
            if daemon.alive:  # a failed run must not leave its daemon running for the next tests
                daemon.kill()
            raise
        finally:
            stream.stop()
        try:
            wait_until(lambda: settled(config, last_start), 30, what="the last commands to end")
        finally:
            exit_code = daemon.stop()
        executed = sim.executed()
        sources = run_sources(config, mqtt)
        secrets = known_secrets(config, sim)
    records = audit_records(config.state_dir)
    judge(records, executed, mqtt, config, stream.ids, figures)
    figures.update(kills=kills, early_kills=early, online_s_max=round(max(online_s), 2))
    assert exit_code == 0, daemon.tail()
    assert not TRACEBACK.search(daemon.output()), daemon.tail()
    assert not error_lines(daemon.output()), error_lines(daemon.output())[:5]
    leaks = find_secrets(sources, secrets)
    figures["secret_leaks"] = len(leaks)
    assert not leaks, leaks[:5]


def settled(config: DaemonConfig, since_wall: float) -> bool:
    """Every command allowed since `since_wall` has its outcome (none is still at the car)."""
    records = audit_records(config.state_dir)
    allowed = {
        str(r["id"])
        for r in decisions(records, "allowed")
        if iso(r["ts"]).timestamp() >= since_wall
    }
    ended = {str(r["id"]) for r in records if r.get("kind") == "command.outcome"}
    return allowed <= ended


def judge(
    records: list[dict[str, Any]],
    executed: list[dict[str, Any]],
    mqtt: MqttObserver,
    config: DaemonConfig,
    ids: list[str],
    figures: Figures,
) -> None:
    allowed = Counter(str(r["id"]) for r in decisions(records, "allowed"))
    outcomes = {str(r["id"]) for r in records if r.get("kind") == "command.outcome"}
    match = match_executions(executed, records)
    tally = tally_results(mqtt.results(config.base))
    orphans = executions_without_decision(executed, records)
    figures.update(
        commands=len(ids),
        decided=len({str(r["id"]) for r in decisions(records)}),
        allowed=len(allowed),
        executed=len(executed),
        executed_unlinked=len(match.unmatched),  # the car had it when the daemon died
        allowed_without_outcome=len(set(allowed) - outcomes),  # in flight at a kill
        commands_with_one_final=sum(1 for cid in ids if tally.count(cid) == 1),
        decided_without_result=sum(1 for cid in allowed if tally.count(cid) == 0),
        results_sent_twice=sum(tally.redelivered.values()),
        executions_without_decision=len(orphans),
        audit_records=len(records),
        repairs=sum(1 for r in records if r.get("kind") == "audit.repaired"),
    )
    assert not orphans, f"commands reached the car without an allowed decision first: {orphans}"
    twice_allowed = [cid for cid, n in allowed.items() if n > 1]
    assert not twice_allowed, f"ids allowed more than once: {twice_allowed}"
    twice = {cid: len(v) for cid, v in match.by_id.items() if len(v) > 1}
    assert not twice, f"commands executed more than once: {twice}"
    several = {cid: len(v) for cid, v in tally.finals.items() if len(v) > 1}
    assert not several, f"commands with more than one final result: {several}"
    # An allowed command left without an outcome by a kill is answered `timed_out` on the next
    # start, and a final result a kill kept from the broker is sent again then (delivery.py).
    unanswered = [cid for cid in allowed if tally.count(cid) == 0]
    assert not unanswered, f"allowed commands that never got a final result: {unanswered}"


def test_kill_9_never_leaves_an_unrecorded_command(
    broker: BrokerAddress,
    tmp_path: Path,
    base_topic: str,
    chaos_random: random.Random,
    figures: Figures,
) -> None:
    """Ten kill -9s while commands flow: the audit verifies, state is whole, no unrecorded run."""
    run_crash(broker, tmp_path, base_topic, chaos_random, 10, figures)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_kill_9_never_leaves_an_unrecorded_command_soak(
    broker: BrokerAddress,
    tmp_path: Path,
    base_topic: str,
    chaos_random: random.Random,
    figures: Figures,
) -> None:
    """A hundred kill -9s while commands flow: every check of the short run holds each time."""
    run_crash(broker, tmp_path, base_topic, chaos_random, 100, figures)


@contextlib.contextmanager
def one_car(
    broker: BrokerAddress, tmp_path: Path, base_topic: str, *, ignore_hangup: bool = False
) -> Iterator[tuple[DaemonProcess, MqttObserver]]:
    """A daemon online for one simulated car whose commands take 3 s; SIGTERM at the end if it is
    still running."""
    with (
        running_simulator(vehicles=1, speed=1, command_delay_s=3.0) as sim,
        MqttObserver(broker.host, broker.port, (f"{base_topic}/#",)) as mqtt,
    ):
        config = DaemonConfig.for_simulator(tmp_path, sim, broker, base_topic).write()
        login_direct(config)
        daemon = DaemonProcess(config)
        daemon.start(ignore_hangup=ignore_hangup)
        try:
            daemon.wait_online(mqtt)
            yield daemon, mqtt
        finally:
            if daemon.alive:
                daemon.stop()


def lock_at_the_car(mqtt: MqttObserver, base_topic: str, command_id: str) -> None:
    """Send LOCK and wait until the car has accepted it (it finishes 3 s later)."""
    payload = json.dumps({"action": "LOCK", "id": command_id})
    mqtt.publish(f"{base_topic}/app/{CHAOS_APP}/car-1/cmd/lock", payload)
    wait_until(
        lambda: any(r["status"] == "accepted" for r in mqtt.results(base_topic)),
        10,
        what="the car to accept the command",
    )


def test_command_in_flight_at_a_kill_gets_a_final_result_after_restart(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """A command at the car when the daemon is killed is answered (timed_out) after the restart."""
    with one_car(broker, tmp_path, base_topic) as (daemon, mqtt):
        lock_at_the_car(mqtt, base_topic, "k1")
        daemon.kill()
        daemon.start()
        daemon.wait_online(mqtt)
        wait_until(
            lambda: tally_results(mqtt.results(base_topic)).count("k1") == 1,
            10,
            what="a final result for the command in flight at the kill",
        )


def test_a_hang_up_stops_the_daemon_cleanly_mid_command(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """SIGHUP (the terminal or ssh session it was started from went away) is a clean stop like
    SIGTERM: exit 0, and the command at the car gets its final result before the daemon goes,
    not at the next start."""
    with one_car(broker, tmp_path, base_topic) as (daemon, mqtt):
        lock_at_the_car(mqtt, base_topic, "h1")
        assert daemon.hang_up() == 0
        wait_until(
            lambda: tally_results(mqtt.results(base_topic)).count("h1") == 1,
            5,
            what="the command's final result, published before the exit",
        )
        assert audit_verify(daemon.config).returncode == 0


def test_under_nohup_a_hang_up_is_left_ignored(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """Started with SIGHUP ignored (`nohup`), the owner asked it to outlive the terminal: a hang
    up changes nothing, and SIGTERM still stops it cleanly."""
    with one_car(broker, tmp_path, base_topic, ignore_hangup=True) as (daemon, _mqtt):
        os.kill(daemon.pid, signal.SIGHUP)
        time.sleep(1.0)
        assert daemon.alive
        assert daemon.stop() == 0
