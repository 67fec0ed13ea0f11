"""A record that is in the audit file but not yet known to be on disk, and a way to wait for it.

The command path writes its decision record at once and lets the kernel (or a flusher thread) fsync
it while the forwarder gets the request ready (budget charge, token, building the request): the
request is held at the door until the record is durable (see `bridge.providers.barrier`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from bridge.errors import AuditWriteError


class Pending:
    """One written record awaiting its fsync. Settled once, by the thread that flushed it."""

    __slots__ = ("_done", "_error", "_waiter", "poll", "record")

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self._done = threading.Event()
        self._error: AuditWriteError | None = None
        # Collects completions that have already arrived (the io_uring's), so a record whose
        # fsync finished while the request was being built needs no trip round the event loop.
        self.poll: Callable[[], None] | None = None
        # The loop, its future and its thread, once a task awaits durability.
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None], int] | None = None

    @classmethod
    def durable_now(cls, record: dict[str, Any]) -> Pending:
        """A record that is already on disk (or needs no flush: test sinks)."""
        pending = cls(record)
        pending.settle(None)
        return pending

    @property
    def seq(self) -> int:
        return int(self.record["seq"])

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def settle(self, error: AuditWriteError | None) -> None:
        """Durable (error None) or never will be. Any thread; wakes an awaiting task. The first
        word is final: a later settle (close() after a failure, say) changes nothing."""
        if self._done.is_set():
            return
        self._error = error
        self._done.set()
        waiter = self._waiter
        if waiter is not None:
            loop, future, thread = waiter
            if thread == threading.get_ident():
                _resolve(future)  # on the loop already (a ring completion): no wake-up needed
                return
            # RuntimeError: the loop is closed; nobody is left waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def result(self) -> None:
        """Raise AuditWriteError if the record could not be made durable (call once done)."""
        if self._error is not None:
            raise self._error

    def wait(self, timeout: float | None = None) -> None:
        """Block until settled; raise AuditWriteError if the flush failed."""
        if not self._done.wait(timeout):
            raise AuditWriteError("the audit log did not confirm a record in time")
        self.result()

    async def durable(self) -> None:
        """Return once the record is on disk; raise AuditWriteError if it never will be."""
        if not self._done.is_set() and self.poll is not None:
            self.poll()
        if not self._done.is_set():
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiter = (loop, future, threading.get_ident())
            # settle() may have run between the check above and registering: look again.
            if not self._done.is_set():
                await future
        self.result()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
