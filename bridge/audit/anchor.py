"""Does the local audit log still contain the head the broker holds?

The daemon publishes its newest record's `{seq, hash}` retained on `<base>/bridge/audit_head`:
a copy off the box, so that records cut off the end of the log can be noticed. At start the
daemon compares that copy with its log *before* publishing its own head, which would otherwise
overwrite the evidence with the head of whatever log is left.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

from bridge.audit.chain import chain_files, parse_line
from bridge.audit.verify import Head
from bridge.config import Settings
from bridge.errors import BrokerError
from bridge.mqtt.topics import Topics

HEAD_WAIT_S = 5.0


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
    """The hash of record `seq`, looked for in the one file whose records span it."""
    for path in reversed(chain_files(directory)):
        records = _records(path)
        if records and isinstance(first := records[0].get("seq"), int) and first <= seq:
            match = next((r for r in records if r.get("seq") == seq), None)
            return str(match["hash"]) if match is not None else None
    return None


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    return [record for record in map(parse_line, lines) if record is not None]


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
    conn = _connection(settings, "forget")
    from bridge.access.control import make_client

    client = make_client(conn)
    try:
        client.connect(conn.host, conn.port, keepalive=conn.keepalive)
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot reach the broker at {conn.host}:{conn.port}: {exc}") from exc
    client.loop_start()
    try:
        info = client.publish(_topic(settings), b"", qos=1, retain=True)
        info.wait_for_publish(wait_s)
        if not info.is_published():
            raise BrokerError("the broker did not confirm clearing the audit head")
    finally:
        client.disconnect()
        client.loop_stop()


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
    conn: Any, topic: str, wait_s: float, done: threading.Event | None = None
) -> bytes | None:
    """The retained message on `topic`, or None when the broker holds none (or `done` was set
    by the caller before it came)."""
    from bridge.access.control import make_client

    got: list[bytes] = []
    done = done or threading.Event()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        got.append(bytes(message.payload))
        done.set()

    client = make_client(conn)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    # A retained message follows the SUBACK at once; a topic without one stays silent.
    client.on_subscribe = lambda *_: threading.Timer(1.0, done.set).start()
    client.on_message = on_message
    try:
        client.connect(conn.host, conn.port, keepalive=conn.keepalive)
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot reach the broker at {conn.host}:{conn.port}: {exc}") from exc
    client.loop_start()
    try:
        done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None


def _head_from(payload: bytes) -> Head:
    try:
        doc = json.loads(payload)
        return Head(int(doc["seq"]), str(doc["hash"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedHead(f"the published audit head is not {{seq, hash}}: {exc}") from exc
