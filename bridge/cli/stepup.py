"""`ownerlink stepup …`: enrol the owner's authenticator, inspect and lift lockouts, show a code.

`enroll` shows the otpauth:// URI once, as a terminal QR code and as text; the secret itself stays
in `<state_dir>/stepup.secret` (0600). `code` prints the current code from that secret: it exists
for tests and the demo, and adds no exposure (whoever can run it can read the secret file), but
with it the shell on this box is the second factor, so use your phone's authenticator for real.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from bridge.access.table import AppTable
from bridge.access.validation import LOGIN_STEPUP_ID
from bridge.audit.log import AuditLog, audit_directory
from bridge.cli.common import add_common, settings_from
from bridge.commands import stepup
from bridge.commands.apps import OWNER_ID
from bridge.config import Settings
from bridge.errors import AccessError
from bridge.events import CollectingAlerts
from bridge.store import Store

# Step-up failures also count under two ids no app can take: the owner's commands at the command
# line (`ownerlink command`) and the owner's web login.
OWNER_IDS = frozenset({OWNER_ID, LOGIN_STEPUP_ID})


def register(sub: Any) -> None:
    parser = sub.add_parser("stepup", help="second factor (TOTP) for unlock and remote start")
    inner = parser.add_subparsers(dest="stepup_command", metavar="ACTION", required=True)
    enroll = inner.add_parser("enroll", help="create the secret and show it as a QR code")
    enroll.add_argument(
        "--force",
        action="store_true",
        help="replace an existing secret (your authenticator entry stops working)",
    )
    enroll.set_defaults(func=enroll_command)
    code = inner.add_parser(
        "code", help="print the current code (for testing and the demo; use your authenticator)"
    )
    code.set_defaults(func=code_command)
    status = inner.add_parser("status", help="is step-up enrolled; is an app locked out")
    status.add_argument(
        "apps",
        nargs="*",
        metavar="APP",
        help=f"apps to check (default: owner; {LOGIN_STEPUP_ID} is the owner's web login)",
    )
    status.set_defaults(func=status_command)
    clear = inner.add_parser("clear-lockout", help="lift an app's step-up lockout")
    clear.add_argument(
        "app", metavar="APP", help=f"an app id, owner, or {LOGIN_STEPUP_ID} (the web login)"
    )
    clear.set_defaults(func=clear_command)
    for each in (enroll, code, status, clear):
        add_common(each)


def _now() -> datetime:
    return datetime.now(UTC)


def enroll_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # The audit log is opened first: if it cannot be written, the old secret stays as it is
    # (replaced unaudited, the owner's authenticator would stop working with no new QR shown).
    with _audit(settings) as audit:
        secret = stepup.enroll(settings.state_dir, force=args.force)
        try:
            audit.append("stepup.enrolled", replaced=bool(args.force), actor="owner")
        finally:
            # Once written, the new secret is shown even if its record failed: the old one is gone.
            _show_enrolment(secret)
    return 0


def _show_enrolment(secret: str) -> None:
    uri = stepup.provisioning_uri(secret)
    print("Scan this with your authenticator app (or enter the URI below by hand):\n")
    _print_qr(uri)
    print(f"\n{uri}\n")
    print("Sensitive commands (unlock, remote start) now need the 6-digit code it shows.")


def _print_qr(uri: str) -> None:
    import qrcode

    qr = qrcode.QRCode(border=2)
    qr.add_data(uri)
    # Dark-on-light terminals read the inverted form; most terminals are light-on-dark.
    qr.print_ascii(out=sys.stdout, invert=True)


def code_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    secret = stepup.load_secret(settings.state_dir)
    if secret is None:
        print("step-up is not enrolled: run `ownerlink stepup enroll`", file=sys.stderr)
        return 1
    print(stepup.code_at(secret, _now()))
    return 0


def status_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    enrolled = stepup.load_secret(settings.state_dir) is not None
    apps = args.apps or [OWNER_ID]
    with _verifier(settings) as verifier:
        _require_apps(verifier.store, settings, apps)
        print(
            f"step-up: {'enrolled' if enrolled else 'not enrolled (run `ownerlink stepup enroll`)'}"
        )
        print(f"required for: {', '.join(sorted(settings.stepup.required_for)) or 'nothing'}")
        for app in apps:
            now = _now()
            until = verifier.locked_until(app, now)
            if until is not None:
                print(f"{app}: locked out until {until.isoformat(timespec='seconds')}")
                continue
            failures, limit = verifier.recent_failures(app, now), settings.stepup.max_failures
            print(f"{app}: ok ({failures} of {limit} failures before a lockout)")
    return 0


def clear_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with _verifier(settings) as verifier:
        _require_apps(verifier.store, settings, [args.app])
        locked = verifier.locked_until(args.app, _now()) is not None
        # The audit log is opened first: if it cannot be written, the lockout stays as it is.
        with _audit(settings) as audit:
            verifier.clear_lockout(args.app)
            audit.append("stepup.lockout_cleared", app=args.app, actor="owner")
    if locked:
        print(f"{args.app}: step-up lockout lifted")
    else:
        print(f"{args.app}: was not locked out; its recent failed codes are forgotten")
    return 0


def _require_apps(store: Store, settings: Settings, app_ids: list[str]) -> None:
    """Refuse an id that is no registered or declared app, nor one of the owner's own (a typo
    would otherwise read as "ok", or lift nothing and still be audited)."""
    table = AppTable(store, origin="stepup-cli")
    table.migrate()
    for app_id in app_ids:
        if app_id not in OWNER_IDS and app_id not in settings.apps and table.get(app_id) is None:
            raise AccessError(f"no app {app_id!r} (see `ownerlink apps list`)")


@contextmanager
def _verifier(settings: Settings) -> Iterator[stepup.StepUp]:
    store = Store.open(settings.state_dir)
    verifier = stepup.StepUp(
        store=store, state_dir=settings.state_dir, config=settings.stepup, alerts=CollectingAlerts()
    )
    try:
        verifier.start()
        yield verifier
    finally:
        store.close()


@contextmanager
def _audit(settings: Settings) -> Iterator[AuditLog]:
    audit = AuditLog(
        audit_directory(settings.state_dir), clock=_now, rotate_bytes=settings.audit.rotate_bytes
    )
    audit.open()
    try:
        yield audit
    finally:
        audit.close()
