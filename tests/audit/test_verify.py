"""verify(): each kind of damage is found and named at the first bad record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.audit.chain import Fault, chain_files, parse_line, seal
from bridge.audit.verify import PROGRESS_EVERY, Head, verify
from bridge.errors import AuditTampered
from tests.audit.helpers import fill, lines, open_log, write_lines


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    fill(tmp_path, 10).close()
    return tmp_path


def head_of(directory: Path) -> Head:
    report = verify(directory)
    return Head(*report.head)


def test_an_intact_log_verifies(log_dir: Path) -> None:
    """An untouched log is intact, with its record count and head."""
    report = verify(log_dir)
    assert report.ok and report.records == 10 and report.head[0] == 10
    assert report.summary().startswith("audit log intact: 10 records")


def test_an_empty_directory_verifies(tmp_path: Path) -> None:
    """No log yet is an intact, empty log."""
    report = verify(tmp_path)
    assert report.ok and report.records == 0


@pytest.mark.parametrize("index", [0, 4, 9])
def test_editing_one_byte_is_reported_as_edited(log_dir: Path, index: int) -> None:
    """Changing a single byte in any record: `edited`, naming that record."""
    content = lines(log_dir)
    raw = bytearray(content[index])
    pos = raw.index(b'"car"') + 1
    raw[pos] = ord("b")
    content[index] = bytes(raw)
    write_lines(log_dir, content)
    problem = verify(log_dir).problem
    assert problem is not None
    assert (problem.fault, problem.seq, problem.line) == (Fault.EDITED, index + 1, index + 1)


def test_deleting_a_line_is_reported_as_deleted(log_dir: Path) -> None:
    """Removing record 5: `deleted`, found at the record after the gap."""
    content = lines(log_dir)
    del content[4]
    write_lines(log_dir, content)
    problem = verify(log_dir).problem
    assert problem is not None and problem.fault is Fault.DELETED and problem.seq == 6
    assert "5 missing" in problem.message


def test_swapping_two_lines_is_reported_as_reordered(log_dir: Path) -> None:
    """Records 3 and 4 swapped: `reordered`, not a deletion."""
    content = lines(log_dir)
    content[2], content[3] = content[3], content[2]
    write_lines(log_dir, content)
    problem = verify(log_dir).problem
    assert problem is not None and problem.fault is Fault.REORDERED and problem.line == 3


def test_a_rehashed_edit_is_caught_by_the_next_link(log_dir: Path) -> None:
    """Editing a record and fixing its own hash still breaks the next record's prev."""
    content = lines(log_dir)
    record = parse_line(content[3])
    assert record is not None
    record.pop("hash")
    record["action"] = "UNLOCK"
    content[3], _ = seal(record)
    write_lines(log_dir, content)
    problem = verify(log_dir).problem
    assert problem is not None and problem.fault is Fault.RELINKED and problem.seq == 5


def test_truncation_is_found_against_the_published_head(log_dir: Path) -> None:
    """Cutting whole records off the end: intact alone, `truncated` against the head."""
    head = head_of(log_dir)
    write_lines(log_dir, lines(log_dir)[:7])
    assert verify(log_dir).ok
    problem = verify(log_dir, head=head).problem
    assert problem is not None and problem.fault is Fault.TRUNCATED
    assert "ends at record 7" in problem.message
    assert problem.describe().startswith("the end of the log (record 7): truncated")


def test_truncating_mid_line_is_a_torn_tail_and_truncation(log_dir: Path) -> None:
    """Truncating the file mid-record: a torn-tail note alone; `truncated` with the head."""
    head = head_of(log_dir)
    path = log_dir / "audit.jsonl"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    alone = verify(log_dir)
    assert alone.ok and any("torn last line" in note for note in alone.notes)
    problem = verify(log_dir, head=head).problem
    assert problem is not None and problem.fault is Fault.TRUNCATED


def test_a_torn_tail_alone_is_a_note_not_tampering(log_dir: Path) -> None:
    """An unterminated last line (crash mid-write, not yet repaired) is reported as a note."""
    content = lines(log_dir)
    write_lines(log_dir, [*content, content[0][:20]])
    report = verify(log_dir)
    assert report.ok and report.records == 10 and "torn" in report.summary()


def test_a_rewritten_tail_diverges_from_the_head(log_dir: Path) -> None:
    """Records rewritten and re-chained from some point differ from the published head."""
    head = head_of(log_dir)
    content = lines(log_dir)
    write_lines(log_dir, content[:5])
    log = open_log(log_dir)
    for n in range(5):
        log.append("forged", n=n)
    problem = verify(log_dir, head=head).problem
    assert problem is not None and problem.fault is Fault.DIVERGED and problem.seq == 10


def test_a_matching_head_is_confirmed(log_dir: Path) -> None:
    """Verifying against the current head says so."""
    report = verify(log_dir, head=head_of(log_dir))
    assert report.ok and "published head" in report.summary()


def test_head_parsing() -> None:
    """--head takes SEQ:HASH with a 64-digit hash and refuses anything else."""
    assert Head.parse("12:" + "a" * 64) == Head(12, "a" * 64)
    for bad in ("12", "x:" + "a" * 64, "12:abc", "12:" + "g" * 64, "-1:" + "a" * 64):
        with pytest.raises(ValueError, match="SEQ:HASH"):
            Head.parse(bad)
    with pytest.raises(ValueError, match="SEQ must be 1 or more"):
        Head.parse("0:" + "a" * 64)  # records count from 1: there is no head 0


def test_progress_is_reported(tmp_path: Path) -> None:
    """verify calls progress(done, total) and finishes at total."""
    fill(tmp_path, 4100).close()
    calls: list[tuple[int, int]] = []
    assert verify(tmp_path, progress=lambda done, total: calls.append((done, total))).ok
    assert len(calls) >= 3 and calls[-1][0] == calls[-1][1]


def _first_two_keys_swapped(raw: bytes) -> bytes:
    record = parse_line(raw)
    assert record is not None
    keys = list(record)
    order = [keys[1], keys[0], *keys[2:]]
    return b"{" + b",".join(_pair(k, record[k]) for k in order) + b"}"


def _pair(key: str, value: object) -> bytes:
    return json.dumps({key: value}, separators=(",", ":")).encode()[1:-1]


REWRITES = {
    # JSON readers keep the last of two equal keys: this line parses to the sealed record, and
    # its hash checks, while a person or a first-key reader sees app "ha", refused, LOCK.
    "a key given twice": lambda raw: b'{"app":"ha","decision":"refused","action":"LOCK",' + raw[1:],
    "a space": lambda raw: raw.replace(b'","', b'", "', 1),
    "an escape": lambda raw: raw.replace(b'"car"', b'"\\u0063ar"', 1),
    "key order": _first_two_keys_swapped,
}


@pytest.mark.parametrize("rewrite", REWRITES, ids=list(REWRITES))
def test_a_line_rewritten_to_parse_the_same_is_edited(log_dir: Path, rewrite: str) -> None:
    """The line itself is what the hash seals, byte for byte, not only what it parses to."""
    content = lines(log_dir)
    original = content[3].rstrip(b"\n")
    changed = REWRITES[rewrite](original)
    assert changed != original and parse_line(changed) == parse_line(original)
    content[3] = changed + b"\n"
    write_lines(log_dir, content)
    problem = verify(log_dir).problem
    assert problem is not None and (problem.fault, problem.seq) == (Fault.EDITED, 4)
    with pytest.raises(AuditTampered, match="edited"):
        open_log(log_dir)


def test_a_rotation_while_verifying_is_not_tampering(tmp_path: Path) -> None:
    """The daemon rotates the log while `ownerlink audit verify` reads it: the current file it
    listed is moved aside before it gets to it, and the new one seems to skip records. That is
    the log growing, not records deleted: verify reads it again from a fresh listing."""
    writer = fill(tmp_path, PROGRESS_EVERY, rotate_bytes=1 << 30, fsync=lambda fd: None)
    writer.close()
    daemon = open_log(tmp_path, rotate_bytes=4096, fsync=lambda fd: None)
    daemon.append("app.granted", app="ha")  # rotates: the records above are audit.000001.jsonl

    def rotate_meanwhile(done: int, total: int) -> None:
        # Called while the rotated file is read, before the current one is.
        while daemon.head[0] < 3 * PROGRESS_EVERY and len(chain_files(tmp_path)) < 3:
            daemon.append("app.granted", app="ha")

    report = verify(tmp_path, progress=rotate_meanwhile)
    daemon.close()
    assert len(chain_files(tmp_path)) == 3
    assert report.ok, report.summary()
    assert report.records == daemon.head[0]
