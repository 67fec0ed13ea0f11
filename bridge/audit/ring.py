"""fsync handed to the kernel (io_uring), its completion delivered on the event loop.

Why not the flusher thread: a Python thread needs the interpreter lock to wake up, and again to
report after `fsync` returns. On the command path the event loop holds that lock while it gets the
request ready (budget charge, token, building the POST), so the thread waits for the loop to go
idle at each step, and the request waits for the thread: the fsync overlapped the preparation less
than it should (see docs/benchmarks.md). With io_uring the fsync runs on a kernel worker, on
whichever core is free, and its completion arrives as an eventfd the loop is already watching.
Nothing in Python runs between "written" and "durable".

Where io_uring is unavailable (a kernel before 5.6, `kernel.io_uring_disabled`, a seccomp profile
that blocks it, as Docker's default does, or a platform without caio's Linux extension),
`open_ring` returns None and the audit log keeps its flusher thread: the same guarantees, a little
slower.

A ring belongs to one event loop and is used from its thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Protocol

from bridge.logs import get_logger

log = get_logger(__name__)

# Completions the kernel may hold at once. The audit log keeps at most one fsync in flight.
RING_SIZE = 8

OnSynced = Callable[[int], None]  # 0 when durable, else the errno of the failed fsync


class FsyncRing(Protocol):
    """What the audit log needs: start an fsync now, hear about it later on the loop thread."""

    @property
    def thread_id(self) -> int:
        """The thread `fsync` may be called from (the event loop's)."""
        ...

    def fsync(self, fd: int, done: OnSynced) -> None:
        """Start `fsync(fd)`; `done(errno)` runs on the loop thread, possibly before returning.
        Raises OSError when the request could not even be submitted."""
        ...

    def drain(self) -> None:
        """Report every completion that has arrived, now (on the loop thread)."""
        ...

    def close(self) -> None: ...


class KernelRing:
    """An io_uring (through caio) whose completions the event loop reads from an eventfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: Any, operation: Any) -> None:
        self._loop = loop
        self._context = context
        self._operation = operation  # caio's Operation class
        self._thread_id = threading.get_ident()
        self._closed = False
        loop.add_reader(context.fileno, self.drain)

    @property
    def thread_id(self) -> int:
        return self._thread_id

    def fsync(self, fd: int, done: OnSynced) -> None:
        if self._closed:
            raise OSError("the fsync ring is closed")
        op = self._operation.fsync(fd)
        op.set_callback(lambda result: _report(done, result))
        if self._context.submit(op) != 1:
            raise OSError("io_uring refused the fsync")
        self._context.flush()

    def close(self) -> None:
        """Stop listening. An fsync still in flight completes in the kernel unheard: the audit log
        fsyncs synchronously on close, which covers it."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # the loop may already be closed
            self._loop.remove_reader(self._context.fileno)
        close = getattr(self._context, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def drain(self) -> None:
        """Report every completion that has arrived (the eventfd's reader; also called by a task
        about to wait for one, which then need not wait). The eventfd may read as empty though
        completions are there (they coalesce): draining the queue does not depend on it."""
        if self._closed:
            return
        with contextlib.suppress(BlockingIOError):
            self._context.poll()
        while self._context.process_events():
            pass


def _report(done: OnSynced, result: int) -> None:
    # caio reports an exception from a callback as "unraisable" and carries on; say it our way.
    try:
        done(-result if result < 0 else 0)
    except Exception:
        log.exception("audit fsync completion failed")


def open_ring(loop: asyncio.AbstractEventLoop | None = None) -> KernelRing | None:
    """A ring on `loop` (default: the running loop), or None where io_uring cannot be used."""
    opened = _open_context()
    if isinstance(opened, str):
        log.info("io_uring unavailable; the audit log fsyncs on a thread", why=opened)
        return None
    context, operation = opened
    return KernelRing(loop or asyncio.get_running_loop(), context, operation)


def unavailable() -> str | None:
    """Why the audit log would fsync on a thread here, or None when io_uring works (doctor)."""
    opened = _open_context()
    return opened if isinstance(opened, str) else None


def _open_context() -> tuple[Any, Any] | str:
    """caio's io_uring context and its Operation class, or the reason there is none."""
    try:
        # Imported here: a Linux-only extension, and most of the daemon never needs it.
        from caio.linux_uring import Context, Operation
    except ImportError as exc:
        return _reason(exc)
    try:
        # sqpoll=False: a polling kernel thread would spin on a core after every command.
        return Context(max_requests=RING_SIZE, sqpoll=False), Operation
    except (OSError, RuntimeError, SystemError) as exc:
        return _reason(exc)


def _reason(exc: BaseException) -> str:
    # caio's message for a seccomp block goes on to advise turning seccomp off: keep the cause.
    first = (str(exc) or type(exc).__name__).splitlines()[0]
    return first.removesuffix("To fix:").strip()
