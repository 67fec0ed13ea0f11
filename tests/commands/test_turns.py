"""One command at a time per car, across processes: the turn files and the forwarder's use of them.

The turns are real `flock`s on real files. Two `CarTurns` on one state directory open the file
separately, and the kernel keeps their locks apart just as it does between two processes; one
test uses a real second process, and `test_e2e_turns.py` the real `ownerlink command`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.commands.forward import BUSY, NOT_SENT, Forwarder, Job, VehicleRoute
from bridge.commands.reasons import Reason
from bridge.commands.results import Ending
from bridge.commands.turns import FOLDER, CarTurns
from bridge.errors import CarBusy
from bridge.model import CommandStatus, Operation
from tests.commands.fakes import ALL_OPERATIONS, FakeProvider
from tests.support.daemon import await_until

pytestmark = pytest.mark.timeout(30)


def open_fds(lock: Path) -> int:
    """How many of this process's descriptors have `lock` open."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += fd.readlink() == lock
        except OSError:  # closed since it was listed
            continue
    return count


async def test_a_free_turn_is_taken_at_once_and_a_held_one_waits(tmp_path: Path) -> None:
    """The first taker does not wait; a second waits until the first lets go, then is told it
    waited. The folder and lock file are private."""
    first, second = CarTurns(tmp_path), CarTurns(tmp_path)
    held = await first.take("ev", within_s=1)
    assert held.waited is False
    assert (tmp_path / FOLDER).stat().st_mode & 0o777 == 0o700
    assert (tmp_path / FOLDER / "ev.lock").stat().st_mode & 0o777 == 0o600

    waiting = asyncio.create_task(second.take("ev", within_s=5))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    other_car = await second.take("ice", within_s=0.01)  # another car is not held up
    other_car.release()

    held.release()
    got = await asyncio.wait_for(waiting, 1)
    assert got.waited is True
    got.release()
    got.release()  # twice is harmless


async def test_a_folder_removed_while_running_is_made_again(tmp_path: Path) -> None:
    turns = CarTurns(tmp_path)
    (await turns.take("ev", within_s=1)).release()
    (tmp_path / FOLDER / "ev.lock").unlink()
    (tmp_path / FOLDER).rmdir()
    held = await turns.take("ev", within_s=1)
    assert held.waited is False
    assert (tmp_path / FOLDER).stat().st_mode & 0o777 == 0o700
    held.release()


async def test_a_turn_not_free_in_time_is_refused_and_leaks_nothing(tmp_path: Path) -> None:
    held = await CarTurns(tmp_path).take("ev", within_s=1)
    lock = tmp_path / FOLDER / "ev.lock"
    assert open_fds(lock) == 1
    started = time.monotonic()
    with pytest.raises(CarBusy):
        await CarTurns(tmp_path).take("ev", within_s=0.3)
    assert 0.3 <= time.monotonic() - started < 3.0  # gave up at the deadline, not much later
    assert open_fds(lock) == 1
    held.release()
    assert open_fds(lock) == 0


async def test_cancelling_a_wait_leaks_nothing(tmp_path: Path) -> None:
    held = await CarTurns(tmp_path).take("ev", within_s=1)
    lock = tmp_path / FOLDER / "ev.lock"
    waiting = asyncio.create_task(CarTurns(tmp_path).take("ev", within_s=10))
    await asyncio.sleep(0.05)
    assert open_fds(lock) == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert open_fds(lock) == 1
    held.release()


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


async def test_a_process_killed_at_the_car_frees_its_turn(tmp_path: Path) -> None:
    """Another process holds the car; while it lives, the turn waits; `kill -9` frees it."""
    (tmp_path / FOLDER).mkdir(mode=0o700)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / FOLDER / "ev.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(CarBusy):
            await CarTurns(tmp_path).take("ev", within_s=0.2)
        waiting = asyncio.create_task(CarTurns(tmp_path).take("ev", within_s=10))
        await asyncio.sleep(0.1)
        holder.send_signal(signal.SIGKILL)
        got = await asyncio.wait_for(waiting, 5)
        assert got.waited is True
        got.release()
    finally:
        holder.kill()
        holder.wait()


# -- the forwarder -------------------------------------------------------------------------------


class Forwarding:
    """A forwarder as one process has it: its own turns on the shared state directory."""

    def __init__(self, state_dir: Path, provider: FakeProvider, *, timeout_s: float = 5) -> None:
        self.provider = provider
        self.route = VehicleRoute(provider=provider, vehicle_id="car-1", supported=ALL_OPERATIONS)  # type: ignore[arg-type]
        self.endings: dict[str, Ending] = {}
        self.rechecked: list[str] = []
        self.forwarder: Forwarder[str] = Forwarder(
            timeout_s=timeout_s,
            on_accepted=lambda _job: None,
            on_done=self._done,
            recheck=self._recheck,
            turns=CarTurns(state_dir),
        )

    def _done(self, job: Job[str], ending: Ending) -> None:
        self.endings[job.ticket] = ending

    def _recheck(self, job: Job[str]) -> Ending | None:
        self.rechecked.append(job.ticket)
        return None

    def send(self, name: str, operation: Operation = Operation.LOCK) -> None:
        self.forwarder.enqueue(Job("ev", self.route, operation, name))

    async def ended(self, name: str, within_s: float = 5) -> Ending:
        await await_until(lambda: name in self.endings, within_s, what=f"{name} to end")
        return self.endings[name]


async def test_a_second_process_waits_for_the_car_then_checks_its_command_again(
    tmp_path: Path,
) -> None:
    """Process A's command is at the car (its provider call not finished); process B's command
    for the same car is not sent until A's has ended, and then is checked again, as a command
    that waited behind another is."""
    daemon = Forwarding(tmp_path, FakeProvider(gate=asyncio.Event()))
    owner = Forwarding(tmp_path, FakeProvider())
    daemon.send("daemon-lock")
    await asyncio.sleep(0.05)
    assert daemon.provider.executed == [("car-1", Operation.LOCK)]

    owner.send("owner-unlock", Operation.UNLOCK)
    await asyncio.sleep(0.3)
    assert owner.provider.executed == []  # the car is busy with the daemon's command

    assert daemon.provider.gate is not None
    daemon.provider.gate.set()
    assert (await daemon.ended("daemon-lock")).status is CommandStatus.SUCCEEDED
    assert (await owner.ended("owner-unlock")).status is CommandStatus.SUCCEEDED
    assert owner.provider.executed == [("car-1", Operation.UNLOCK)]
    assert owner.rechecked == ["owner-unlock"]
    assert daemon.rechecked == []  # it went at once
    await daemon.forwarder.stop()
    await owner.forwarder.stop()


async def test_a_car_kept_past_the_timeout_fails_the_waiting_command_unsent(
    tmp_path: Path,
) -> None:
    """Held by another process for longer than the command timeout: `failed`, `vehicle_busy`,
    never sent; the process's next command for the car still runs once the car is free."""
    held = await CarTurns(tmp_path).take("ev", within_s=1)
    owner = Forwarding(tmp_path, FakeProvider(), timeout_s=0.3)
    owner.send("first")
    ending = await owner.ended("first")
    assert ending == BUSY
    assert (ending.status, ending.reason) == (CommandStatus.FAILED, Reason.VEHICLE_BUSY)
    assert owner.provider.executed == []
    held.release()
    owner.send("second")
    assert (await owner.ended("second")).status is CommandStatus.SUCCEEDED
    await owner.forwarder.stop()


async def test_stopping_while_waiting_for_the_car_ends_the_command_not_sent(
    tmp_path: Path,
) -> None:
    held = await CarTurns(tmp_path).take("ev", within_s=1)
    owner = Forwarding(tmp_path, FakeProvider())
    owner.send("waiting")
    await asyncio.sleep(0.05)
    await owner.forwarder.stop()
    assert owner.endings["waiting"] == NOT_SENT
    assert owner.provider.executed == []
    held.release()


async def test_an_unusable_turn_file_fails_the_command_unsent(tmp_path: Path) -> None:
    """A state directory where the lock file cannot be made: the command is not sent, and says
    why; the worker lives on."""
    (tmp_path / FOLDER).mkdir(mode=0o700)
    (tmp_path / FOLDER / "ev.lock").symlink_to(tmp_path / "elsewhere")  # never followed
    owner = Forwarding(tmp_path, FakeProvider())
    owner.send("first")
    ending = await owner.ended("first")
    assert (ending.status, ending.reason) == (CommandStatus.FAILED, Reason.STATE_UNAVAILABLE)
    assert "symbolic link" in ending.detail
    # The app is told which file, not where the owner keeps it (the log says that).
    assert "ev.lock" in ending.detail and str(tmp_path) not in ending.detail
    assert owner.provider.executed == []
    (tmp_path / FOLDER / "ev.lock").unlink()
    owner.send("second")
    assert (await owner.ended("second")).status is CommandStatus.SUCCEEDED
    await owner.forwarder.stop()
