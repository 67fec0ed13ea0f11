"""The start-up check of the audit log against the head the broker holds, when the broker
cannot answer: no answer is never taken for "no head", and commands wait for the answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge.audit.log import audit_directory
from bridge.audit.verify import Head, verify
from bridge.config import Settings
from bridge.daemon import Anchor, Daemon
from bridge.demo.broker import free_port
from bridge.demo.run import login
from bridge.simulator import Simulator
from tests.conftest import BrokerAddress
from tests.daemon.test_run import (  # the fixtures and helpers of the daemon's own tests
    _retained_head,
    _run_until_anchored,
    _until,
    settings_for,
    sim,
)
from tests.support.front import BrokerFront

__all__ = ["sim"]  # a fixture, used by name


async def _cut_while_stopped(settings: Settings, topic: str, broker: BrokerAddress) -> bytes:
    """Run once until the broker holds the head, then cut the last record off: the head."""
    await login(settings)
    await _run_until_anchored(settings)
    held = _retained_head(broker, topic)
    assert held is not None
    current = audit_directory(settings.state_dir) / "audit.jsonl"
    current.write_bytes(b"".join(current.read_bytes().splitlines(keepends=True)[:-1]))
    return held


def _settings(tmp_path: Path, url: str, broker: BrokerAddress, base_topic: str) -> Settings:
    """The daemon tests' settings, with discovery under a prefix of this test's own (the
    broker is shared, and the demo's test expects no cars left under `homeassistant/`)."""
    settings = settings_for(tmp_path, url, broker, base_topic)
    mqtt = settings.mqtt.model_copy(update={"discovery_prefix": f"{base_topic}-ha"})
    return settings.model_copy(update={"mqtt": mqtt})


def _via(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"port": port})})


async def test_a_broker_that_hangs_up_is_no_answer_and_commands_wait(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """A broker restarting behind its container's port accepts connections and hangs up: that
    is no answer, not "no head". Commands wait; once it answers, the cut is found (the waiting
    command is refused), and the broker's head (the evidence) is never overwritten."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    topic = f"{base_topic}/bridge/audit_head"
    held = await _cut_while_stopped(settings, topic, broker)
    front = BrokerFront(broker.host, broker.port)
    running = Daemon(_via(settings, front.port))
    await running.start()
    try:
        await _until(lambda: front.dropped >= 2)
        assert running._anchor is Anchor.CHECKING
        slug = running.vehicles[0].slug
        waiting = asyncio.ensure_future(running.pipeline.submit_owner(slug, "lock", "LOCK"))
        await asyncio.sleep(1)
        assert not waiting.done()
        front.dropping = False  # the broker is back
        await _until(lambda: running._anchor is Anchor.BROKEN, 20)
        refused = await asyncio.wait_for(waiting, 5)
        assert (refused.status.value, refused.reason) == ("rejected", "audit_tampered")
    finally:
        await running.stop()
        front.close()
    assert _retained_head(broker, topic) == held


async def test_a_broker_down_at_start_is_asked_again_until_it_answers(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """Nothing listens at start; commands wait, the check is tried again, and once the broker
    is up an intact log is confirmed: the waiting command runs, and the head is published."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    port = free_port()
    running = Daemon(_via(settings, port))
    await running.start()
    front = None
    try:
        slug = running.vehicles[0].slug
        waiting = asyncio.ensure_future(running.pipeline.submit_owner(slug, "lock", "LOCK"))
        await asyncio.sleep(1)
        assert not waiting.done()
        front = BrokerFront(broker.host, broker.port, listen=port, dropping=False)
        await _until(lambda: running._anchor is Anchor.HELD, 20)
        done = await asyncio.wait_for(waiting, 10)
        assert done.status.value == "succeeded", done
    finally:
        await running.stop()
        if front is not None:
            front.close()
    assert _retained_head(broker, f"{base_topic}/bridge/audit_head") is not None


async def test_a_head_record_damaged_in_a_rotated_file_stops_commands_not_the_check(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The broker's head record, damaged in a rotated file, is a finding at start (the rotated
    files' joins are checked when the log is opened), never a check left hanging with every
    command waiting; and the broker's copy of the head, the evidence, is not overwritten."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    await _run_until_anchored(settings)
    held = json.loads(_retained_head(broker, f"{base_topic}/bridge/audit_head") or b"{}")
    directory = audit_directory(settings.state_dir)
    damaged = []
    for raw in (directory / "audit.jsonl").read_bytes().splitlines():
        record = json.loads(raw)
        if record["seq"] == held["seq"]:
            del record["hash"]
        damaged.append(json.dumps(record).encode())
    (directory / "audit.000001.jsonl").write_bytes(b"\n".join(damaged) + b"\n")
    (directory / "audit.jsonl").unlink()
    running = Daemon(settings)
    await running.start()
    try:
        assert "audit.000001.jsonl" in (running.audit_problem or "")
        result = await asyncio.wait_for(
            running.pipeline.submit_owner(running.vehicles[0].slug, "lock", "LOCK"), 5
        )
        assert result.reason == "audit_tampered"
        still = _retained_head(broker, f"{base_topic}/bridge/audit_head")
        assert json.loads(still or b"{}") == held
    finally:
        await running.stop()


async def test_a_command_cut_off_the_log_is_not_answered_before_the_check(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The last record (a command's outcome) cut off while stopped: the next start finds the
    cut and appends nothing first. Answering the command "interrupted" before the check wrote a
    record over the gap (verify then said "diverged", not "truncated") and told the app a
    result the broker's head denies."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    topic = f"{base_topic}/bridge/audit_head"
    await login(settings)
    running = Daemon(settings)
    await running.start()
    try:
        await _until(lambda: running._anchor is Anchor.HELD)
        slug = running.vehicles[0].slug
        done = await running.pipeline.submit_owner(slug, "lock", "LOCK")
        assert done.status.value == "succeeded"
        ended = running.audit.head
        await _until(lambda: _retained_head(broker, topic) == _payload(*ended))
    finally:
        await running.stop()
    directory = audit_directory(settings.state_dir)
    current = directory / "audit.jsonl"
    lines = current.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[-1])["kind"] == "command.outcome"
    current.write_bytes(b"".join(lines[:-1]))

    again = Daemon(settings)
    await again.start()
    try:
        await _until(lambda: again._anchor is Anchor.BROKEN, 20)
    finally:
        await again.stop()
    after = current.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["seq"] for line in after] == [
        json.loads(line)["seq"] for line in lines[:-1]
    ]  # not a record more: the cut is left as it was found
    report = verify(directory, head=Head(*ended))
    assert report.problem is not None and report.problem.fault.value == "truncated"


def _payload(seq: int, digest: str) -> bytes:
    return json.dumps({"hash": digest, "seq": seq}, separators=(",", ":")).encode()
