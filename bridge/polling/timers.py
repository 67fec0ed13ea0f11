"""What runs the poller's jobs at the planned instants: APScheduler in real time, or a
discrete-event timer that jumps a simulated clock from one due job to the next (tests, benchmark).

The Poller only ever asks a Timer to run one job per key at a datetime of *its own clock*; the
Timer maps that onto whatever time it runs on. Both timers run the very same Poller code.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bridge.logs import get_logger
from bridge.polling.clock import Clock, utc_now

Job = Callable[[], Awaitable[None]]
OnMissed = Callable[[str], None]

log = get_logger(__name__)

# A poll that could not start within this long of its time (a suspended laptop, a blocked loop)
# is reported missed and planned afresh from what is known now, rather than run blindly late.
MISFIRE_GRACE_S = 300


class _QuietCancelFilter(logging.Filter):
    """Drops APScheduler's "Job … raised an exception" for a job our stop cancelled.

    Its executor logs every BaseException out of a coroutine job at ERROR, with the traceback, and
    a poll waiting on the car when the daemon stops ends in CancelledError: that is the clean stop
    (the listener below skips it too), not an error for the journal. What a job really raised is
    still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        raised = record.exc_info[1] if record.exc_info else None
        return not isinstance(raised, asyncio.CancelledError)


# The logger of the executor AsyncIOScheduler makes by default (alias "default").
logging.getLogger("apscheduler.executors.default").addFilter(_QuietCancelFilter())


class Timer(Protocol):
    """Runs at most one pending job per key, at an instant of the poller's clock."""

    def start(self, on_missed: OnMissed) -> None: ...

    def schedule(self, key: str, at: datetime, job: Job) -> None:
        """Run `job` at `at`, replacing whatever was pending under `key`."""
        ...

    def cancel(self, key: str) -> None: ...

    async def stop(self) -> None: ...


class ApsTimer:
    """APScheduler 3.x `AsyncIOScheduler`: one DateTrigger job per key, replaced on reschedule.

    `clock` is the poller's clock and `speed` how many of its seconds pass per real second, so a
    poller on a sped-up simulator clock can still run on APScheduler's real-time loop.
    """

    def __init__(
        self, *, clock: Clock = utc_now, speed: float = 1.0, misfire_grace_s: int = MISFIRE_GRACE_S
    ) -> None:
        self._clock = clock
        self._speed = speed
        self._grace = misfire_grace_s
        self._scheduler: AsyncIOScheduler | None = None
        self._on_missed: OnMissed | None = None

    def start(self, on_missed: OnMissed) -> None:
        """Start the scheduler on the running event loop."""
        self._on_missed = on_missed
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "max_instances": 1,  # never two polls of one vehicle at once
                "coalesce": True,  # a backlog of run times collapses into one poll
                "misfire_grace_time": self._grace,
            },
        )
        scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        self._scheduler = scheduler

    def schedule(self, key: str, at: datetime, job: Job) -> None:
        scheduler = self._require()
        delay = (at - self._clock()).total_seconds() / self._speed
        run_at = datetime.fromtimestamp(datetime.now(UTC).timestamp() + max(0.0, delay), UTC)
        scheduler.add_job(
            job,
            DateTrigger(run_date=run_at, timezone=UTC),
            id=key,
            name=key,
            replace_existing=True,
        )

    def cancel(self, key: str) -> None:
        scheduler = self._require()
        if scheduler.get_job(key) is not None:
            scheduler.remove_job(key)

    async def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None

    @property
    def scheduler(self) -> AsyncIOScheduler:
        """The running APScheduler (for introspection: jobs, defaults)."""
        return self._require()

    def _require(self) -> AsyncIOScheduler:
        if self._scheduler is None:
            raise RuntimeError("the timer is not started")
        return self._scheduler

    def _on_event(self, event: JobEvent) -> None:
        if isinstance(event, JobExecutionEvent) and isinstance(
            event.exception, asyncio.CancelledError
        ):
            return  # a poll cut short by a clean stop: not an error
        if isinstance(event, JobExecutionEvent) and event.exception is not None:
            log.error(
                "poll.job_error",
                job=event.job_id,
                error=repr(event.exception),
                traceback=event.traceback,
            )
            return  # the job re-plans itself in its `finally`
        log.warning("poll.job_missed", job=event.job_id, code=event.code)
        # A DateTrigger job is gone once it fired or misfired: without a new plan the vehicle
        # would never be polled again.
        if self._on_missed is not None:
            self._on_missed(event.job_id)


class ManualTimer:
    """A discrete-event timer: `run_until` moves simulated time from one due job to the next.

    `advance(at)` must move the clock shared with the poller (and the simulator) to `at`. Jobs run
    one at a time, in time order; a job may schedule further jobs, including for the past (which
    then run next, at the current time).
    """

    def __init__(self, *, clock: Clock, advance: Callable[[datetime], None]) -> None:
        self._clock = clock
        self._advance = advance
        self._heap: list[tuple[datetime, int, str]] = []
        self._pending: dict[str, tuple[int, Job]] = {}
        self._seq = itertools.count()
        # Exceptions jobs raised, kept (and logged) like APScheduler's error listener would.
        self.errors: list[BaseException] = []

    def start(self, on_missed: OnMissed) -> None:
        """Nothing to start; a simulated job is never missed."""

    def schedule(self, key: str, at: datetime, job: Job) -> None:
        seq = next(self._seq)
        self._pending[key] = (seq, job)
        heapq.heappush(self._heap, (at, seq, key))

    def cancel(self, key: str) -> None:
        self._pending.pop(key, None)

    async def stop(self) -> None:
        self._pending.clear()
        self._heap.clear()

    def next_at(self) -> datetime | None:
        """When the next pending job is due (stale heap entries are dropped on the way)."""
        while self._heap:
            at, seq, key = self._heap[0]
            entry = self._pending.get(key)
            if entry is not None and entry[0] == seq:
                return at
            heapq.heappop(self._heap)
        return None

    async def run_until(self, end: datetime) -> int:
        """Run every job due by `end`, in order, then move the clock to `end`; returns the count."""
        ran = 0
        while (at := self.next_at()) is not None and at <= end:
            _, _, key = heapq.heappop(self._heap)
            _, job = self._pending.pop(key)
            if at > self._clock():
                self._advance(at)
            try:
                await job()
            except Exception as exc:  # a job's bug is logged; the simulation goes on
                log.exception("poll.job_error", job=key)
                self.errors.append(exc)
            ran += 1
        if end > self._clock():
            self._advance(end)
        return ran

    def pending(self) -> dict[str, Any]:
        """Key → due time of every pending job (for tests)."""
        return {k: at for at, seq, k in self._heap if self._pending.get(k, (None,))[0] == seq}
