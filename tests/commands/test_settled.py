"""A start reads the audit log only past the point the last start settled (settled.py), and
finds there what a read of the whole log would."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.audit.chain import read_records, rotated_files
from bridge.audit.log import AuditLog
from bridge.commands.delivery import REPUBLISH_WINDOW_S, ResultDelivery, undelivered
from bridge.commands.recover import after_a_stop
from bridge.commands.settled import (
    SETTLED_KEY,
    load_settled,
    read_after,
    save_settled,
    settled_through,
)
from bridge.mqtt.topics import Topics
from bridge.store import Store
from tests.commands.test_delivery import HeldSink
from tests.support.opens import files_opened

ROTATE = 4096  # the smallest audit.rotate_bytes: many rotated files from few records


class Clock:
    """Wall time that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 8, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _log(directory: Path, clock: Clock) -> AuditLog:
    """The project's own writer; fsync skipped, as the files need not outlive the test."""
    log = AuditLog(directory, clock=clock, rotate_bytes=ROTATE, fsync=lambda fd: None)
    log.open()
    return log


def _command(log: AuditLog, n: int, *, outcome: bool = True, source: str = "mqtt") -> None:
    who = {"id": f"c{n}", "source": source, "app": "ha", "vehicle": "car", "command": "lock"}
    log.append("command.decision", **who, decision="allowed", reason="ok")
    if outcome:
        log.append("command.outcome", **who, status="succeeded", reason="ok")


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The names of the files opened while the test runs."""
    with files_opened() as names:
        yield names


def test_a_start_opens_only_the_files_after_the_settled_point(
    tmp_path: Path, opened: list[str]
) -> None:
    """Twenty rotated files of history and a command left open after the point the last start
    settled: it is found, and no file wholly before the point is opened."""
    log = _log(tmp_path, Clock())
    for n in range(400):
        _command(log, n)
    settled = log.head[0]
    _command(log, 400, outcome=False)
    _command(log, 401)
    log.close()
    files = [path.name for _, path in rotated_files(tmp_path)]
    assert len(files) >= 20
    opened.clear()
    found = read_after(tmp_path, settled=settled, mark=settled)
    assert [d["id"] for d in found.interrupted] == ["c400"]
    assert found.newest == log.head[0]
    assert set(opened) <= {*files[-2:], "audit.jsonl"}


def test_with_no_settled_point_every_file_is_read(tmp_path: Path, opened: list[str]) -> None:
    """The first start after an upgrade has no point to start from: it reads the whole log, so
    a command left open in the oldest file is answered still."""
    log = _log(tmp_path, Clock())
    _command(log, 0, outcome=False)
    for n in range(1, 200):
        _command(log, n)
    log.close()
    store = Store.open(tmp_path / "state")
    settled = load_settled(store, log.head[0])
    found = read_after(tmp_path, settled=settled, mark=0)
    assert settled == 0
    assert [d["id"] for d in found.interrupted] == ["c0"]
    assert {path.name for _, path in rotated_files(tmp_path)} <= set(opened)
    store.close()


def test_a_settled_point_past_the_head_belongs_to_another_log(tmp_path: Path) -> None:
    """Saved, the point is read back; past the log's head (a log restored from an older copy)
    it is not trusted, and the whole log is read."""
    store = Store.open(tmp_path)
    assert load_settled(store, 10) == 0
    save_settled(store, 7)
    assert store.meta(SETTLED_KEY) == "7"
    assert load_settled(store, 10) == 7
    assert load_settled(store, 6) == 0
    store.close()


def test_the_point_stops_before_what_is_still_open() -> None:
    """Settled up to the newest record read, but never past a decision left open or a result
    sent again, and never below zero."""
    assert settled_through(50, []) == 50
    assert settled_through(50, [31, 40]) == 30
    assert settled_through(50, [0]) == 0


def _start(
    log: AuditLog, directory: Path, store: Store, clock: Clock, rng: random.Random
) -> tuple[Any, Any]:
    """What the daemon's start does with the log (`Daemon._finish_interrupted`): read past the
    settled point, send owed results again, answer open commands (owner ones only when no
    `ownerlink command` runs), settle. Returns (what it read, what a full read finds)."""
    sink = HeldSink()
    delivery = ResultDelivery(store=store, sink=sink, topics=Topics(base="ol"))
    mark = delivery.start(log.head[0])
    settled = load_settled(store, log.head[0])
    found = read_after(directory, settled=settled, mark=mark)
    full = after_a_stop(read_records(directory), after_seq=mark)
    owed = undelivered(found.results, after_seq=mark, now=clock())
    delivery.republish(owed)
    owner_running = rng.random() < 0.3
    left = [d for d in found.interrupted if owner_running and d["source"] == "owner"]
    for decision in found.interrupted:
        if decision not in left:
            fields = {k: decision[k] for k in ("id", "source", "app", "vehicle", "command")}
            log.append("command.outcome", **fields, status="timed_out", reason="interrupted")
    for index in range(len(sink.waiting)):
        if rng.random() < 0.7:  # the rest: a kill beat the PUBACK
            sink.confirm(index)
    save_settled(
        store, settled_through(found.newest, [s for s, _ in owed] + [d["seq"] for d in left])
    )
    return (found, owed, mark), full


@pytest.mark.parametrize("seed", range(12))
def test_a_read_from_the_settled_point_finds_what_a_full_read_finds(
    tmp_path: Path, seed: int
) -> None:
    """Random histories over many rotated files: commands that end, that a kill leaves open
    (an app's, the owner's), refusals, quiet hours; starts in between that answer and settle.
    At every start, the commands to answer and the results to send again are the ones a read of
    the whole log gives."""
    rng = random.Random(seed)
    clock = Clock()
    directory = tmp_path / "audit"
    store = Store.open(tmp_path)
    log = _log(directory, clock)
    n = 0
    for _ in range(8):
        for _ in range(rng.randrange(20, 120)):
            clock.now += timedelta(seconds=rng.choice((1, 30, 300, 3600)))
            n += 1
            who = {
                "id": f"c{n}",
                "source": rng.choice(("mqtt", "mqtt", "owner")),
                "app": rng.choice(("ha", "nodered")),
                "vehicle": "car",
                "command": "lock",
            }
            roll = rng.random()
            if roll < 0.15:
                log.append("command.decision", **who, decision="refused", reason="rate_limited")
            elif roll < 0.25:
                log.append("app.changed", app=who["app"], change="scopes")
            else:
                log.append("command.decision", **who, decision="allowed", reason="ok")
                if rng.random() < 0.9:  # else a kill before the car answered
                    log.append("command.outcome", **who, status="succeeded", reason="ok")
        clock.now += timedelta(seconds=rng.choice((5, 600, 2 * REPUBLISH_WINDOW_S)))
        (found, owed, mark), (results, interrupted) = _start(log, directory, store, clock, rng)
        assert [d["seq"] for d in found.interrupted] == sorted(d["seq"] for d in interrupted)
        assert owed == undelivered(results, after_seq=mark, now=clock())
    log.close()
    store.close()
    assert len(rotated_files(directory)) >= 10
