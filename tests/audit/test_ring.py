"""The audit log's fsync on io_uring: settles in order, one in flight, errors stop the log.

The kernel ring is used for real where this machine allows io_uring (the tests say so when it does
not); a scripted ring stands in where a test must choose when, and how, an fsync completes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.audit.log import AuditLog
from bridge.audit.pending import Pending
from bridge.audit.ring import KernelRing, OnSynced, open_ring, unavailable
from bridge.audit.verify import verify
from bridge.errors import AuditWriteError
from tests.audit.helpers import open_log, records

# -- a scripted ring -----------------------------------------------------------------------------


class ScriptedRing:
    """Holds each fsync until the test completes it (`finish`), as the kernel would, later."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.thread_id = threading.get_ident()
        self.started: list[tuple[int, OnSynced]] = []
        self.refuse = refuse
        self.closed = False

    def fsync(self, fd: int, done: OnSynced) -> None:
        if self.refuse:
            raise OSError(errno.EBUSY, "submission queue full")
        self.started.append((fd, done))

    def finish(self, errno_: int = 0) -> None:
        fd, done = self.started.pop(0)
        if not errno_:
            os.fsync(fd)
        done(errno_)

    def drain(self) -> None:
        pass  # completions are delivered by finish()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def kernel_ring() -> Iterator[KernelRing]:
    async def make() -> KernelRing | None:
        return open_ring()

    loop = asyncio.new_event_loop()
    ring = loop.run_until_complete(make())
    if ring is None:
        loop.close()
        pytest.skip("io_uring is not available on this machine")
    yield ring
    ring.close()
    loop.close()


# -- the real kernel ring ------------------------------------------------------------------------


async def test_records_become_durable_through_the_kernel_ring(tmp_path: Path) -> None:
    """append_pending on the loop: the kernel fsyncs, the completion settles it, the head moves."""
    ring = open_ring()
    if ring is None:
        pytest.skip("io_uring is not available on this machine")
    heads: list[int] = []
    log = open_log(tmp_path, on_head=lambda seq, _h: heads.append(seq))
    log.use_ring(ring)
    try:
        handles = [log.append_pending("command.decision", n=n) for n in range(5)]
        for handle in handles:
            await asyncio.wait_for(handle.durable(), 5)
        assert log._flusher is None  # no thread was needed
        assert heads and heads[-1] == 5
        log.append("command.outcome", n=1)
    finally:
        log.close()
        ring.close()
    assert [r["seq"] for r in records(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert verify(tmp_path).ok


async def test_without_caio_s_linux_extension_there_is_no_ring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Platforms with only caio's pure-Python wheel (32-bit ARM) import nothing: the log keeps
    its flusher thread. (A None entry in sys.modules makes the import fail as it would there.)"""
    monkeypatch.setitem(sys.modules, "caio.linux_uring", None)
    assert open_ring() is None


async def test_a_completion_already_in_the_ring_is_collected_by_the_waiter(
    tmp_path: Path,
) -> None:
    """A record whose fsync finished while the request was being built is durable at once: the
    waiter drains the ring itself instead of waiting for the loop to read the eventfd."""
    ring = open_ring()
    if ring is None:
        pytest.skip("io_uring is not available on this machine")
    log = open_log(tmp_path)
    log.use_ring(ring)
    asyncio.get_running_loop().remove_reader(ring._context.fileno)  # the loop will not look
    try:
        for n in range(3):
            pending = log.append_pending("command.decision", n=n)
            # Block (the loop with it) until the kernel has posted the completion: the eventfd
            # turns readable, and nothing on the loop reads it. A fixed sleep raced a slow disk.
            ready, _, _ = select.select([ring._context.fileno], [], [], 10)
            assert ready, "the fsync did not complete within 10 s"
            await asyncio.wait_for(pending.durable(), 5)
    finally:
        log.close()
        ring.close()


def test_the_reason_io_uring_is_unavailable_keeps_the_cause_not_caio_s_advice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "caio.linux_uring", None)
    assert unavailable()  # a reason, for doctor
    from bridge.audit.ring import _reason

    seccomp = ImportError("io_uring_setup failed: ENOSYS. A seccomp filter. To fix:\n  Docker: off")
    assert _reason(seccomp) == "io_uring_setup failed: ENOSYS. A seccomp filter."


def test_open_ring_needs_no_sqpoll_thread(kernel_ring: KernelRing) -> None:
    """A polling kernel thread would spin a core after every command: never ask for one."""
    assert not kernel_ring._context.sqpoll


async def test_a_record_written_from_another_thread_uses_the_flusher(tmp_path: Path) -> None:
    """The ring belongs to the loop's thread; a writer elsewhere gets the flusher thread."""
    ring = ScriptedRing()
    log = open_log(tmp_path)
    log.use_ring(ring)
    pending = await asyncio.to_thread(log.append_pending, "command.decision", n=1)
    await asyncio.wait_for(pending.durable(), 5)
    assert ring.started == [] and log._flusher is not None
    log.close()


# -- batching and order --------------------------------------------------------------------------


async def test_one_fsync_in_flight_and_the_next_takes_everything_written_meanwhile(
    tmp_path: Path,
) -> None:
    ring = ScriptedRing()
    log = open_log(tmp_path)
    log.use_ring(ring)
    first = log.append_pending("command.decision", n=1)
    later = [log.append_pending("command.decision", n=n) for n in (2, 3)]
    assert len(ring.started) == 1  # 2 and 3 wait for the one in flight
    ring.finish()
    assert first.done and not any(p.done for p in later)
    assert len(ring.started) == 1  # one fsync for both
    ring.finish()
    assert all(p.done for p in later)
    for p in [first, *later]:
        await p.durable()
    log.close()


async def test_a_task_awaiting_the_record_wakes_when_the_ring_reports(tmp_path: Path) -> None:
    ring = ScriptedRing()
    log = open_log(tmp_path)
    log.use_ring(ring)
    pending = log.append_pending("command.decision", n=1)
    waiter = asyncio.ensure_future(pending.durable())
    await asyncio.sleep(0)
    assert not waiter.done()
    ring.finish()
    await asyncio.wait_for(waiter, 1)
    log.close()


# -- failures ------------------------------------------------------------------------------------


async def test_an_fsync_error_from_the_ring_fails_the_records_and_the_log(tmp_path: Path) -> None:
    """As with the thread: the error reaches every waiting record and later appends are refused."""
    ring = ScriptedRing()
    log = open_log(tmp_path)
    log.use_ring(ring)
    first = log.append_pending("command.decision", n=1)
    queued = log.append_pending("command.decision", n=2)
    ring.finish(errno.EIO)
    for pending in (first, queued):
        with pytest.raises(AuditWriteError, match="fsync"):
            await pending.durable()
    assert ring.started == []  # nothing more is tried after a failed fsync
    with pytest.raises(AuditWriteError):
        log.append_pending("command.decision", n=3)
    with pytest.raises(AuditWriteError):
        log.append("command.outcome", n=1)
    log.close()


async def test_a_ring_that_refuses_the_fsync_hands_over_to_the_flusher(tmp_path: Path) -> None:
    ring = ScriptedRing(refuse=True)
    log = open_log(tmp_path)
    log.use_ring(ring)
    pending = log.append_pending("command.decision", n=1)
    await asyncio.wait_for(pending.durable(), 5)
    assert log._flusher is not None
    after = log.append_pending("command.decision", n=2)  # the ring is no longer used
    await asyncio.wait_for(after.durable(), 5)
    log.close()
    assert verify(tmp_path).ok


async def test_close_settles_a_batch_still_in_flight_and_ignores_its_late_report(
    tmp_path: Path,
) -> None:
    """close() fsyncs synchronously, which covers the batch; the ring's late word changes
    nothing, not even an error, because the records were already made durable."""
    ring = ScriptedRing()
    log = open_log(tmp_path)
    log.use_ring(ring)
    pending = log.append_pending("command.decision", n=1)
    log.close()
    assert pending.done
    await pending.durable()
    _fd, done = ring.started.pop()
    done(errno.EIO)
    await pending.durable()
    assert verify(tmp_path).ok


def test_a_settled_record_keeps_its_first_outcome(tmp_path: Path) -> None:
    pending = Pending({"seq": 1})
    pending.settle(None)
    pending.settle(AuditWriteError("late"))
    pending.wait(0)  # still durable


def test_a_log_without_a_ring_still_uses_its_flusher(tmp_path: Path) -> None:
    log: AuditLog = open_log(tmp_path)
    log.use_ring(None)
    log.append_pending("command.decision", n=1).wait(5)
    log.close()


async def test_a_completion_that_arrives_after_rotation_closed_its_file_is_ignored(
    tmp_path: Path,
) -> None:
    """Rotation fsyncs and closes the file while a ring fsync on it is still in flight: the
    rotation's fsync settles that batch, and the kernel's late answer (EBADF: the descriptor is
    closed by the time it runs) must not fail the log. It did, once in a CI run."""
    ring = ScriptedRing()
    log = open_log(tmp_path, rotate_bytes=700)
    log.use_ring(ring)
    in_flight = log.append_pending("command.decision", n=0, pad="x" * 120)
    assert len(ring.started) == 1
    more = [log.append_pending("command.decision", n=n, pad="x" * 120) for n in range(1, 8)]
    assert list(tmp_path.glob("audit.0*.jsonl")), "the file was rotated"
    assert in_flight.done, "the rotation's fsync covered the batch in flight"
    while ring.started:
        fd, done = ring.started.pop(0)
        done(errno.EBADF if fd != log._fd else 0)  # the closed file gets EBADF, as from the kernel
    assert log.failed is None
    for pending in [in_flight, *more]:
        await asyncio.wait_for(pending.durable(), 5)
    log.close()
    assert verify(tmp_path).ok


async def test_rotation_with_fsyncs_in_flight_keeps_the_chain_and_settles_everything(
    tmp_path: Path,
) -> None:
    """A batch in flight belongs to the file being moved aside; the next one to the new file."""
    ring = open_ring()
    if ring is None:
        pytest.skip("io_uring is not available on this machine")
    log = open_log(tmp_path, rotate_bytes=700)
    log.use_ring(ring)
    try:
        handles = [log.append_pending("command.decision", n=n, pad="x" * 120) for n in range(30)]
        for handle in handles:
            await asyncio.wait_for(handle.durable(), 5)
    finally:
        log.close()
        ring.close()
    assert len(list(tmp_path.glob("audit.0*.jsonl"))) >= 3
    report = verify(tmp_path)
    assert report.ok, report
