"""The audit log writer: append-only, hash-chained, fsync'd JSON lines, repaired only at its tail.

Crash safety rests on three habits: each record is ONE `os.write` of one line on an `O_APPEND`
descriptor (a kill cannot interleave or half-overwrite earlier lines), `fsync` runs before
`append` returns (a caller told "written" can rely on it), and the directory is fsync'd whenever
a file is created or rotated (so the file itself survives a power cut). An fsync error is fatal:
Linux may drop the dirty pages and report the error only once, so a retry could "succeed" over
lost data. After one, every append raises AuditWriteError until the log is reopened, and the
command pipeline stops taking commands.

The command path uses `append_pending` instead: the record is written at once (so its place in the
chain is fixed) and its fsync runs while the command's request is being prepared; the request is
held until then (`bridge.audit.pending`). The fsync goes to the kernel's io_uring when the daemon
attached one (`use_ring`, see `bridge.audit.ring`): one in flight at a time, and whatever was
written meanwhile goes in the next. Otherwise a flusher thread does it, in batches. A later `append`
fsyncs the file and so settles every earlier pending record not already in flight too.

Several processes may append (the daemon, and `ownerlink apps …` or `ownerlink command` run
beside it): each append holds an exclusive `flock` on `audit.lock` and first catches up with
whatever another process wrote or rotated, so the chain stays one chain.

On open, an unterminated or unparsable *last* line is a torn write: it is cut off and the repair
is itself recorded (`audit.repaired`). Anything wrong elsewhere is tampering: AuditTampered,
never a silent fix. Most of the file is checked before the lock is taken (`bridge.audit.survey`),
so that a command opening the log beside the daemon does not hold the daemon's appends for the
whole check; the verdicts, and the repair, come from the check of the rest under the lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.audit.chain import (
    CURRENT_FILE,
    DIRECTORY,
    ChainState,
    lines_of,
    parse_line,
    rotated_files,
    rotated_name,
    seal,
)
from bridge.audit.pending import Pending
from bridge.audit.ring import FsyncRing
from bridge.audit.survey import Survey, link_rotated, survey
from bridge.audit.tail import split_torn_tail
from bridge.errors import AuditTampered, AuditWriteError
from bridge.files import IN_PLACE, fsync_dir, open_problem
from bridge.logs import get_logger
from bridge.store import ensure_private_dir

Clock = Callable[[], datetime]
OnHead = Callable[[int, str], None]
LOCK_FILE = "audit.lock"
RESERVED = frozenset({"seq", "ts", "prev", "hash", "kind"})
# Field names that could only hold a secret. Callers never pass them; this is a second lock on
# the door, so a mistake elsewhere puts "[redacted]" in the file rather than a step-up code.
SECRET_KEYS = frozenset({"code", "otp", "totp", "secret", "password", "token", "authorization"})
SECRET_SUFFIXES = ("_token", "_secret", "_password")
REDACTED = "[redacted]"
MAX_TAKEN_IN = 1000  # other processes' records kept for `taken_in` (one caller asks each second)
FILE_MODE = 0o600
# Opening: looks without the lock, each overtaken by a rotation before the lock was taken, then
# one check of everything under the lock (one rotation comes per audit.rotate_bytes of records).
OPEN_ATTEMPTS = 3

log = get_logger(__name__)


def audit_directory(state_dir: Path) -> Path:
    """Where the audit log lives: `<state_dir>/audit/` (every writer and reader must agree)."""
    return state_dir / DIRECTORY


class AuditLog:
    """The `bridge.events.AuditSink` the daemon uses. Thread- and process-safe; `open()` first."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Clock,
        rotate_bytes: int,
        on_head: OnHead | None = None,
        fsync: Callable[[int], None] = os.fsync,  # tests slow it down or make it fail
        flock: Callable[[int, int], None] = fcntl.flock,  # tests act just before the lock
    ) -> None:
        self.directory = directory
        self._fsync = fsync
        self._flock = flock
        self.clock = clock
        self.rotate_bytes = rotate_bytes
        self.on_head = on_head
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self._chain = ChainState()
        self._failed: str | None = None
        self._tampered = False  # the failure is damage to the log, not a write error
        self._path = directory / CURRENT_FILE
        self._inode = -1  # of the file self._fd has open
        self._unflushed: list[Pending] = []
        self._ring: FsyncRing | None = None
        self._syncing: list[Pending] | None = None  # the batch whose ring fsync is in flight
        self._flush_wanted = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._closing = False
        self._announce_lock = threading.Lock()
        self._announced = 0  # the highest seq given to on_head
        self._durable_head = (0, "")  # (seq, hash) of the newest record known to be on disk
        self._taken_in: list[dict[str, Any]] = []  # other processes' records, until taken_in()

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Check the whole current file, repair a torn tail, and get ready to append.

        The bulk is checked without the audit lock (`bridge.audit.survey`): a command or
        `ownerlink apps` run beside the daemon would otherwise hold the daemon's appends (a
        command's decision record) for as long as a file near `rotate_bytes` takes to check.
        Under the lock only what was appended since is checked, with the torn-tail repair.
        Raises AuditTampered when any record other than a torn last line is wrong.
        """
        ensure_private_dir(self.directory)
        self._lock_fd = _open_lock(self.directory / LOCK_FILE)
        with self._lock:
            for attempt in range(1, OPEN_ATTEMPTS + 1):
                # The last attempt checks everything under the lock: rotations overtook each look.
                found = survey(self.directory) if attempt < OPEN_ATTEMPTS else None
                with self._exclusive():
                    if found is None or found.holds(self.directory):
                        self._open_locked(found)
                        return

    def _open_locked(self, found: Survey | None) -> None:
        """Check what `found` left unchecked (everything, when None), repair a torn tail, and
        get ready to append. Hold both locks: no writer is mid-append, so a torn last line is
        a crash's leftover and may be cut off."""
        if found is None:  # nothing checked yet: all of it, here
            rotated = [path for _, path in rotated_files(self.directory)]
            found = Survey((), None, 0, 0, link_rotated(rotated))
        self._chain = ChainState(found.state.seq, found.state.hash)
        keep, torn = split_torn_tail(_read_from(self._path, found.checked))
        self._check_lines(keep, lambda number: f"{CURRENT_FILE}:{found.lines + number}")
        self._fd = self._open_fd(self._path)
        self._size = found.checked + len(keep)
        if torn:
            self._repair(self._size, torn)
        # A process killed before its fsync left its lines in the page cache: make them
        # durable, so the head we start from may be published as the anchor.
        self._flush_locked(always=True)
        self._announced = self._chain.seq
        self._durable_head = (self._chain.seq, self._chain.hash)

    def use_ring(self, ring: FsyncRing | None) -> None:
        """fsync pending records through `ring` from its thread (None: the flusher thread)."""
        with self._lock:
            self._ring = ring

    def close(self) -> None:
        """Flush what is pending, stop the flusher and close the files."""
        with self._lock:
            self._closing = True
            self._flush_wanted.notify_all()
            flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.join()
        with self._lock:
            if self._fd is not None:
                self._take_back_in_flight()
                self._flush_locked()
            self._closing = False
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record this process knows: what the daemon publishes."""
        return self._chain.seq, self._chain.hash

    @property
    def durable_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record known to be on disk: the only head that may be
        published, since a head the log lacks after a power cut reads as records cut off."""
        with self._announce_lock:
            return self._durable_head

    @property
    def tampered(self) -> bool:
        """Did the log fail because its files were damaged (see `failed` for how)?"""
        return self._tampered

    def changed_on_disk(self) -> bool:
        """Has another process written to, rotated, cut or replaced the current file since this
        one last looked? One stat, no lock: the daemon asks every second (`refresh` if so)."""
        try:
            on_disk = self._path.stat()
        except OSError:
            return True
        return (on_disk.st_ino, on_disk.st_size) != (self._inode, self._size)

    def refresh(self) -> None:
        """Take in what other processes (the CLI) appended, checking that it chains on from our
        last record, and announce the new head, so the anchor on the broker covers their
        records too. Raises AuditTampered when the log shrank or its file was replaced."""
        with self._lock:
            self._raise_if_unusable()
            before = self._chain.seq
            with self._exclusive():
                self._catch_up()
            if self._chain.seq == before:
                return
            # Another process may not have fsync'd its record yet (`ownerlink command` flushes
            # on a thread): make it durable before it becomes the anchor. One fsync of the file
            # covers every process's writes, and settles our own pending records as well.
            error = self._flush_locked(always=True)
            if error is not None:
                raise error
            seq, value = self._chain.seq, self._chain.hash
        self._announce(seq, value)

    def taken_in(self) -> list[dict[str, Any]]:
        """The records other processes appended that this one has taken in since it last asked
        (the newest `MAX_TAKEN_IN`): the daemon reads the car again after an owner's command
        from `ownerlink command`, as it does after its own."""
        with self._lock:
            records, self._taken_in = self._taken_in, []
        return records

    @property
    def failed(self) -> str | None:
        """Why appends are refused (after a write or fsync error), or None when healthy."""
        return self._failed

    # -- the hot path ----------------------------------------------------------------------------

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Add one record and return it once it is on disk. Raises AuditWriteError."""
        with self._lock:
            self._raise_if_unusable()
            with self._exclusive():
                self._catch_up()
                record = self._append_locked(kind, fields)
        self._announce(record["seq"], record["hash"])
        return record

    def append_pending(self, kind: str, **fields: Any) -> Pending:
        """Add one record and return while its fsync runs: on the ring when this is the ring's
        thread (the event loop), else on the flusher thread.

        The record's place in the chain is fixed and it is in the file when this returns; only
        its durability is pending. Act on it only after `Pending.durable()` (or `wait()`).
        Raises AuditWriteError as `append` does; a failed flush settles the Pending with it.
        """
        with self._lock:
            self._raise_if_unusable()
            with self._exclusive():
                self._catch_up()
                pending = Pending(self._append_locked(kind, fields, flush=False))
            self._unflushed.append(pending)
            ring = self._ring
            if ring is None or ring.thread_id != threading.get_ident():
                self._start_flusher()
                self._flush_wanted.notify()
                return pending
            pending.poll = ring.drain
            batch = self._take_ring_batch()
        if batch is not None:
            self._ring_fsync(ring, *batch)
        return pending

    # -- fsync on the ring -----------------------------------------------------------------------

    def _take_ring_batch(self) -> tuple[int, list[Pending]] | None:
        """Everything written so far becomes the batch in flight, unless one already is (its
        completion starts the next). Hold the lock."""
        if self._syncing is not None or not self._unflushed or self._fd is None:
            return None
        self._syncing, self._unflushed = self._unflushed, []
        return self._fd, self._syncing

    def _ring_fsync(self, ring: FsyncRing, fd: int, batch: list[Pending]) -> None:
        """Start the batch's fsync (call without the lock: the ring may report at once)."""
        try:
            ring.fsync(fd, lambda errno: self._ring_done(ring, batch, errno))
        except OSError as exc:
            log.warning("io_uring fsync failed to start; using the flusher thread", error=str(exc))
            with self._lock:
                if self._syncing is batch:
                    self._syncing = None
                    self._unflushed[:0] = batch
                self._ring = None
                self._start_flusher()
                self._flush_wanted.notify()

    def _ring_done(self, ring: FsyncRing, batch: list[Pending], errno: int) -> None:
        """A ring fsync completed (on the loop thread): settle its batch, start the next one."""
        following = None
        with self._lock:
            if self._syncing is not batch:
                return  # close() or a failure already settled it
            self._syncing = None
            error = None
            if errno:
                error = self._fail_all(f"audit fsync failed: {os.strerror(errno)}")
            else:
                following = self._take_ring_batch()
            head = self._settled_head(batch[-1]) if following is None else None
        for pending in batch:
            pending.settle(error)
        if error is None:
            self._announce(*(head or (batch[-1].record["seq"], batch[-1].record["hash"])))
        if following is not None:
            self._ring_fsync(ring, *following)

    def _take_back_in_flight(self) -> None:
        """Before the file's descriptor is closed (close, rotation, another process's rotation):
        the batch a ring fsync has in flight goes back with the lines still waiting, so the
        fsync about to run covers and settles it. Its late completion is then ignored
        (`_ring_done`), as it must be: by the time the kernel runs it, the descriptor may be
        closed (EBADF, which would fail the log) or its number reused by the next file. Hold the
        lock."""
        self._unflushed[:0], self._syncing = self._syncing or [], None

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_forever, name="audit-flusher", daemon=True
            )
            self._flusher.start()

    def _flush_forever(self) -> None:
        """The flusher thread: fsync whatever has been written since the last flush, in batches."""
        while True:
            with self._lock:
                while not self._unflushed and not self._closing:
                    self._flush_wanted.wait()
                if not self._unflushed:
                    return
                last = self._unflushed[-1]
                self._flush_locked()
                head = self._settled_head(last)
            if self._failed is None:
                self._announce(*head)

    def _settled_head(self, last: Pending) -> tuple[int, str]:
        """What a flush that ended with `last` made durable (hold the lock): the whole chain
        when nothing was written since, including another process's records taken in since
        our last flush (our fsync covers every byte of the file); else `last` itself."""
        if self._unflushed:
            return last.record["seq"], last.record["hash"]
        return self._chain.seq, self._chain.hash

    def _flush_locked(self, *, always: bool = False) -> AuditWriteError | None:
        """fsync the file and settle every record written without one (hold the lock). Without
        `always`, there is nothing to do when no record is waiting."""
        batch, self._unflushed = self._unflushed, []
        if not batch and not always:
            return None
        error = None
        try:
            assert self._fd is not None
            self._fsync(self._fd)
        except OSError as exc:
            error = self._fail(f"audit fsync failed: {exc}")
        for pending in batch:
            pending.settle(error)
        return error

    def _append_locked(
        self, kind: str, fields: Mapping[str, Any], *, flush: bool = True
    ) -> dict[str, Any]:
        record = clean_fields(fields)
        record.update(
            kind=kind,
            seq=self._chain.seq + 1,
            ts=self.clock().isoformat(timespec="milliseconds"),
            prev=self._chain.hash,
        )
        line, value = seal(record)
        if self._size and self._size + len(line) > self.rotate_bytes:
            self._rotate()
        self._write(line, flush=flush)
        record["hash"] = value
        self._chain.seq, self._chain.hash = record["seq"], value
        return record

    def _write(self, line: bytes, *, flush: bool) -> None:
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise self._fail_all(f"audit write failed: {exc}") from exc
        if written != len(line):
            # A partial line (disk full) now ends the file: stop; the next open() cuts it off.
            why = f"audit write failed: short write ({written} of {len(line)} bytes)"
            raise self._fail_all(why)
        self._size += len(line)
        if flush:
            # One fsync covers this line and any pending ones written before it.
            error = self._flush_locked(always=True)
            if error is not None:
                raise error

    def _fail_all(self, why: str) -> AuditWriteError:
        """A failure after which no pending record can be trusted to reach the disk."""
        error = self._fail(why)
        batch, self._unflushed = self._unflushed, []
        for pending in batch:
            pending.settle(error)
        return error

    def _fail(self, why: str) -> AuditWriteError:
        self._failed = why
        return AuditWriteError(why)

    def _fail_tampered(self, why: str) -> AuditTampered:
        self._failed, self._tampered = why, True
        return AuditTampered(why)

    def _raise_if_unusable(self) -> None:
        """Hold the lock. Refuse appends once the log failed, with the failure's own class."""
        if self._failed is not None:
            raise AuditTampered(self._failed) if self._tampered else AuditWriteError(self._failed)
        if self._fd is None:
            raise AuditWriteError("the audit log is not open")

    def _announce(self, seq: int, value: str) -> None:
        """`seq` is on disk, and every record before it: say so (never stepping back)."""
        # The flusher and callers of `append` announce from different threads: never step back.
        with self._announce_lock:
            if seq <= self._announced:
                return
            self._announced, self._durable_head = seq, (seq, value)
            if self.on_head is None:
                return
            try:
                self.on_head(seq, value)
            except Exception:  # publishing the head must never undo a durable record
                log.exception("audit head callback failed", seq=seq)

    # -- sharing the file with other processes ---------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        assert self._lock_fd is not None
        try:
            self._flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise self._fail(f"cannot lock the audit log: {exc}") from exc
        try:
            yield
        finally:
            self._flock(self._lock_fd, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        """Pick up records or a rotation another process made since our last append, checking
        that they chain on from our last record: a log that shrank, or a current file deleted
        or replaced, is tampering, never a new place to chain on from (that would drop the
        records in between without a trace, and publish a head that hides it)."""
        assert self._fd is not None
        # One stat: the inode tells a rotation by another process, the size an append by one.
        try:
            on_disk: os.stat_result | None = self._path.stat()
        except FileNotFoundError:
            on_disk = None
        except OSError as exc:
            raise self._fail_all(f"audit log unusable: {exc}") from exc
        same_file = on_disk is not None and on_disk.st_ino == self._inode
        if same_file and on_disk is not None and on_disk.st_size == self._size:
            return  # the usual case: nobody else wrote
        try:
            if same_file:
                self._follow(self._path)
            else:
                self._follow_rotation()
        except AuditTampered as exc:
            raise self._fail_tampered(str(exc)) from exc
        except OSError as exc:
            raise self._fail(f"audit log changed under us: {exc}") from exc

    def _follow_rotation(self) -> None:
        """Another process moved our file aside (rotation keeps its inode) and started a new
        one, perhaps more than once: check what it appended to ours, then every file after."""
        assert self._fd is not None
        rotated = [path for _, path in rotated_files(self.directory)]
        ours = next((i for i, path in enumerate(rotated) if _inode(path) == self._inode), None)
        if ours is None:
            raise AuditTampered(
                f"{CURRENT_FILE} was deleted or replaced while the bridge had it open"
            )
        self._take_back_in_flight()
        error = self._flush_locked()  # our pending lines are in the file we are leaving
        if error is not None:
            raise error
        os.close(self._fd)
        self._fd = None
        self._follow(rotated[ours], current=False)
        for later in rotated[ours + 1 :]:
            self._size = 0
            self._follow(later, current=False)
        self._fd = self._open_fd(self._path)
        self._size = 0
        self._follow(self._path)

    def _follow(self, path: Path, *, current: bool = True) -> None:
        """Check the records after the `self._size` bytes we know of in `path` and chain on.
        Only those bytes are read: the file may be megabytes, and appends wait for this lock."""
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < self._size:
                raise AuditTampered(
                    f"{path.name} is shorter than the records written to it"
                    f" ({size} of {self._size} bytes): records were cut off"
                )
            handle.seek(self._size)
            keep, torn = split_torn_tail(handle.read())
        records = self._check_lines(keep, lambda number: f"{path.name}: record {number} after ours")
        self._taken_in = [*self._taken_in, *records][-MAX_TAKEN_IN:]
        if not current:
            return
        self._size += len(keep)
        if torn:
            self._repair(self._size, torn)

    # -- files -----------------------------------------------------------------------------------

    def _open_fd(self, path: Path) -> int:
        created = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | IN_PLACE, FILE_MODE)
            if created:
                fsync_dir(self.directory)
            self._inode = os.fstat(fd).st_ino
        except OSError as exc:
            raise self._fail(f"cannot open {path}: {open_problem(exc)}") from exc
        return fd

    def _rotate(self) -> None:
        """Move the full file aside under the next number and start a new one (chain continues)."""
        assert self._fd is not None
        numbers = [number for number, _ in rotated_files(self.directory)]
        target = self.directory / rotated_name(max(numbers, default=0) + 1)
        self._take_back_in_flight()
        error = self._flush_locked()  # pending lines go with the file being moved aside
        if error is not None:
            raise error
        try:
            os.close(self._fd)
            self._fd = None
            self._path.rename(target)
            fsync_dir(self.directory)
        except OSError as exc:
            raise self._fail(f"audit rotation failed: {exc}") from exc
        self._fd = self._open_fd(self._path)
        self._size = 0

    def _check_lines(self, data: bytes, where: Callable[[int], str]) -> list[dict[str, Any]]:
        """Every line of `data` must chain on from `self._chain` (advanced as it goes);
        AuditTampered names the first that does not by `where(its line number)`. Returns the
        records."""
        records = []
        for number, raw in enumerate(lines_of(data), start=1):
            record = parse_line(raw)
            if record is None:
                raise AuditTampered(f"{where(number)}: unparsable record")
            fault = self._chain.check(raw, record)
            if fault is not None:
                raise AuditTampered(f"{where(number)}: {fault[0]}: {fault[1]}")
            records.append(record)
        return records

    def _repair(self, keep: int, torn: bytes) -> None:
        """Cut a torn tail off and say so in the log itself."""
        assert self._fd is not None
        try:
            os.truncate(self._path, keep)
            self._fsync(self._fd)
        except OSError as exc:
            raise self._fail(f"cannot repair {self._path}: {exc.strerror or exc}") from exc
        self._size = keep
        log.warning("audit log had a torn last line; truncated", removed_bytes=len(torn))
        self._append_locked(
            "audit.repaired", {"file": CURRENT_FILE, "offset": keep, "removed_bytes": len(torn)}
        )


def _read_from(path: Path, offset: int) -> bytes:
    """`path`'s bytes after the first `offset` (none when there is no such file)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return b""
    with handle:
        handle.seek(offset)
        return handle.read()


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except OSError:
        return -1


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | IN_PLACE, FILE_MODE)
    except OSError as exc:
        raise AuditWriteError(f"cannot open {path}: {open_problem(exc)}") from exc


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the caller's fields, refusing reserved names and blanking secret-looking ones."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in RESERVED:
            raise ValueError(f"audit field {key!r} is reserved")
        out[key] = REDACTED if _secret_key(key) else _plain(value)
    return out


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(SECRET_SUFFIXES)


def _plain(value: Any) -> Any:
    """JSON-ready values: times as ISO text, sets as sorted lists; everything else as given."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value
