"""AuditLog: chained durable records, torn-tail repair, tamper refusal, rotation, write failures."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.audit.chain import (
    GENESIS,
    canonical,
    chain_files,
    digest,
    read_records,
    records_newest_first,
)
from bridge.audit.log import AuditLog
from bridge.audit.pending import Pending
from bridge.audit.read import records_after
from bridge.audit.verify import verify
from bridge.errors import AuditTampered, AuditWriteError
from tests.audit.helpers import TickingClock, fill, lines, open_log, records, write_lines


def test_records_are_chained_and_hashed(tmp_path: Path) -> None:
    """Each record carries seq, prev (the previous hash) and a hash over its canonical form."""
    fill(tmp_path, 3).close()
    recs = records(tmp_path)
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert recs[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(recs):
        assert after["prev"] == before["hash"]
    for rec in recs:
        body = {k: v for k, v in rec.items() if k != "hash"}
        assert digest(canonical(body)) == rec["hash"]


def test_append_returns_the_record_and_reports_the_head(tmp_path: Path) -> None:
    """append() returns the full record and calls on_head(seq, hash) after it is durable."""
    heads: list[tuple[int, str]] = []
    log = open_log(tmp_path, on_head=lambda seq, h: heads.append((seq, h)))
    record = log.append("app.added", app="ha")
    assert heads == [(1, record["hash"])]
    assert log.head == (1, record["hash"])
    assert record["kind"] == "app.added" and record["app"] == "ha"


def test_a_failing_head_callback_does_not_fail_the_append(tmp_path: Path) -> None:
    """The head callback raising is logged, not propagated: the record is already durable."""

    def boom(seq: int, value: str) -> None:
        raise RuntimeError("broker down")

    log = open_log(tmp_path, on_head=boom)
    log.append("x")
    assert log.head[0] == 1


def test_files_are_private(tmp_path: Path) -> None:
    """The audit file is 0600 and its directory 0700."""
    directory = tmp_path / "audit"
    fill(directory, 1).close()
    assert stat.S_IMODE((directory / "audit.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_secret_looking_fields_are_redacted_and_reserved_ones_refused(tmp_path: Path) -> None:
    """A field named like a secret is stored as [redacted]; seq/hash/prev cannot be supplied."""
    log = open_log(tmp_path)
    record = log.append("x", code="123456", refresh_token="abc", stepup="ok")
    assert record["code"] == "[redacted]" and record["refresh_token"] == "[redacted]"
    assert record["stepup"] == "ok"
    assert b"123456" not in (tmp_path / "audit.jsonl").read_bytes()
    with pytest.raises(ValueError, match="reserved"):
        log.append("x", seq=5)


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    """A log reopened on the same directory appends seq n+1 linked to record n."""
    fill(tmp_path, 2).close()
    log = open_log(tmp_path)
    log.append("again")
    assert [r["seq"] for r in records(tmp_path)] == [1, 2, 3]
    assert verify(tmp_path).ok


def test_unterminated_last_line_is_truncated_and_the_repair_recorded(tmp_path: Path) -> None:
    """A torn last line (no newline) is cut off and an audit.repaired record added."""
    fill(tmp_path, 3).close()
    content = lines(tmp_path)
    torn = content[2][: len(content[2]) // 2]
    write_lines(tmp_path, [*content[:2], torn])
    log = open_log(tmp_path)
    recs = records(tmp_path)
    assert [r["kind"] for r in recs] == ["command.decision", "command.decision", "audit.repaired"]
    assert recs[2]["removed_bytes"] == len(torn) and recs[2]["seq"] == 3
    log.append("after")
    assert verify(tmp_path).ok


def test_unparsable_last_line_with_newline_is_also_torn(tmp_path: Path) -> None:
    """Garbage (NUL bytes from a lost page) on the last line is treated as a torn write."""
    fill(tmp_path, 2).close()
    write_lines(tmp_path, [*lines(tmp_path), b"\x00\x00\x00\x00\n"])
    open_log(tmp_path).close()
    assert records(tmp_path)[-1]["kind"] == "audit.repaired"
    assert verify(tmp_path).ok


@pytest.mark.parametrize("damage", ["edit", "delete", "swap", "garbage_mid"])
def test_damage_before_the_last_line_is_tampering(tmp_path: Path, damage: str) -> None:
    """Edited, deleted, swapped or garbage lines anywhere but the end refuse to open."""
    fill(tmp_path, 5).close()
    content = lines(tmp_path)
    if damage == "edit":
        content[1] = content[1].replace(b'"LOCK"', b'"UNLK"')
    elif damage == "delete":
        del content[1]
    elif damage == "swap":
        content[1], content[2] = content[2], content[1]
    else:
        content[1] = b"garbage\n"
    write_lines(tmp_path, content)
    with pytest.raises(AuditTampered):
        open_log(tmp_path)


def test_an_edited_last_line_is_tampering_not_a_torn_write(tmp_path: Path) -> None:
    """A last line that parses but whose hash fails is tampering: never silently dropped."""
    fill(tmp_path, 3).close()
    content = lines(tmp_path)
    content[-1] = content[-1].replace(b'"ha"', b'"hb"')
    write_lines(tmp_path, content)
    with pytest.raises(AuditTampered, match="edited"):
        open_log(tmp_path)


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    """Past rotate_bytes the file moves to audit.000001.jsonl…; seq and prev run on across files."""
    fill(tmp_path, 60, rotate_bytes=4096).close()
    rotated = sorted(p.name for p in tmp_path.glob("audit.0*.jsonl"))
    assert rotated[:2] == ["audit.000001.jsonl", "audit.000002.jsonl"]
    assert all((tmp_path / name).stat().st_size <= 4096 for name in rotated)
    first_new = records(tmp_path, "audit.jsonl")[0]
    last_old = records(tmp_path, rotated[-1])[-1]
    assert first_new["seq"] == last_old["seq"] + 1 and first_new["prev"] == last_old["hash"]
    report = verify(tmp_path)
    assert report.ok and report.records == 60
    log = open_log(tmp_path, rotate_bytes=4096)
    log.append("more")
    assert verify(tmp_path).records == 61


def test_records_are_read_back_newest_first_across_rotated_files(tmp_path: Path) -> None:
    """records_newest_first gives every record once, newest first, from the current file back
    through the rotated ones."""
    fill(tmp_path, 60, rotate_bytes=4096).close()
    assert len(list(tmp_path.glob("audit.0*.jsonl"))) >= 2
    assert [r["seq"] for r in records_newest_first(tmp_path)] == list(range(60, 0, -1))


def test_a_crash_between_rotation_steps_is_harmless(tmp_path: Path) -> None:
    """Killed after the rename but before the new file: open() links to the rotated file."""
    fill(tmp_path, 3).close()
    (tmp_path / "audit.jsonl").rename(tmp_path / "audit.000001.jsonl")
    log = open_log(tmp_path)
    assert log.append("next")["seq"] == 4
    assert verify(tmp_path).ok


def test_a_tampered_rotated_file_is_detected_by_verify(tmp_path: Path) -> None:
    """Editing a record inside a rotated file is found by verify."""
    fill(tmp_path, 60, rotate_bytes=4096).close()
    content = lines(tmp_path, "audit.000001.jsonl")
    content[3] = content[3].replace(b'"allowed"', b'"refused"')
    write_lines(tmp_path, content, "audit.000001.jsonl")
    report = verify(tmp_path)
    assert not report.ok and report.problem is not None
    assert report.problem.file == "audit.000001.jsonl" and report.problem.seq == 4


@pytest.mark.parametrize(
    "damage",
    ["delete a middle file", "delete the first file", "renumber", "swap", "cut a file short"],
)
def test_a_rotated_file_deleted_moved_or_cut_short_is_tampering_at_open(
    tmp_path: Path, damage: str
) -> None:
    """Where rotated files join is checked at open: a whole file of records gone (or moved, or
    cut) was opened over without a word, and the daemon took commands on a log only
    `audit verify` could show was broken."""
    fill(tmp_path, 80, rotate_bytes=4096).close()
    rotated = sorted(tmp_path.glob("audit.0*.jsonl"))
    assert len(rotated) >= 4
    if damage == "delete a middle file":
        rotated[1].unlink()
    elif damage == "delete the first file":
        rotated[0].unlink()
    elif damage == "renumber":  # the same records under a later number: a gap where one was
        rotated[-1].rename(tmp_path / "audit.000099.jsonl")
        rotated[-2].unlink()
    elif damage == "swap":
        rotated[1].rename(tmp_path / "swap")
        rotated[2].rename(rotated[1])
        (tmp_path / "swap").rename(rotated[2])
    else:  # its last record removed: the next file no longer links on
        write_lines(tmp_path, lines(tmp_path, rotated[1].name)[:-1], rotated[1].name)
    assert not verify(tmp_path).ok
    with pytest.raises(AuditTampered, match=r"audit\.0000\d\d\.jsonl"):
        open_log(tmp_path, rotate_bytes=4096)


def test_an_intact_rotated_log_opens_with_its_joins_checked(tmp_path: Path) -> None:
    """Many rotated files, each join checked: the log opens and runs on."""
    fill(tmp_path, 80, rotate_bytes=4096).close()
    log = open_log(tmp_path, rotate_bytes=4096)
    assert log.append("more")["seq"] == 81
    log.close()
    assert verify(tmp_path).ok


def test_write_failure_raises_and_stops_further_appends(tmp_path: Path) -> None:
    """An fsync/write error raises AuditWriteError, and so does every append after it."""
    log = open_log(tmp_path)
    log.append("fine")
    assert log._fd is not None
    os.close(log._fd)  # the descriptor goes bad under the log's feet: EBADF on the next write
    with pytest.raises(AuditWriteError):
        log.append("lost")
    log._fd = os.open(tmp_path / "audit.jsonl", os.O_WRONLY | os.O_APPEND)
    with pytest.raises(AuditWriteError):
        log.append("still refused")
    assert log.failed is not None


def test_append_before_open_is_refused(tmp_path: Path) -> None:
    """A log that was never opened refuses appends rather than writing blind."""
    log = AuditLog(tmp_path, clock=TickingClock(), rotate_bytes=4096)
    with pytest.raises(AuditWriteError, match="not open"):
        log.append("x")


def test_two_writers_share_one_chain(tmp_path: Path) -> None:
    """Two open logs on one directory (daemon and CLI) interleave appends into one valid chain."""
    first = open_log(tmp_path, rotate_bytes=4096)
    second = open_log(tmp_path, rotate_bytes=4096)
    for n in range(40):
        (first if n % 3 else second).append("shared", n=n, pad="y" * 50)
    report = verify(tmp_path)
    assert report.ok, report.summary()
    assert report.records == 40 and second.head[0] == 40  # n=39 went to the second
    assert list(tmp_path.glob("audit.0*.jsonl"))  # rotation by one writer was followed by the other


def test_concurrent_processes_append_to_one_chain(tmp_path: Path) -> None:
    """Two processes appending 150 records each at once leave 300 chained records."""
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.audit.crash_writer", str(tmp_path), "150"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    report = verify(tmp_path)
    assert report.ok, report.summary()
    assert report.records == 300


# -- pending records: written at once, flushed by the flusher thread -------------------------------


class CountingFsync:
    """os.fsync, counted; optionally failing once armed."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


def test_a_pending_record_is_in_the_chain_at_once_and_durable_soon(tmp_path: Path) -> None:
    """append_pending writes the line before returning; the flusher settles it."""
    disk = CountingFsync()
    log = open_log(tmp_path, fsync=disk)
    pending = log.append_pending("command.decision", n=1)
    assert records(tmp_path)[-1]["seq"] == pending.record["seq"] == 1
    pending.wait(5)
    assert pending.done and disk.calls >= 1
    log.append("command.outcome", n=1)
    log.close()
    assert verify(tmp_path).ok


def test_a_later_append_settles_earlier_pending_records(tmp_path: Path) -> None:
    """One fsync covers every line before it: a synchronous append settles pending ones too."""
    log = open_log(tmp_path)
    with log._lock:  # hold the flusher off: only the append below can settle it
        pending = [log._append_locked("a", {"n": n}, flush=False) for n in range(3)]
        waiting = [Pending(record) for record in pending]
        log._unflushed.extend(waiting)
        log._append_locked("b", {}, flush=True)
    assert all(p.done for p in waiting)
    log.close()


def test_close_and_rotation_flush_pending_records(tmp_path: Path) -> None:
    """Nothing pending is left unflushed by close(), nor carried into a rotated file."""
    log = open_log(tmp_path, rotate_bytes=600)
    handles = [log.append_pending("command.decision", n=n, pad="x" * 100) for n in range(10)]
    log.close()
    assert all(h.done for h in handles)
    assert list(tmp_path.glob("audit.0*.jsonl"))
    assert verify(tmp_path).ok


async def test_a_failed_flush_settles_pending_records_with_the_error(tmp_path: Path) -> None:
    """An fsync error reaches whoever awaits the record, and every append after it is refused."""
    disk = CountingFsync()
    log = open_log(tmp_path, fsync=disk)
    disk.fail = True
    pending = log.append_pending("command.decision", n=1)
    with pytest.raises(AuditWriteError, match="fsync"):
        await asyncio.wait_for(pending.durable(), 5)
    with pytest.raises(AuditWriteError):
        log.append_pending("command.decision", n=2)
    assert log.failed is not None
    log.close()


# -- another process's changes: followed when they chain on, refused when they cut records ---------


def _append_one(log: AuditLog, n: int) -> None:
    log.append("command.decision", id=f"next{n}", app="ha", decision="allowed", reason="ok")


@pytest.mark.parametrize("damage", ["cut", "delete", "replace"])
def test_a_log_cut_short_or_replaced_under_an_open_log_is_tampering(
    tmp_path: Path, damage: str
) -> None:
    """Chaining on from whatever is left would drop the records in between without a trace
    (and, once the seq grew past the old head, publish a head that hides it)."""
    heads: list[tuple[int, str]] = []
    log = fill(tmp_path, 5, on_head=lambda seq, value: heads.append((seq, value)))
    if damage == "cut":
        write_lines(tmp_path, lines(tmp_path)[:2])
    elif damage == "delete":
        (tmp_path / "audit.jsonl").unlink()
    else:
        content = lines(tmp_path)
        (tmp_path / "audit.jsonl").unlink()
        write_lines(tmp_path, content[:2])
    assert log.changed_on_disk()
    with pytest.raises(AuditTampered):
        _append_one(log, 0)
    assert log.tampered and log.failed is not None
    with pytest.raises(AuditTampered):  # and every append after it
        log.refresh()
    assert heads[-1][0] == 5  # no head was announced for the shortened chain
    log.close()


def test_records_another_process_appended_are_checked_and_announced(tmp_path: Path) -> None:
    """The CLI's records (a revocation, an owner's command) reach the published head."""
    heads: list[tuple[int, str]] = []
    daemon = fill(tmp_path, 3, on_head=lambda seq, value: heads.append((seq, value)))
    cli = open_log(tmp_path)
    _append_one(cli, 1)
    _append_one(cli, 2)
    cli.close()
    assert daemon.changed_on_disk()
    daemon.refresh()
    assert heads[-1] == cli.head and heads[-1][0] == 5
    assert not daemon.changed_on_disk()
    daemon.close()


def test_a_record_another_process_appended_must_chain_on(tmp_path: Path) -> None:
    """A line added behind the daemon's back that does not link to its last record."""
    daemon = fill(tmp_path, 3)
    other = open_log(tmp_path / "other")
    for n in range(4):  # a chain of its own: record 4 links to another record 3
        other.append("command.decision", id=f"x{n}", app="intruder", decision="allowed")
    other.close()
    write_lines(tmp_path, [*lines(tmp_path), lines(tmp_path / "other")[3]])
    with pytest.raises(AuditTampered, match="after ours"):
        daemon.refresh()
    daemon.close()


def test_a_rotation_by_another_process_is_followed_and_checked(tmp_path: Path) -> None:
    """Rotation keeps the file's inode under its new name: that is how it is told from a
    replacement, and the records written before it are still checked."""
    heads: list[tuple[int, str]] = []
    daemon = fill(tmp_path, 2, rotate_bytes=4096, on_head=lambda s, v: heads.append((s, v)))
    cli = open_log(tmp_path, rotate_bytes=4096)
    for n in range(30):
        cli.append("shared", n=n, pad="y" * 100)
    cli.close()
    assert list(tmp_path.glob("audit.0*.jsonl"))
    daemon.refresh()
    assert heads[-1] == cli.head
    _append_one(daemon, 0)
    daemon.close()
    assert verify(tmp_path).ok


def test_another_process_records_reach_the_anchor_while_our_fsync_is_in_flight(
    tmp_path: Path,
) -> None:
    """The daemon's own command record is still being fsync'd when the CLI writes a revocation:
    the head published must still come to cover the revocation, not stop at our record."""
    from tests.audit.test_ring import ScriptedRing

    heads: list[int] = []
    daemon = open_log(tmp_path, on_head=lambda seq, _value: heads.append(seq))
    ring = ScriptedRing()
    daemon.use_ring(ring)
    daemon.append("daemon.started")
    daemon.append_pending("command.decision", id="c1")  # seq 2: its fsync in flight
    cli = open_log(tmp_path)
    _append_one(cli, 3)
    cli.close()
    daemon.refresh()
    ring.finish()
    assert heads[-1] == 3 and daemon.durable_head == cli.head
    assert not daemon.changed_on_disk()
    daemon.close()


def test_another_process_record_is_made_durable_before_it_is_announced(tmp_path: Path) -> None:
    """`ownerlink command` writes its decision and fsyncs it on a thread: the daemon may take it
    in first. A head the log lacks after a power cut would read as records cut off."""
    heads: list[int] = []
    fsync = CountingFsync()
    daemon = open_log(tmp_path, fsync=fsync, on_head=lambda seq, _value: heads.append(seq))
    daemon.append("daemon.started")
    cli = open_log(tmp_path, fsync=lambda _fd: None)  # its own flush never comes
    cli.append_pending("command.decision", id="c1")
    before = fsync.calls
    daemon.refresh()
    assert heads[-1] == 2 and fsync.calls == before + 1
    cli.close()
    daemon.close()


def test_reading_every_record_while_another_process_rotates_misses_none(tmp_path: Path) -> None:
    """The daemon reads the whole log at start (commands left without an outcome are answered
    `interrupted`) while an `ownerlink apps …` beside it appends: a rotation after the files were
    listed moved the current file's records out of sight, and a command that had its outcome
    there would have been answered a second time. Each record is read once, in order."""
    writer = open_log(tmp_path, rotate_bytes=4096, fsync=lambda fd: None)
    while len(chain_files(tmp_path)) < 2:
        writer.append("app.granted", app="ha")
    reading = read_records(tmp_path)
    first = next(reading)  # the files are listed; the oldest one is being read
    known = writer.head[0]
    while len(chain_files(tmp_path)) < 4:  # meanwhile, the current file is rotated twice
        writer.append("app.granted", app="ha")
    writer.close()
    seqs = [first["seq"], *(record["seq"] for record in reading)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= known


def test_reading_past_a_seq_while_another_process_rotates_misses_none(tmp_path: Path) -> None:
    """The same for `records_after`, which the daemon's start reads to catch up with app
    changes (a revocation) its database lacks: none may go unseen."""
    writer = open_log(tmp_path, rotate_bytes=4096, fsync=lambda fd: None)
    while len(chain_files(tmp_path)) < 3:
        writer.append("app.granted", app="ha")
    reading = records_after(tmp_path, 5)
    first = next(reading)
    known = writer.head[0]
    while len(chain_files(tmp_path)) < 5:
        writer.append("app.granted", app="ha")
    writer.close()
    seqs = [first["seq"], *(record["seq"] for record in reading)]
    assert seqs == list(range(6, 6 + len(seqs)))
    assert seqs[-1] >= known
