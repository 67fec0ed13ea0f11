"""The daemon's start reads the audit log only past the point the last start settled
(bridge.commands.settled), and moves the point on once it has answered what it found."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.audit.chain import read_records, rotated_files
from bridge.audit.log import AuditLog, audit_directory
from bridge.commands.inflight import owner_command_running
from bridge.commands.settled import SETTLED_KEY, save_settled
from bridge.config import Settings
from bridge.daemon import Anchor, Daemon
from bridge.demo.run import login
from bridge.simulator import Simulator
from bridge.store import Store
from tests.conftest import BrokerAddress
from tests.daemon.test_run import _first_slug, _until, document_for, sim

__all__ = ["sim"]  # a fixture, used by name


def _settings(tmp_path: Path, url: str, broker: BrokerAddress, base: str) -> Settings:
    document = document_for(tmp_path, url, broker, base)
    document["audit"] = {"rotate_bytes": 4096}  # many rotated files from a short history
    return Settings(**document)


def _history(settings: Settings, slug: str, commands: list[tuple[str, str, bool]]) -> None:
    """(source, id, ended) commands as the daemon and `ownerlink command` write them, from
    another process's AuditLog (fsync skipped: the files need not outlive the test)."""
    with AuditLog(
        audit_directory(settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=settings.audit.rotate_bytes,
        fsync=lambda fd: None,
    ) as log:
        for source, id_, ended in commands:
            who: dict[str, Any] = {
                "source": source,
                "app": "owner" if source == "owner" else "node-red",
                "id": id_,
                "vehicle": slug,
                "command": "lock",
                "action": "LOCK",
            }
            log.append("command.decision", **who, decision="allowed", reason="ok")
            if ended:
                log.append("command.outcome", **who, status="succeeded", reason="ok")


def _seq_of(settings: Settings, kind: str, id_: str) -> int:
    records = read_records(audit_directory(settings.state_dir))
    return next(r["seq"] for r in records if r["kind"] == kind and r.get("id") == id_)


def _settled(settings: Settings) -> int:
    store = Store.open(settings.state_dir)
    try:
        return int(store.meta(SETTLED_KEY) or -1)
    finally:
        store.close()


def _ended(settings: Settings, id_: str) -> list[str]:
    records = read_records(audit_directory(settings.state_dir))
    return [r["reason"] for r in records if r["kind"] == "command.outcome" and r["id"] == id_]


async def test_a_start_settles_the_log_up_to_what_it_answered(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """A long history with an app's command left open near its end: the start answers it and
    settles the log up to the last record it read, so the next start begins there."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    slug = await _first_slug(settings)
    Store.open(settings.state_dir).close()  # the database is older than the records
    ended = [("mqtt", f"c{n}", True) for n in range(150)]
    _history(settings, slug, [*ended, ("mqtt", "k1", False), ("mqtt", "c150", True)])
    assert len(rotated_files(audit_directory(settings.state_dir))) >= 10
    await _start_and_stop(settings)
    assert _ended(settings, "k1") == ["interrupted"]
    answer = _seq_of(settings, "command.outcome", "k1")
    assert _seq_of(settings, "command.outcome", "c150") <= _settled(settings) < answer


async def test_an_owner_command_still_running_holds_the_point_until_it_is_answered(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """An owner's command open at start while an `ownerlink command` runs is not the start's to
    answer: the point stays before it (a stop now must find it again), and moves past it once
    the daemon has answered it, after the command's process is gone."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    slug = await _first_slug(settings)
    Store.open(settings.state_dir).close()
    ended = [("mqtt", f"c{n}", True) for n in range(60)]
    _history(settings, slug, [*ended, ("owner", "o1", False), ("mqtt", "c60", True)])
    cli = ExitStack()  # a running `ownerlink command` (o1's died without writing its outcome)
    cli.enter_context(owner_command_running(settings.state_dir))
    running = Daemon(settings)
    try:
        await running.start()
        # Settled once the log has been checked against the broker's head (a second or so).
        await _until(lambda: _settled(settings) == _seq_of(settings, "command.decision", "o1") - 1)
        cli.close()
        await _until(lambda: _ended(settings, "o1") == ["interrupted"], 5)
        await _until(lambda: _settled(settings) >= _seq_of(settings, "command.outcome", "c60"), 5)
    finally:
        cli.close()
        await running.stop()
    assert _settled(settings) < _seq_of(settings, "command.outcome", "o1")


async def test_a_point_past_the_head_is_not_trusted(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """A settled point the log does not reach (a log restored from an older copy beside a newer
    database): the start reads the whole log, and answers the command left open at its start."""
    settings = _settings(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    slug = await _first_slug(settings)
    store = Store.open(settings.state_dir)
    save_settled(store, 10_000)
    store.close()
    _history(settings, slug, [("mqtt", "k0", False), *(("mqtt", f"c{n}", True) for n in range(80))])
    await _start_and_stop(settings)
    assert _ended(settings, "k0") == ["interrupted"]
    assert _settled(settings) >= _seq_of(settings, "command.outcome", "c79")


async def _start_and_stop(settings: Settings) -> None:
    """One whole start of the daemon (it answers what the log left open once the log has been
    checked against the broker's head), then its stop."""
    running = Daemon(settings)
    try:
        await running.start()
        await _until(lambda: running._anchor in (Anchor.HELD, Anchor.BROKEN))
    finally:
        await running.stop()
