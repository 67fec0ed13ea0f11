"""Turns at the car between processes: a lock file per vehicle, held while a command is at it.

Within one process the forwarder already sends one command at a time per vehicle. But
`ownerlink command` runs its own pipeline beside the daemon, and without a shared turn the
owner's UNLOCK could reach the car while the daemon's LOCK is still being carried out, or
before it. So every forwarder takes the vehicle's turn (an exclusive `flock` on
`<state_dir>/car-turns/<vehicle>.lock`) before it calls the provider, and gives it back once the
command has its ending. The kernel drops the lock of a process that dies, so a crash never
leaves a car taken.

`flock` has no way to wake an event loop, so a process that finds the turn taken asks again
after a short sleep (5 ms, doubling to 100 ms): the other process's command takes seconds, and
a waiter is late by at most one sleep. Of two processes waiting, the first to ask once the car
is free goes first, not the first to arrive; each process keeps its own commands in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

from bridge.errors import CarBusy, StateError
from bridge.files import open_lock
from bridge.logs import get_logger
from bridge.store import ensure_private_dir

log = get_logger(__name__)

FOLDER = "car-turns"
FIRST_PAUSE_S = 0.005
LONGEST_PAUSE_S = 0.1


class Turn:
    """A vehicle's turn, held. `waited`: another process had it first, so the command waited
    and may need checking again."""

    def __init__(self, fd: int, waited: bool) -> None:
        self._fd = fd
        self.waited = waited

    def release(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        with contextlib.suppress(OSError):  # the command has its ending whatever close says
            os.close(fd)  # closing drops the lock


class CarTurns:
    """Each vehicle's turn at the car, shared by every ownerlink process on one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / FOLDER
        self._ready = False

    async def take(self, vehicle: str, *, within_s: float) -> Turn:
        """`vehicle`'s turn, held until `Turn.release()`. CarBusy when another process still
        has it after `within_s`; StateError when the lock file cannot be opened."""
        fd = self._open(vehicle)
        try:
            waited = await self._wait(fd, vehicle, within_s)
        except BaseException:  # CarBusy, or cancelled while waiting
            os.close(fd)
            raise
        return Turn(fd, waited)

    def _open(self, vehicle: str) -> int:
        path = self.folder / f"{vehicle}.lock"
        if self._ready:  # the folder was made: one open, no look at its parents
            try:
                return open_lock(path)
            except StateError as exc:
                if not isinstance(exc.__cause__, FileNotFoundError):
                    raise  # removed since (a tidy-up by hand): made again below
        ensure_private_dir(self.folder)
        self._ready = True
        return open_lock(path)

    @staticmethod
    async def _wait(fd: int, vehicle: str, within_s: float) -> bool:
        if _try_lock(fd):
            return False
        log.info("car busy with another ownerlink process's command: waiting", vehicle=vehicle)
        deadline = time.monotonic() + within_s
        pause = FIRST_PAUSE_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CarBusy("another ownerlink process kept the car busy")
            await asyncio.sleep(min(pause, left))
            if _try_lock(fd):
                return True
            pause = min(pause * 2, LONGEST_PAUSE_S)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
