"""FordConnect v1 commands: what each does to the car, how it is polled, and the command book.

A command reaches the car when the POST is accepted (simulated time of the POST); its result is
held back as PENDINGRESPONSE for a real-time delay, and its id expires after a real-time
lifetime, because clients poll on a wall clock whatever the simulation speed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from random import Random

from bridge.simulator.car import Car, Outcome

PENDING = "PENDINGRESPONSE"


@dataclass(frozen=True, slots=True)
class CommandKind:
    name: str
    polled_as: frozenset[str]  # path segments under which its status may be polled
    run: Callable[[Car, datetime], Outcome]
    electric_only: bool = False
    remote_start: bool = False


def _kind(
    name: str,
    run: Callable[[Car, datetime], Outcome],
    *family: str,
    electric_only: bool = False,
    remote_start: bool = False,
) -> CommandKind:
    return CommandKind(name, frozenset({name, *family}), run, electric_only, remote_start)


COMMANDS: dict[str, CommandKind] = {
    k.name: k
    for k in (
        _kind("lock", Car.lock, "unlock"),
        _kind("unlock", Car.unlock, "lock"),
        _kind("startEngine", Car.start_engine, "stopEngine", remote_start=True),
        _kind("stopEngine", Car.stop_engine, "startEngine"),
        _kind("startCharge", Car.start_charge, "stopCharge", electric_only=True),
        _kind("stopCharge", Car.stop_charge, "startCharge", electric_only=True),
        _kind("wake", Car.wake),
        _kind("status", Car.refresh, "statusrefresh"),
        _kind("location", Car.refresh),
        _kind("hornLights", Car.horn_lights),
    )
}


@dataclass(frozen=True, slots=True)
class CommandRecord:
    command_id: str
    command: CommandKind
    vehicle_id: str
    account_id: str
    outcome: Outcome
    ready_mono: float
    expires_mono: float


class CommandBook:
    """Issued command ids, for polling. Callers hold the simulator's lock."""

    def __init__(
        self, *, delay_s: float, lifetime_s: float, rng: Random, monotonic: Callable[[], float]
    ) -> None:
        self.delay_s = delay_s
        self.lifetime_s = lifetime_s
        self._rng = rng
        self._monotonic = monotonic
        self._records: dict[str, CommandRecord] = {}
        self._order: deque[str] = deque()

    def new_id(self) -> str:
        h = f"{self._rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def record(
        self, command_id: str, kind: CommandKind, vehicle_id: str, account_id: str, outcome: Outcome
    ) -> CommandRecord:
        self._forget_expired()
        now = self._monotonic()
        rec = CommandRecord(
            command_id,
            kind,
            vehicle_id,
            account_id,
            outcome,
            now + self.delay_s,
            now + self.lifetime_s,
        )
        self._records[command_id] = rec
        self._order.append(command_id)
        return rec

    def find(self, command_id: str) -> CommandRecord | None:
        """The live record, or None once unknown or expired."""
        self._forget_expired()
        return self._records.get(command_id)

    def status(self, rec: CommandRecord) -> str:
        return PENDING if self._monotonic() < rec.ready_mono else rec.outcome.value

    def _forget_expired(self) -> None:
        # Ids are recorded in expiry order, so the oldest are always at the front.
        now = self._monotonic()
        while self._order and self._records[self._order[0]].expires_mono <= now:
            del self._records[self._order.popleft()]
