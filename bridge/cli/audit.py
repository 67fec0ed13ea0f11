"""`ownerlink audit verify` and `ownerlink audit tail`: check and read the audit log.

Both only read; they work while the daemon runs, and both refuse an audit directory that does not
exist (`verify` also one without a log file in it). `verify` exits 0 when the chain is intact and
1 naming the first bad record; with `--head SEQ:HASH` (or `--mqtt`, which reads the head the
daemon publishes retained) it also catches records cut off the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bridge.audit.anchor import clear_head, fetch_head
from bridge.audit.chain import CURRENT_FILE, chain_files
from bridge.audit.log import AuditLog, audit_directory
from bridge.audit.read import RecordFilter, follow, format_record, last_records, last_seq
from bridge.audit.verify import Head, Report, verify
from bridge.cli.common import add_common, settings_from
from bridge.config import Settings
from bridge.errors import AuditError


def register(sub: Any) -> None:
    parser = sub.add_parser("audit", help="verify and read the tamper-evident audit log")
    inner = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    check = inner.add_parser(
        "verify",
        help="check the hash chain; exit 1 at the first bad record",
        description=(
            "Check the hash chain. Exit 0 when intact; 1 at the first bad record, or when the "
            "directory holds no audit log at all (a wrong --state-dir or --dir, or a deleted "
            "audit.jsonl, must not pass for an intact log); 2 for a usage or config error. A log "
            "the daemon has opened always has its file, perhaps still without records: that is "
            "intact, with 0 records."
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
    forget = inner.add_parser(
        "forget-head",
        help="clear the audit head kept on the broker, after starting the log over",
        description=(
            "The daemon refuses commands when the audit log does not contain the head the "
            "broker holds: records were cut off, or the log was started over. After starting "
            "over on purpose (the audit folder moved aside), this records the old head in the "
            "new log and clears it from the broker; then restart the daemon."
        ),
    )
    add_common(forget)
    forget.set_defaults(func=forget_head_command)


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
    directory = _with_files(_existing(args.dir or audit_directory(_require(settings).state_dir)))
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


def _with_files(directory: Path) -> Path:
    """The audit directory, refused when it holds no file of a log: the daemon creates its
    audit.jsonl with the folder, so an empty one is a wrong path (the state directory itself,
    a backup folder) or a log whose file was deleted, and neither may read as intact."""
    if chain_files(directory):
        return directory
    nested = audit_directory(directory)
    hint = f"; did you mean {nested}?" if chain_files(nested) else ""
    raise AuditError(
        f"no audit log in {directory}: no {CURRENT_FILE} and no rotated audit files{hint}"
    )


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
    # Where following starts, taken before the last records are read: a record written between
    # the two is shown once, never lost.
    start = last_seq(directory)
    shown = last_records(directory, args.n, wanted)
    for record in shown:
        _show(record, as_json=args.json)
    if args.follow:
        newest = max((r["seq"] for r in shown if isinstance(r.get("seq"), int)), default=start)
        for record in follow(directory, wanted, after_seq=max(start, newest)):
            _show(record, as_json=args.json)
    return 0


def _show(record: dict[str, Any], *, as_json: bool) -> None:
    line = json.dumps(record, separators=(",", ":")) if as_json else format_record(record)
    print(line, flush=True)


def forget_head_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    held = fetch_head(settings)
    if held is None:
        print("the broker holds no audit head: nothing to forget")
        return 0
    # Recorded first: the new log says which head was given up, and when, before it is gone.
    with AuditLog(
        audit_directory(settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=settings.audit.rotate_bytes,
    ) as log:
        log.append("audit.head_forgotten", forgotten_seq=held.seq, forgotten_hash=held.hash)
    clear_head(settings)
    print(
        f"cleared the audit head of record {held.seq} ({held.hash[:12]}…) from the broker and "
        "recorded it in the audit log; restart the daemon to publish the new head"
    )
    return 0
