"""An `ownerlink command` still waiting for the car when the daemon starts keeps its own ending:
the daemon answers it as interrupted only once its process is gone (bridge.commands.inflight)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.audit.chain import read_records
from bridge.audit.log import AuditLog, audit_directory
from bridge.commands.inflight import no_owner_command_running, owner_command_running
from bridge.config import Settings
from bridge.daemon import Daemon
from bridge.demo.run import login
from bridge.simulator import Simulator
from bridge.store import Store
from tests.conftest import BrokerAddress
from tests.daemon.test_run import _first_slug, _sim_vehicle_ids, _until, settings_for, sim

__all__ = ["sim"]  # a fixture, used by name


def _append(settings: Settings, kind: str, **fields: Any) -> None:
    """What another process (an `ownerlink command`, a killed daemon) wrote to the log."""
    with AuditLog(
        audit_directory(settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=settings.audit.rotate_bytes,
    ) as log:
        log.append(kind, **fields)


def _outcomes(settings: Settings) -> list[tuple[str, str, str]]:
    records = read_records(audit_directory(settings.state_dir))
    return [(r["id"], r["status"], r["reason"]) for r in records if r["kind"] == "command.outcome"]


async def test_an_owner_command_still_at_the_car_at_start_ends_once_as_it_really_ended(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """Three allowed commands without an outcome at start: an app's, cut off by a kill, is
    answered at once; the owner's `o1` is still running in its `ownerlink command`, which then
    writes how it really ended; the owner's `o2` belonged to a command killed meanwhile. The log
    ends with one outcome each: `o1` as it ended, `o2` answered once no command runs."""
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    slug = await _first_slug(settings)
    Store.open(settings.state_dir).close()  # the database is older than the records
    where = {"vehicle": slug, "command": "lock", "action": "LOCK"}
    for source, app, id_ in (
        ("mqtt", "node-red", "k1"),
        ("owner", "owner", "o1"),
        ("owner", "owner", "o2"),
    ):
        _append(
            settings,
            "command.decision",
            source=source,
            app=app,
            id=id_,
            decision="allowed",
            reason="ok",
            **where,
        )
    cli = ExitStack()  # the running `ownerlink command`
    cli.enter_context(owner_command_running(settings.state_dir))
    running = Daemon(settings)
    try:
        await running.start()
        # Answered once the log has been checked against the broker's head (a second or so).
        await _until(lambda: _outcomes(settings) == [("k1", "timed_out", "interrupted")])
        await asyncio.sleep(1.5)  # the daemon looks each second: still not its to answer
        assert len(_outcomes(settings)) == 1
        _append(
            settings,
            "command.outcome",
            source="owner",
            app="owner",
            id="o1",
            status="succeeded",
            reason="ok",
            **where,
        )
        cli.close()  # the command's process ends (o2's had died without writing)
        await _until(lambda: len(_outcomes(settings)) == 3, 5)
    finally:
        cli.close()
        await running.stop()
    assert _outcomes(settings) == [
        ("k1", "timed_out", "interrupted"),
        ("o1", "succeeded", "ok"),
        ("o2", "timed_out", "interrupted"),
    ]


async def test_ownerlink_command_holds_the_lock_from_before_its_decision_to_after_its_outcome(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """Watched from outside while `ownerlink command` runs: every time its decision is in the
    log without its outcome, a starting daemon would find the lock taken."""
    from bridge.cli.command import send
    from bridge.config import VehicleConfig
    from bridge.events import CollectingAlerts
    from bridge.model import Command

    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    slug = await _first_slug(settings)
    vehicles = {slug: VehicleConfig(account="sim", id=_sim_vehicle_ids(settings)[0])}
    owner = settings.model_copy(update={"vehicles": vehicles})
    task = asyncio.create_task(
        send(owner, slug, Command.LOCK, "LOCK", code=None, alerts=CollectingAlerts())
    )
    open_seen = 0
    while not task.done():
        with no_owner_command_running(settings.state_dir) as alone:
            kinds = [r["kind"] for r in read_records(audit_directory(settings.state_dir))]
            if kinds.count("command.decision") > kinds.count("command.outcome"):
                open_seen += 1
                assert not alone
        await asyncio.sleep(0.01)
    assert (await task).status.value == "succeeded"
    assert open_seen > 0  # the watch did see the command at the car
