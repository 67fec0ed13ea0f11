"""anchor_problem(): does the log still contain the head the broker holds?"""

from __future__ import annotations

from pathlib import Path

from bridge.audit.anchor import anchor_problem
from bridge.audit.chain import read_records
from bridge.audit.verify import Head
from tests.audit.helpers import fill


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
