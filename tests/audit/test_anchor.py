"""anchor_problem(): does the log still contain the head the broker holds?"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bridge.audit.anchor import anchor_problem
from bridge.audit.chain import chain_files, read_records
from bridge.audit.verify import Head
from tests.audit.helpers import fill, open_log

LOOKUPS = 1000  # without the fix, about one lookup in ten beside this writer failed
ROTATIONS = 10  # and lookups go on until the writer has rotated this often


def _heads(directory: Path) -> dict[int, str]:
    return {r["seq"]: r["hash"] for r in read_records(directory)}


def test_the_same_head_is_contained(tmp_path: Path) -> None:
    log = fill(tmp_path, 3)
    assert anchor_problem(tmp_path, Head(*log.head), log.head) is None


def test_an_older_head_is_found_in_a_rotated_file(tmp_path: Path) -> None:
    """The CLI may have written on after the daemon's last publication, across rotations."""
    log = fill(tmp_path, 60, rotate_bytes=4096)
    assert list(tmp_path.glob("audit.0*.jsonl"))
    heads = _heads(tmp_path)
    for seq in (1, 7, 30, 59):
        assert anchor_problem(tmp_path, Head(seq, heads[seq]), log.head) is None


def test_a_head_beyond_the_log_means_records_were_cut_off(tmp_path: Path) -> None:
    log = fill(tmp_path, 3)
    problem = anchor_problem(tmp_path, Head(5, "ab" * 32), log.head)
    assert problem is not None and "ends at record 3" in problem and "record 5" in problem


def test_a_head_with_another_hash_means_the_log_was_rewritten(tmp_path: Path) -> None:
    log = fill(tmp_path, 4)
    for seq in (2, 4):
        problem = anchor_problem(tmp_path, Head(seq, "cd" * 32), log.head)
        assert problem is not None and f"record {seq} differs" in problem


def test_a_head_is_found_while_the_daemon_rotates_the_log(tmp_path: Path) -> None:
    """`ownerlink command` looks for the broker's head while the daemon beside it appends and
    rotates: a rotation between listing the files and reading the current one moved the head's
    record out of sight, and the command was refused as if records had been cut off."""
    log = open_log(tmp_path, rotate_bytes=4096, fsync=lambda fd: None)
    heads = [log.append("app.granted", app="ha") for _ in range(3)]
    stop = threading.Event()

    def daemon() -> None:
        while not stop.is_set():
            heads.append(log.append("app.granted", app="ha"))

    writer = threading.Thread(target=daemon)
    writer.start()
    try:
        problems: list[str | None] = []
        deadline = time.monotonic() + 60
        # How many rotations happen during LOOKUPS depends on how the threads share the
        # interpreter: look up until both counts are reached, not for a fixed number.
        while len(problems) < LOOKUPS or len(chain_files(tmp_path)) <= ROTATIONS:
            assert time.monotonic() < deadline, "the writer beside the lookups stalled"
            record = heads[-1]
            anchor = Head(record["seq"], record["hash"])
            problems.append(anchor_problem(tmp_path, anchor, (anchor.seq + 1, "newer")))
    finally:
        stop.set()
        writer.join()
        log.close()
    assert len(chain_files(tmp_path)) > ROTATIONS  # it did rotate, many times
    assert [p for p in problems if p is not None] == []


def test_finding_an_older_head_holds_one_record_at_a_time(tmp_path: Path) -> None:
    """A head older than the log's (records written while the daemon was stopped, by
    `ownerlink command`) is looked for in the file that holds it, which was parsed whole into a
    list: some 50 MB for a 10 MB file. Now the bytes of at most two files (the one read and the
    one before it) and one record at a time."""
    import tracemalloc

    log = fill(tmp_path, 20_000)
    log.close()
    heads = _heads(tmp_path)
    size = max(path.stat().st_size for path in chain_files(tmp_path))  # the largest file
    tracemalloc.start()
    try:
        assert anchor_problem(tmp_path, Head(10_000, heads[10_000]), log.head) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * size, f"{peak / 1e6:.1f} MB held for files of {size / 1e6:.1f} MB"
