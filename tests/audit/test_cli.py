"""`ownerlink audit verify` and `ownerlink audit tail` as the owner runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.audit.log import audit_directory
from bridge.audit.read import RecordFilter, follow, last_seq
from bridge.cli import main
from tests.audit.helpers import (
    assert_one_error_line,
    fill,
    lines,
    open_log,
    run_unprivileged,
    write_lines,
)
from tests.conftest import BrokerAddress
from tests.support.opens import files_opened


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    log = fill(audit_directory(state_dir), 5)
    log.append("app.added", app="nodered", vehicle=None)
    log.close()
    return state_dir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_intact_exits_zero_with_a_summary(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An intact log: exit 0 and one summary line with the record count and head."""
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 0
    assert out.startswith("audit log intact: 6 records in 1 file(s), head 6:")
    assert len(out.strip().splitlines()) == 1


def test_verify_names_the_first_bad_record(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An edited record: exit 1 naming file, line, record and why."""
    directory = audit_directory(state)
    content = lines(directory)
    content[2] = content[2].replace(b'"LOCK"', b'"UNLK"')
    write_lines(directory, content)
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 1
    assert "BROKEN at audit.jsonl:3 (record 3): edited" in out


def test_verify_with_head_catches_truncation(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--head SEQ:HASH from before the last records were cut off: exit 1, truncated."""
    directory = audit_directory(state)
    _, out, _ = run(capsys, "audit", "verify", "--dir", str(directory))
    head = out.split("head ")[1].split(";")[0].strip()
    write_lines(directory, lines(directory)[:4])
    code, out, _ = run(capsys, "audit", "verify", "--dir", str(directory), "--head", head)
    assert code == 1 and "truncated" in out


def test_verify_rejects_a_malformed_head(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--head that is not SEQ:HASH is a usage error."""
    with pytest.raises(SystemExit) as exc:
        main(["audit", "verify", "--state-dir", str(state), "--head", "12"])
    assert exc.value.code == 2
    assert "SEQ:HASH" in capsys.readouterr().err


def test_verify_refuses_a_head_before_the_first_record(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--head 0:HASH would be "contained" in any log whatever the hash: a usage error."""
    with pytest.raises(SystemExit) as exc:
        main(["audit", "verify", "--state-dir", str(state), "--head", "0:" + "ab" * 32])
    assert exc.value.code == 2
    assert "SEQ must be 1 or more" in capsys.readouterr().err


def test_verify_refuses_a_missing_audit_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --dir or --state-dir with no audit directory is exit 1, not an intact log of 0 records;
    so is a directory with no log file in it for `verify` (the state directory given as --dir,
    a log whose file was deleted); a log without records yet is intact."""
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    for argv in (("--dir", str(tmp_path / "nowhere")), ("--state-dir", str(a_file))):
        for action in ("verify", "tail"):
            code, out, err = run(capsys, "audit", action, *argv)
            assert (code, out) == (1, ""), err
            assert err.startswith("error: no audit log at ") and len(err.splitlines()) == 1
    fresh = audit_directory(tmp_path / "fresh")
    fresh.mkdir(parents=True)
    (fresh / "audit.lock").write_text("")  # what a deleted log leaves behind
    code, out, err = run(capsys, "audit", "verify", "--state-dir", str(tmp_path / "fresh"))
    assert (code, out) == (1, "")
    assert err == f"error: no audit log in {fresh}: no audit.jsonl and no rotated audit files\n"
    (fresh / "audit.jsonl").write_text("")
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(tmp_path / "fresh"))
    assert code == 0 and out.startswith("audit log intact: 0 records")
    code, _, err = run(capsys, "audit", "verify", "--dir", str(tmp_path / "fresh"))
    assert code == 1 and err.endswith(f"; did you mean {fresh}?\n")


@pytest.mark.parametrize("action", ["verify", "tail"])
@pytest.mark.parametrize("unreadable", ["state directory", "audit.jsonl"])
def test_an_unreadable_log_is_one_error_line_naming_it(
    state: Path, action: str, unreadable: str
) -> None:
    """Run as someone who cannot read the state: which path, and to run as the daemon's user."""
    target = state if unreadable == "state directory" else audit_directory(state) / "audit.jsonl"
    named = audit_directory(state) if target == state else target
    mode = target.stat().st_mode
    target.chmod(0)
    try:
        done = run_unprivileged(state.parent, "audit", action, "--state-dir", str(state))
    finally:
        target.chmod(mode)
    assert_one_error_line(done, f"permission denied: {named}", "the user the daemon runs as")


def test_verify_reads_the_head_from_the_broker(
    state: Path,
    broker: BrokerAddress,
    base_topic: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--mqtt takes the retained audit head the daemon published; truncation is then found."""
    directory = audit_directory(state)
    log = open_log(directory)
    seq, value = log.head
    log.close()
    topic = f"{base_topic}/bridge/audit_head"
    publisher = paho.Client(CallbackAPIVersion.VERSION2)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    publisher.publish(
        topic, json.dumps({"seq": seq, "hash": value}), qos=1, retain=True
    ).wait_for_publish(5)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  base_topic: {base_topic}\n"
    )
    try:
        code, out, _ = run(
            capsys, "audit", "verify", "--config", str(config), "--state-dir", str(state), "--mqtt"
        )
        assert code == 0 and "contains the published head" in out
        write_lines(directory, lines(directory)[:3])
        code, out, _ = run(
            capsys, "audit", "verify", "--config", str(config), "--state-dir", str(state), "--mqtt"
        )
        assert code == 1 and "truncated" in out
    finally:
        publisher.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        publisher.loop_stop()
        publisher.disconnect()


def test_tail_shows_the_last_records_filtered(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tail -n 2 shows the last two; --app and --kind filter; --json prints records."""
    code, out, _ = run(capsys, "audit", "tail", "--state-dir", str(state), "-n", "2")
    shown = out.strip().splitlines()
    assert code == 0 and len(shown) == 2
    assert "#6 app.added app=nodered" in shown[1]
    _, out, _ = run(
        capsys, "audit", "tail", "--state-dir", str(state), "--kind", "command", "--json"
    )
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    _, out, _ = run(capsys, "audit", "tail", "--state-dir", str(state), "--app", "nodered")
    assert len(out.strip().splitlines()) == 1


def test_tail_counts_are_whole_numbers_from_zero(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n 0 shows nothing (with -f: only what comes next); a negative count is a usage error."""
    code, out, _ = run(capsys, "audit", "tail", "--state-dir", str(state), "-n", "0")
    assert (code, out) == (0, "")
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "audit", "tail", "--state-dir", str(state), "-n", "-3")
    assert exit_info.value.code == 2
    assert "argument -n: must be 0 or more, not -3" in capsys.readouterr().err


def test_tail_reads_only_the_newest_files_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twenty rotated files kept for years: the last ten records come from the newest files
    alone, the older ones are not even opened."""
    state_dir = tmp_path / "state"
    fill(audit_directory(state_dir), 400, rotate_bytes=4096, fsync=lambda fd: None).close()
    rotated = sorted(p.name for p in audit_directory(state_dir).glob("audit.0*.jsonl"))
    assert len(rotated) >= 20
    with files_opened() as opened:
        code, out, _ = run(capsys, "audit", "tail", "--state-dir", str(state_dir), "-n", "10")
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == [f"#{n}" for n in range(391, 401)]
    assert set(opened) & set(rotated) <= set(rotated[-2:])


def test_follow_picks_up_new_records_across_rotation(tmp_path: Path) -> None:
    """follow() yields records appended later, including after the file is rotated."""
    directory = tmp_path / "audit"
    log = open_log(directory, rotate_bytes=4096)
    log.append("before")
    seen: list[int] = []
    stop, opened = threading.Event(), threading.Event()

    def keep_going() -> bool:
        opened.set()  # first asked once the file is open at its end: appends from now on count
        return not stop.is_set()

    def reader() -> None:
        for record in follow(
            directory, RecordFilter(kind="after"), poll_s=0.01, keep_going=keep_going
        ):
            seen.append(record["n"])

    thread = threading.Thread(target=reader)
    thread.start()
    assert opened.wait(5)
    for n in range(40):
        log.append("after", n=n, pad="z" * 150)
        time.sleep(0.002)
    deadline = time.monotonic() + 5
    while len(seen) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert seen == list(range(40))
    assert list(directory.glob("audit.0*.jsonl"))


def test_follow_misses_nothing_when_the_log_rotates_twice_between_polls(tmp_path: Path) -> None:
    """A burst between two polls can rotate the log more than once: the records in the file
    rotated in between are shown too, in order (they were skipped: the new current file was
    read from its start, and the file before it never)."""
    directory = tmp_path / "audit"
    log = open_log(directory, rotate_bytes=4096)
    log.append("before")
    polls = 0

    def keep_going() -> bool:
        nonlocal polls
        polls += 1
        if polls == 1:  # after follow() opened the file at its end, before its first read
            for n in range(60):
                log.append("after", n=n, pad="z" * 150)
        return polls < 20

    seen = [r["n"] for r in follow(directory, RecordFilter(), poll_s=0, keep_going=keep_going)]
    assert seen == list(range(60))
    assert len(list(directory.glob("audit.0*.jsonl"))) >= 3


def test_follow_reads_the_old_file_to_its_end_after_a_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record written to the old file after follow() found it at its end, just before the
    rotation follow() then notices, is shown (the old file was taken as drained)."""
    import bridge.audit.read as read

    directory = tmp_path / "audit"
    log = open_log(directory, rotate_bytes=4096)
    log.append("before")
    rotated = read._rotated
    injected = False

    def late_write_then_rotate(handle: Any, path: Path) -> bool:
        nonlocal injected
        if not injected:
            injected = True
            log.append("late", pad="z" * 1000)  # fits: stays in the file follow() has open
            log.append("next", pad="z" * 3500)  # does not: rotates first
        return rotated(handle, path)

    monkeypatch.setattr(read, "_rotated", late_write_then_rotate)
    polls = 0

    def keep_going() -> bool:
        nonlocal polls
        polls += 1
        return polls < 10

    kinds = [r["kind"] for r in follow(directory, RecordFilter(), poll_s=0, keep_going=keep_going)]
    assert kinds == ["late", "next"]
    assert list(directory.glob("audit.0*.jsonl"))


@pytest.mark.parametrize("rotations", [0, 3])
def test_follow_after_a_seq_shows_what_came_since_exactly_once(
    tmp_path: Path, rotations: int
) -> None:
    """`audit tail -f` reads the last records, then follows: a record written between the two
    (and the files rotated meanwhile) is shown once. It was lost: following began at whatever
    was the end of the file by then."""
    directory = tmp_path / "audit"
    log = open_log(directory, rotate_bytes=4096)
    for n in range(5):
        log.append("before", n=n)
    start = last_seq(directory)
    count = 60 if rotations else 3
    for n in range(count):  # after the last records were read, before following starts
        log.append("between", n=n, pad="z" * 150)
    assert len(list(directory.glob("audit.0*.jsonl"))) >= rotations
    polls = 0

    def keep_going() -> bool:
        nonlocal polls
        polls += 1
        if polls == 2:
            log.append("after", n=count)
        return polls < 10

    seen = [
        (r["kind"], r["n"])
        for r in follow(directory, RecordFilter(), after_seq=start, poll_s=0, keep_going=keep_going)
    ]
    assert seen == [("between", n) for n in range(count)] + [("after", count)]


def test_tail_follow_starts_where_the_last_records_ended(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record written while `audit tail -f` printed the last ones is the first it follows."""
    import bridge.cli.audit as cli_audit

    directory = audit_directory(state)
    reading = cli_audit.last_records

    def records_then_a_write(*args: Any) -> Any:
        found = reading(*args)
        log = open_log(directory)
        log.append("app.revoked", app="nodered", vehicle=None)
        log.close()
        return found

    def stop_after_it(directory: Path, wanted: RecordFilter, **kw: Any) -> Any:
        polls = iter(range(3))
        return follow(
            directory, wanted, **kw, poll_s=0, keep_going=lambda: next(polls, None) is not None
        )

    monkeypatch.setattr(cli_audit, "last_records", records_then_a_write)
    monkeypatch.setattr(cli_audit, "follow", stop_after_it)
    code, out, _ = run(capsys, "audit", "tail", "-f", "-n", "1", "--state-dir", str(state))
    assert code == 0
    shown = out.strip().splitlines()
    assert [line.split()[2] for line in shown] == ["app.added", "app.revoked"]


def test_tail_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`ownerlink audit tail -n 2000 | head -1`: the reader leaves after one line; the command
    stops as a command killed by SIGPIPE would (141), without a traceback."""
    state_dir = tmp_path / "state"
    fill(audit_directory(state_dir), 2000).close()
    config = tmp_path / "config.yaml"
    config.write_text("")
    tail = ["audit", "tail", "-n", "2000", "--state-dir", str(state_dir), "--config", str(config)]
    reader, writer = os.pipe()
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", *tail],
        stdout=writer,
        stderr=subprocess.PIPE,
    ) as proc:
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            assert b"command.decision" in pipe.readline()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err
