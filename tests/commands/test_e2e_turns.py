"""The daemon's command path and a real `ownerlink command` process take turns at one car.

The command path runs here as the daemon has it (real broker, real simulator over HTTP); the
owner's command runs as its own process on the same state directory. The simulator takes 3 s to
carry out a command, much longer than the owner's process takes to start, so without turns the
second command would reach the car while the first is still under way. Ground truth: when the
simulated car received each command.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.audit.log import audit_directory
from bridge.audit.verify import verify
from bridge.commands.stepup import code_at, enroll
from bridge.config import CommandsConfig
from bridge.simulator import Limits, SimClock, Simulator, Timings, serve_in_thread
from tests.commands.e2e import E2E, e2e_settings, now, running
from tests.conftest import BrokerAddress
from tests.providers.simulated import SIM_CLIENT, make_sim
from tests.support.daemon import await_until

pytestmark = pytest.mark.timeout(90)

# Long enough that the owner's `ownerlink command`, a new Python process with its config and
# audit checks to read first, still finds the daemon's command at the car on a loaded machine.
CAR_TAKES_S = 6.0
# Status polls backing off from 0.05 s see the car's 6 s out (8 polls span 12.75 s), and the
# timeout leaves room to wait for the other process's command first.
ROOM_TO_WAIT = CommandsConfig(status_poll_interval_s=0.05, timeout_s=45)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, str]]:
    sim = make_sim(
        clock=SimClock(speed=1.0),  # real time: when the car got each command is the truth
        timings=Timings(command_delay_s=CAR_TAKES_S),
        limits=Limits(per_minute=10**6, per_day=10**8, suspend_after=10**6),
    )
    with serve_in_thread(sim) as base:
        yield sim, base


def owner_config(e2e: E2E, broker: BrokerAddress, path: Path) -> Path:
    """The daemon's settings as the config file `ownerlink command` reads."""
    settings = e2e.settings
    account = settings.accounts["home"].model_dump(mode="json")
    account["client_secret"] = SIM_CLIENT["client_secret"]
    doc: dict[str, Any] = {
        "state_dir": str(settings.state_dir),
        "accounts": {"home": account},
        "vehicles": {s: {"account": "home", "id": v.id} for s, v in settings.vehicles.items()},
        "mqtt": {"host": broker.host, "port": broker.port, "base_topic": settings.mqtt.base_topic},
        "commands": {"status_poll_interval_s": 0.05, "timeout_s": 45},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


async def owner_command(config: Path, *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "command",
        *argv,
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def received(e2e: E2E, car: int) -> list[tuple[str, datetime]]:
    """Ground truth: each command the car got, and when (the simulator's clock: real time)."""
    doc = httpx.get(f"{e2e.base}/sim/vehicles", timeout=5).json()
    executed = doc["vehicles"][car]["executed"]
    return [(e["command"], datetime.fromisoformat(e["at"])) for e in executed]


async def test_the_owners_command_waits_while_the_daemons_is_at_the_car(
    settings_args: dict[str, Any], broker: BrokerAddress, tmp_path: Path
) -> None:
    """Home Assistant's LOCK is at the car; `ownerlink command ice unlock`, started meanwhile,
    reaches the car only once the lock has ended (saying on stderr that it waits), and both
    succeed; the audit log verifies."""
    settings = e2e_settings(**settings_args, commands=ROOM_TO_WAIT)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        config = owner_config(e2e, broker, tmp_path / "config.yaml")
        code = code_at(enroll(settings.state_dir, force=True), now())
        before = len(received(e2e, 1))
        e2e.app.send("ha", "ice", "lock", "LOCK")
        assert (await e2e.app.next())["status"] == "accepted"

        owner = await owner_command(config, "ice", "unlock", "--code", code)
        out, err = await asyncio.wait_for(owner.communicate(), 60)
        daemons = await e2e.app.final()

        assert owner.returncode == 0, err.decode()
        assert out.decode().strip() == "lock UNLOCK on ice: succeeded"
        assert "car busy with another ownerlink process's command: waiting" in err.decode()
        assert (daemons["status"], daemons["action"]) == ("succeeded", "LOCK")
        (lock, lock_at), (unlock, unlock_at) = received(e2e, 1)[before:]
        assert (lock, unlock) == ("lock", "unlock")
        assert (unlock_at - lock_at).total_seconds() >= CAR_TAKES_S
        assert verify(audit_directory(settings.state_dir)).ok


async def test_the_daemons_command_waits_while_the_owners_is_at_the_car(
    settings_args: dict[str, Any], broker: BrokerAddress, tmp_path: Path
) -> None:
    """The other way round: the owner's LOCK is at the car when Home Assistant's command comes;
    the daemon sends it only after the owner's has ended, and its result says so."""
    settings = e2e_settings(**settings_args, commands=ROOM_TO_WAIT)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        config = owner_config(e2e, broker, tmp_path / "config.yaml")
        before = len(received(e2e, 1))
        owner = await owner_command(config, "ice", "lock")
        await await_until(
            lambda: len(received(e2e, 1)) > before, 20, interval=0.05, what="the owner's command"
        )

        e2e.app.send("ha", "ice", "lock", "LOCK")
        accepted = await e2e.app.next(timeout=20)
        out, err = await asyncio.wait_for(owner.communicate(), 60)
        daemons = await e2e.app.final()

        assert owner.returncode == 0, err.decode()
        assert out.decode().strip() == "lock LOCK on ice: succeeded"
        assert accepted["status"] == "accepted"
        assert daemons["status"] == "succeeded"
        (first, first_at), (second, second_at) = received(e2e, 1)[before:]
        assert (first, second) == ("lock", "lock")
        assert (second_at - first_at).total_seconds() >= CAR_TAKES_S
        assert verify(audit_directory(settings.state_dir)).ok
