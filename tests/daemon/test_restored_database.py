"""The daemon started on a state database older than its audit log: a revocation the database
lost is applied again before anything runs (bridge.access.catchup)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.audit.chain import read_records
from bridge.audit.log import audit_directory
from bridge.config import Settings
from bridge.daemon import Daemon
from bridge.demo.run import login
from bridge.simulator import Simulator
from tests.conftest import BrokerAddress
from tests.daemon.test_run import settings_for, sim

__all__ = ["sim"]  # a fixture, used by name


async def _with_daemon(settings: Settings, change: str) -> None:
    running = Daemon(settings)
    await running.start()
    try:
        if change == "add":
            running.registry.add("gone", scopes=["read:status", "command:lock"])
        elif change == "revoke":
            running.registry.revoke("gone")
        else:
            assert running.registry.get("gone") is None  # before any command could be decided
    finally:
        await running.stop()


async def test_a_revocation_the_restored_database_lacks_holds_at_the_next_start(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    settings = settings_for(tmp_path, sim[1], broker, base_topic)
    await login(settings)
    await _with_daemon(settings, "add")
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in settings.state_dir.glob("ownerlink.db*"):
        shutil.copy2(path, backup / path.name)
    await _with_daemon(settings, "revoke")
    for path in settings.state_dir.glob("ownerlink.db*"):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, settings.state_dir / path.name)
    await _with_daemon(settings, "check")
    records = list(read_records(audit_directory(settings.state_dir)))
    revoked = [(r["app"], r["actor"]) for r in records if r["kind"] == "app.revoked"]
    assert revoked == [("gone", "owner"), ("gone", "audit-log")]
