"""`ownerlink audit verify` and `ownerlink audit tail`: check and read the audit log.

Both only read; they work while the daemon runs, and both refuse an audit directory that does not
exist. `verify` exits 0 when the chain is intact and 1 naming the first bad record; with
`--head SEQ:HASH` (or `--mqtt`, which reads the head the daemon publishes retained) it also
catches records cut off the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, TextIO

from bridge.audit.log import audit_directory
from bridge.audit.read import RecordFilter, follow, format_record, last_records
from bridge.audit.verify import Head, Report, verify
from bridge.cli.common import add_common, settings_from
from bridge.config import Settings
from bridge.errors import AuditError, BrokerError
from bridge.mqtt.topics import Topics

HEAD_WAIT_S = 5.0


def register(sub: Any) -> None:
    parser = sub.add_parser("audit", help="verify and read the tamper-evident audit log")
    inner = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    check = inner.add_parser(
        "verify",
        help="check the hash chain; exit 1 at the first bad record",
        description=(
            "Check the hash chain. Exit 0 when intact; 1 at the first bad record, or when the "
            "audit directory does not exist (a wrong --state-dir or --dir must not pass for an "
            "intact log); 2 for a usage or config error. An audit directory that exists but "
            "holds no records yet is intact, with 0 records."
        ),
    )
    check.add_argument(
        "--head",
        metavar="SEQ:HASH",
        type=_head_arg,
        help="a published head to check for truncation",
    )
    check.add_argument(
        "--mqtt",
        action="store_true",
        help="read the published head from the broker (<base>/bridge/audit_head)",
    )
    _add_source(check)
    check.set_defaults(func=verify_command)
    tail = inner.add_parser("tail", help="show the latest records")
    tail.add_argument(
        "-n", type=_count, default=20, metavar="N", help="how many (default 20; -f -n 0: only new)"
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep showing new records")
    tail.add_argument("--app", help="only this app's records")
    tail.add_argument("--vehicle", help="only this vehicle's records")
    tail.add_argument("--kind", help="only this kind, e.g. command or command.decision")
    tail.add_argument("--json", action="store_true", help="print the records as JSON lines")
    _add_source(tail)
    tail.set_defaults(func=tail_command)


def _add_source(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="an audit directory to read instead of <state_dir>/audit",
    )


def _head_arg(text: str) -> Head:
    try:
        return Head.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def verify_command(args: argparse.Namespace) -> int:
    settings = None if args.dir and not args.mqtt else settings_from(args)
    directory = _existing(args.dir or audit_directory(_require(settings).state_dir))
    head = args.head
    if args.mqtt and head is None:
        head = fetch_head(_require(settings))
    report = verify(directory, head=head, progress=_progress(sys.stderr))
    _print_report(report, head, args.mqtt)
    return 0 if report.ok else 1


def _existing(directory: Path) -> Path:
    """The audit directory, refused when it is missing: otherwise a typo in --dir or --state-dir
    reads as an intact log of 0 records. (Unreadable paths raise OSError: main says whose.)"""
    if not directory.is_dir():
        raise AuditError(
            f"no audit log at {directory}: check --state-dir or --dir "
            "(the daemon creates it when it first starts)"
        )
    return directory


def _print_report(report: Report, head: Head | None, asked_broker: bool) -> None:
    if asked_broker and head is None:
        print(
            "note: no audit head is published on the broker; truncation not checked",
            file=sys.stderr,
        )
    print(report.summary())


def _require(settings: Settings | None) -> Settings:
    assert settings is not None
    return settings


def _progress(out: TextIO) -> Any:
    """A progress line on a terminal (big logs take a while); nothing otherwise."""
    if not out.isatty():
        return None

    def show(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        end = "\n" if done >= total else ""
        print(f"\rverifying… {pct:3d}%", end=end, file=out, flush=True)

    return show


def tail_command(args: argparse.Namespace) -> int:
    directory = _existing(args.dir or audit_directory(settings_from(args).state_dir))
    wanted = RecordFilter(app=args.app, vehicle=args.vehicle, kind=args.kind)
    for record in last_records(directory, args.n, wanted):
        _show(record, as_json=args.json)
    if args.follow:
        for record in follow(directory, wanted):
            _show(record, as_json=args.json)
    return 0


def _show(record: dict[str, Any], *, as_json: bool) -> None:
    line = json.dumps(record, separators=(",", ":")) if as_json else format_record(record)
    print(line, flush=True)


def fetch_head(settings: Settings, wait_s: float = HEAD_WAIT_S) -> Head | None:
    """The retained `<base>/bridge/audit_head` ({"seq":…, "hash":…}), or None if there is none."""
    from bridge.access.control import Connection

    mqtt = settings.mqtt
    conn = Connection.from_config(
        mqtt,
        username=mqtt.username or "",
        password=mqtt.password.get_secret_value() if mqtt.password else "",
        client_id=f"{mqtt.client_id}-audit-{uuid.uuid4().hex[:8]}",
    )
    payload = read_retained(conn, Topics(base=mqtt.base_topic).audit_head, wait_s)
    return _head_from(payload) if payload else None


def read_retained(conn: Any, topic: str, wait_s: float) -> bytes | None:
    """The retained message on `topic`, or None when the broker holds none."""
    from bridge.access.control import make_client

    got: list[bytes] = []
    done = threading.Event()

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
        raise BrokerError(f"the published audit head is not {{seq, hash}}: {exc}") from exc
