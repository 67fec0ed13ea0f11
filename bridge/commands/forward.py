"""Forwarding allowed commands to the car: one queue and one worker task per vehicle, in order.

One at a time per vehicle because the car itself handles one remote command at a time, and
because "LOCK then UNLOCK" must not arrive as "UNLOCK then LOCK". Provider errors become
endings here (see `results.ending_for_error`); the forwarder never retries: a command that may
have reached the car is reported `timed_out`, never sent twice. A 429 on a command's request ends
here too, so the forwarder hands it to `on_refused` for the account's guard (polling must wait out
its Retry-After like a read's).

A job that had to wait behind another is checked again (`recheck`) when its turn comes: a
command for a car busy with a slow one may wait up to the command timeout, and its app may be
revoked meanwhile. A job sent at once was checked a moment before.

Other ownerlink processes on the same state directory (`ownerlink command`) have forwarders
of their own; with `turns`, each takes the vehicle's turn at the car from `CarTurns` before its
call, so the car still gets one command at a time. A job that had to wait for another process
counts as having waited, and one still waiting after the command timeout ends `failed`
(`vehicle_busy`), unsent.

A job may carry `ready`, its decision record still being flushed to disk: the provider's request
waits for it at the door (`bridge.providers.barrier`), so the flush overlaps the preparation, and
a command whose record never becomes durable is not sent at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge.commands.reasons import Reason
from bridge.commands.results import Ending, ending_for_error, ending_for_outcome, state_problem
from bridge.commands.turns import CarTurns
from bridge.errors import CarBusy, RateLimited, StateError
from bridge.logs import get_logger
from bridge.model import CommandStatus, Operation
from bridge.providers.barrier import Durable, held_until
from bridge.providers.base import OnRefused, Provider

# Beyond the configured command timeout, how long before we give up on a provider call that never
# returns. The provider should have timed out first; this only guards against a hung worker.
TIMEOUT_GRACE_S = 10.0

T = TypeVar("T")

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class VehicleRoute:
    """Where commands for one vehicle slug go."""

    provider: Provider
    vehicle_id: str  # the provider's id: never published, never audited
    supported: frozenset[Operation]


@dataclass(slots=True)
class Job(Generic[T]):
    """One allowed command waiting for, or at, the car. `ticket` is the caller's own context."""

    vehicle: str
    route: VehicleRoute
    operation: Operation
    ticket: T
    ready: Durable | None = None  # the decision record's flush, when it is still under way
    sent: bool = False  # the provider was called: the car may have it
    waited: bool = False  # queued behind another job for the same vehicle
    accepted: bool = False  # the provider said the car has it


@dataclass(frozen=True, slots=True)
class _Worker(Generic[T]):
    queue: asyncio.Queue[Job[T]]
    task: asyncio.Task[None]


NOT_SENT = Ending(CommandStatus.FAILED, Reason.SHUTTING_DOWN, "the bridge stopped before sending")
IN_FLIGHT = Ending(CommandStatus.TIMED_OUT, Reason.SHUTTING_DOWN, "the bridge stopped mid-command")
BUSY = Ending(
    CommandStatus.FAILED,
    Reason.VEHICLE_BUSY,
    "another ownerlink process kept the car busy for longer than the command timeout; not sent",
)


class Forwarder(Generic[T]):
    """Per-vehicle queues. `on_accepted(job)` when the car has it, `on_done(job, ending)` once;
    `recheck(job)`, for a job that waited, ends it unsent when it returns an ending."""

    def __init__(
        self,
        *,
        timeout_s: float,
        on_accepted: Callable[[Job[T]], None],
        on_done: Callable[[Job[T], Ending], None],
        recheck: Callable[[Job[T]], Ending | None] = lambda _job: None,
        on_refused: OnRefused | None = None,
        turns: CarTurns | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.turns = turns
        self.on_accepted = on_accepted
        self.on_done = on_done
        self.recheck = recheck
        self.on_refused = on_refused
        self._workers: dict[str, _Worker[T]] = {}
        self._busy: set[str] = set()  # vehicles whose worker is at the car

    def enqueue(self, job: Job[T]) -> None:
        """Queue behind the vehicle's earlier commands; never blocks."""
        worker = self._worker(job.vehicle)
        job.waited = job.vehicle in self._busy or not worker.queue.empty()
        worker.queue.put_nowait(job)

    async def stop(self) -> None:
        """End queued jobs as not sent and cancel the ones in flight (they end `timed_out`)."""
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            while not worker.queue.empty():
                self._done(worker.queue.get_nowait(), NOT_SENT)
            worker.task.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task

    def _worker(self, vehicle: str) -> _Worker[T]:
        worker = self._workers.get(vehicle)
        if worker is None:
            queue: asyncio.Queue[Job[T]] = asyncio.Queue()
            task = asyncio.get_running_loop().create_task(
                self._run(queue), name=f"commands:{vehicle}"
            )
            worker = self._workers[vehicle] = _Worker(queue, task)
        return worker

    async def _run(self, queue: asyncio.Queue[Job[T]]) -> None:
        while True:
            job = await queue.get()
            self._busy.add(job.vehicle)
            try:
                ending = await self._take_turn(job)
            except asyncio.CancelledError:
                self._done(job, IN_FLIGHT if job.sent else NOT_SENT)
                raise
            finally:
                self._busy.discard(job.vehicle)
            self._done(job, ending)

    async def _take_turn(self, job: Job[T]) -> Ending:
        if self.turns is None:
            return self._checked_again(job) or await self._call(job)
        try:
            turn = await self.turns.take(job.vehicle, within_s=self.timeout_s)
        except CarBusy:
            return BUSY
        except (StateError, OSError) as exc:  # no lock file, no turn: nothing is sent
            log.error(  # noqa: TRY400 - the problem is the message; a traceback adds nothing
                "cannot take the car's turn", vehicle=job.vehicle, error=str(exc)
            )
            detail = f"not sent: {state_problem(exc)}"
            return Ending(CommandStatus.FAILED, Reason.STATE_UNAVAILABLE, detail)
        try:
            job.waited = job.waited or turn.waited
            return self._checked_again(job) or await self._call(job)
        finally:
            turn.release()

    def _checked_again(self, job: Job[T]) -> Ending | None:
        if not job.waited:
            return None
        try:
            return self.recheck(job)
        except Exception as exc:  # unsure whether it may still go: it does not
            log.exception("command re-check failed", vehicle=job.vehicle)
            return Ending(CommandStatus.REJECTED, Reason.INTERNAL_ERROR, f"re-check failed: {exc}")

    def _done(self, job: Job[T], ending: Ending) -> None:
        try:
            self.on_done(job, ending)
        except Exception:  # the worker must outlive a bad callback, or the vehicle goes deaf
            log.exception("command completion failed", vehicle=job.vehicle)

    async def _call(self, job: Job[T]) -> Ending:
        async def accepted(_provider_command_id: str) -> None:
            job.accepted = True
            self.on_accepted(job)

        job.sent = True
        try:
            async with asyncio.timeout(self.timeout_s + TIMEOUT_GRACE_S):
                with held_until(job.ready):
                    outcome = await job.route.provider.execute(
                        job.route.vehicle_id, job.operation, on_accepted=accepted
                    )
                if job.ready is not None:
                    # Passed already if a request went out; if none did, still report nothing
                    # before the decision that led to it is on disk.
                    await job.ready.durable()
        except Exception as exc:  # noqa: BLE001 - every provider failure becomes an ending
            self._refused(job, exc)
            return ending_for_error(exc, accepted=job.accepted)
        return ending_for_outcome(outcome)

    def _refused(self, job: Job[T], exc: Exception) -> None:
        """A 429 stops here, so the account's guard hears of it from us. A 403 to a command's
        request is not passed on: it may be the car's remote-start allowance, not the account."""
        if not isinstance(exc, RateLimited) or self.on_refused is None:
            return
        try:
            self.on_refused(job.route.provider.account, exc)
        except Exception:  # the worker must outlive the guard's trouble, or the vehicle goes deaf
            log.exception("could not pass a 429 on to the account's guard", vehicle=job.vehicle)
