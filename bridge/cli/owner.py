"""`ownerlink owner set-password`: set the owner's password for the web page.

Calls the same function as the Security page (bridge.web.passwords.set_owner_password), so both
enforce the same policy, store the same scrypt hash and end every open session.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import Any

from bridge.cli.common import add_common, settings_from
from bridge.errors import AccessError


def register(sub: Any) -> None:
    """Add `ownerlink owner set-password` to the command line."""
    parser = sub.add_parser("owner", help="the owner's login to the web page")
    inner = parser.add_subparsers(dest="owner_command", metavar="ACTION", required=True)
    setpw = inner.add_parser(
        "set-password", help="set or change the owner password (logs out every web session)"
    )
    add_common(setpw)
    setpw.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    setpw.set_defaults(func=set_password_command)


NOT_TEXT = "the password is not UTF-8 text; nothing was changed"


def read_password(from_stdin: bool) -> str:
    """The new password: stdin's first line, or typed twice at a prompt that does not echo."""
    if from_stdin:
        try:
            return _text(sys.stdin.readline().rstrip("\r\n"))
        except UnicodeDecodeError:  # a strict locale decodes stdin strictly
            raise AccessError(NOT_TEXT) from None
    if not sys.stdin.isatty():
        # Without a terminal getpass would read stdin, echoing, and fail at its end.
        raise AccessError("no terminal to type the password at: use --password-stdin in scripts")
    first = _prompt("New owner password: ")
    if _prompt("Repeat it: ") != first:
        raise AccessError("the passwords differ; nothing was changed")
    return first


def _prompt(text: str) -> str:
    try:
        return _text(getpass.getpass(text))
    except EOFError:  # Ctrl-D at the prompt
        raise AccessError("no password typed; nothing was changed") from None
    except UnicodeDecodeError:
        raise AccessError(NOT_TEXT) from None


def _text(password: str) -> str:
    """Refuse bytes that are not UTF-8: Python reads them as lone surrogates (most locales),
    which the password hash cannot encode, a traceback after the password was accepted."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise AccessError(NOT_TEXT) from None
    return password


def set_password_command(args: argparse.Namespace) -> int:
    """Read the password, hash and store it, end all web sessions."""
    from bridge.store import Store
    from bridge.web.passwords import set_owner_password

    settings = settings_from(args)
    password = read_password(args.password_stdin)
    store = Store.open(settings.state_dir)
    try:
        set_owner_password(store, password, now=datetime.now(UTC))
    finally:
        store.close()
    print("owner password set; every web session has been logged out")
    return 0
