"""Does the local audit log still contain the head the broker holds?

The daemon publishes its newest record's `{seq, hash}` retained on `<base>/bridge/audit_head`:
a copy off the box, so that records cut off the end of the log can be noticed. At start the
daemon compares that copy with its log *before* publishing its own head, which would otherwise
overwrite the evidence with the head of whatever log is left.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.audit.chain import CURRENT_FILE, lines_of, parse_line, rotated_files
from bridge.audit.verify import Head
from bridge.config import Settings
from bridge.errors import BrokerError
from bridge.mqtt.topics import Publish, Topics

HEAD_WAIT_S = 5.0
# What to do about a log that lacks the broker's head (the daemon's alert, `ownerlink command`).
ANCHOR_FIX = (
    "Keep the audit files as evidence and compare them with a backup. If you moved the audit "
    "log aside on purpose (starting over), clear the broker's copy with `ownerlink audit "
    "forget-head` and restart"
)
RETAINED_GRACE_S = 1.0  # after the SUBACK: how long silence takes to mean "no retained message"
ABORT_POLL_S = 0.05


def anchor_problem(directory: Path, anchor: Head, local: tuple[int, str]) -> str | None:
    """Why the log in `directory`, whose last record is `local` (seq, hash), does not contain
    the broker's `anchor`; None when it does. Reads files only when the anchor is older."""
    seq, value = local
    if anchor.seq > seq:
        return (
            f"the audit log ends at record {seq}, but the broker holds the head of record "
            f"{anchor.seq}: records were cut off the end of the log, or it was started over"
        )
    found = value if anchor.seq == seq else _hash_at(directory, anchor.seq)
    if found is None:
        return f"record {anchor.seq}, the head the broker holds, is missing from the audit log"
    if found != anchor.hash:
        return (
            f"record {anchor.seq} differs from the head the broker holds: the audit log was "
            "rewritten, or started over"
        )
    return None


def _hash_at(directory: Path, seq: int) -> str | None:
    """The hash of record `seq`, looked for in the one file whose records span it.

    The current file is read before the rotated files are listed: the daemon or a command beside
    us may rotate the log meanwhile, which only moves records from the current file to a new
    rotated one, so none can be missed. (Listed first, a rotation before the current file was
    read moved the record out of sight, and a whole log read as records cut off.)"""
    for data in _newest_first(directory):
        first = _first_seq(data)
        if first is not None and first <= seq:
            for raw in lines_of(data):  # one at a time: a file is tens of thousands of records
                record = parse_line(raw)
                if record is not None and record.get("seq") == seq:
                    value = record.get("hash")
                    return value if isinstance(value, str) else None
            return None
    return None


def _newest_first(directory: Path) -> Iterator[bytes]:
    """Each file's bytes, the current file's first; a file is read only when asked for."""
    yield _read(directory / CURRENT_FILE)
    for _, path in reversed(rotated_files(directory)):
        yield _read(path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _first_seq(data: bytes) -> int | None:
    """The seq of the file's first parsable record."""
    for raw in lines_of(data):
        record = parse_line(raw)
        if record is not None:
            seq = record.get("seq")
            return seq if isinstance(seq, int) else None
    return None


# -- the copy on the broker -------------------------------------------------------------------


class MalformedHead(BrokerError):
    """The retained audit head is not `{seq, hash}`."""


def fetch_head(
    settings: Settings, wait_s: float = HEAD_WAIT_S, abort: threading.Event | None = None
) -> Head | None:
    """The retained `<base>/bridge/audit_head` ({"seq":…, "hash":…}), or None if there is none
    (or `abort` was set: the daemon stopping does not wait for the broker). Raises BrokerError
    when the broker cannot be reached, MalformedHead for another payload."""
    payload = read_retained(_connection(settings, "audit"), _topic(settings), wait_s, abort)
    return _head_from(payload) if payload else None


def clear_head(settings: Settings, wait_s: float = HEAD_WAIT_S) -> None:
    """Delete the retained head (an empty retained message), as the daemon's own identity."""
    from bridge.access.control import publish_once

    publish_once(
        _connection(settings, "forget"),
        [Publish(_topic(settings), b"", retain=True)],
        timeout_s=wait_s,
    )


def _connection(settings: Settings, purpose: str) -> Any:
    from bridge.access.control import Connection

    mqtt = settings.mqtt
    return Connection.from_config(
        mqtt,
        username=mqtt.username or "",
        password=mqtt.password.get_secret_value() if mqtt.password else "",
        client_id=f"{mqtt.client_id}-{purpose}-{uuid.uuid4().hex[:8]}",
    )


def _topic(settings: Settings) -> str:
    return Topics(base=settings.mqtt.base_topic).audit_head


def read_retained(
    conn: Any, topic: str, wait_s: float, abort: threading.Event | None = None
) -> bytes | None:
    """The retained message on `topic`, or None when the broker holds none. "None" needs the
    broker's word: a connection it accepted and a subscription it granted, then a moment of
    silence. Anything short of that raises BrokerError, never None: a broker restarting, or a
    proxy in front of one, must not pass for a broker without a head (the daemon would take it
    as leave to publish its own over the evidence). `abort`, when set, ends the wait."""
    from bridge.access.control import make_client, running

    got: list[bytes] = []
    refused: list[str] = []
    subscribed, done = threading.Event(), threading.Event()

    def on_connect(client: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            refused.append(f"the broker refused the connection: {reason}")
            done.set()
        else:
            client.subscribe(topic, qos=1)

    def on_subscribe(_c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any = None) -> None:
        if any(code.is_failure for code in reasons):
            refused.append(f"the broker refused to let this login read {topic} (grant it read)")
            done.set()
            return
        subscribed.set()
        # A retained message follows the SUBACK at once; a topic without one stays silent.
        grace = threading.Timer(RETAINED_GRACE_S, done.set)
        grace.daemon = True
        grace.start()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        got.append(bytes(message.payload))
        done.set()

    client = make_client(conn)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    with running(client, conn):
        _wait(done, wait_s, abort)
    if got:
        return got[0]
    if refused:
        raise BrokerError(refused[0])
    if not subscribed.is_set() or not done.is_set():
        raise BrokerError(f"the broker at {conn.host}:{conn.port} did not answer in {wait_s:g} s")
    return None


def _wait(done: threading.Event, wait_s: float, abort: threading.Event | None) -> None:
    deadline = time.monotonic() + wait_s
    while not done.wait(min(ABORT_POLL_S, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
            return


def _head_from(payload: bytes) -> Head:
    try:
        doc = json.loads(payload)
        return Head(int(doc["seq"]), str(doc["hash"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedHead(f"the published audit head is not {{seq, hash}}: {exc}") from exc
