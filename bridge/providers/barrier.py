"""Holding a command's request at the door until its audit record is on disk.

The forwarder runs each command inside `held_until(pending)`; the provider's HTTP client awaits
`pass_barrier` as its last step before handing a request to the transport (an httpx request hook,
installed by the factory), so the command's first request cannot leave before the decision record
is durable, while everything before it (the budget charge, the token, building the request) runs
as the kernel (or the audit flusher thread) fsyncs the record. A ContextVar carries the barrier
because it belongs to the one task that runs the command: the poller's reads and other commands
pass freely.

The held request is the one the decision record speaks for, so the budget may charge it on that
record's word (`held_record`, see `bridge.polling.budget`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import httpx


class Durable(Protocol):
    """Something to wait for: `bridge.audit.pending.Pending`."""

    @property
    def seq(self) -> int:
        """The audit record's sequence number."""
        ...

    async def durable(self) -> None: ...


_held: ContextVar[Durable | None] = ContextVar("_held", default=None)


@contextmanager
def held_until(barrier: Durable | None) -> Iterator[None]:
    """Within this block (this task only), the next request waits for `barrier` first."""
    token = _held.set(barrier)
    try:
        yield
    finally:
        _held.reset(token)


def held_record() -> int | None:
    """The seq of the audit record the current task's next request waits for, if it waits."""
    barrier = _held.get()
    return None if barrier is None else barrier.seq


async def pass_barrier() -> None:
    """Wait for the current task's barrier, if it has one; once passed it is gone."""
    barrier = _held.get()
    if barrier is not None:
        await barrier.durable()  # raises AuditWriteError when the record will never be durable
        _held.set(None)


async def hold_request(_request: httpx.Request) -> None:
    """The request hook every provider client carries (see the module docstring)."""
    await pass_barrier()
