"""Fakes for polling tests: a settable clock and a scripted provider that charges the gate."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bridge.model import (
    ChargingState,
    CommandOutcome,
    CommandStatus,
    Ignition,
    Operation,
    Status,
    VehicleInfo,
    VehicleState,
)
from bridge.providers.base import CallGate, CallKind, OnAccepted

START = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)


class SimTime:
    """A clock the test (or a ManualTimer) moves."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, at: datetime) -> None:
        assert at >= self.now
        self.now = at


Script = Callable[[datetime], VehicleState | Exception]


def parked(at: datetime) -> VehicleState:
    return VehicleState("v1", at, Status(ignition=Ignition.OFF, charging=ChargingState.NOT_PLUGGED))


def driving(at: datetime) -> VehicleState:
    return VehicleState("v1", at, Status(ignition=Ignition.RUN, charging=ChargingState.NOT_PLUGGED))


class FakeProvider:
    """Charges the gate like the real providers, then answers from `script(now)` (a state, or an
    exception to raise). Each read's time is recorded in `reads`."""

    def __init__(
        self, account: str, *, gate: CallGate, clock: SimTime, script: Script | None = None
    ) -> None:
        self.account = account
        self._gate = gate
        self._clock = clock
        self.script: Script = script or (lambda now: parked(START - timedelta(hours=1)))
        self.reads: list[datetime] = []
        self.queue: deque[VehicleState | Exception] = deque()
        # Run inside `execute`, as a real provider meets (and reports) a status poll's answer.
        self.while_executing: Callable[[], None] | None = None
        self.executed: list[datetime] = []

    async def list_vehicles(self) -> list[VehicleInfo]:
        return [VehicleInfo("v1")]

    async def read(self, vehicle_id: str) -> VehicleState:
        self._gate.charge(self.account, CallKind.READ)
        now = self._clock()
        self.reads.append(now)
        answer = self.queue.popleft() if self.queue else self.script(now)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        return frozenset({Operation.REFRESH})

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        self._gate.charge(self.account, CallKind.COMMAND)
        self.executed.append(self._clock())
        if self.while_executing is not None:
            self.while_executing()
            return CommandOutcome(CommandStatus.TIMED_OUT, cause="provider_rate_limited")
        return CommandOutcome(CommandStatus.SUCCEEDED)

    async def aclose(self) -> None:
        return None
