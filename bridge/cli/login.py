"""`ownerlink login [ACCOUNT]`: the owner logs in at Ford and consents; we keep the tokens.

Three ways to bring Ford's redirect back: `--listen` (a one-shot loopback HTTP server on the
redirect URI), `--redirect-url URL` (scripts; finishes the login a `--print-url` run started; `-`
reads the URL from standard input, out of the process list), or pasting the URL at the prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO
from urllib.parse import urlsplit

from bridge.cli.common import add_common, number_in, settings_from
from bridge.config import Settings
from bridge.errors import ConfigError, LoginError, ProviderError
from bridge.events import CollectingAlerts
from bridge.providers.base import FreeGate
from bridge.providers.factory import AccountParts, build_account
from bridge.providers.oauth import LoginRequest, parse_redirect, start_login
from bridge.providers.tokens import TokenStore

DEFAULT_LISTEN_TIMEOUT_S = 300.0
# Long enough to sign in on a phone; -1 or nan gave up at once, a huge value waited for ever.
MAX_LISTEN_TIMEOUT_S = 3600.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# How long one browser connection may take to send its request line and headers.
REQUEST_READ_TIMEOUT_S = 10.0
DONE_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>Ownerlink</title>"
    b"<p>Ownerlink received the login. You can close this window.</p>"
)


def register(sub: Any) -> None:
    parser = sub.add_parser("login", help="log in to the car maker for an account")
    parser.add_argument("account", nargs="?", help="the account to log in (default: the only one)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--listen",
        action="store_true",
        help="wait for the redirect on the (loopback) redirect_uri: a browser on this machine "
        "(no QR code)",
    )
    how.add_argument(
        "--redirect-url",
        metavar="URL",
        help="finish a login started with --print-url, using Ford's redirect URL; '-' reads it "
        "from standard input (scripts: on the command line, other local users can read the "
        "one-time code in the process list)",
    )
    how.add_argument(
        "--print-url",
        action="store_true",
        help="print the authorise URL and exit; finish with --redirect-url",
    )
    parser.add_argument(
        "--timeout",
        type=number_in(0, MAX_LISTEN_TIMEOUT_S, unit="seconds"),
        default=DEFAULT_LISTEN_TIMEOUT_S,
        metavar="S",
        help="with --listen: give up after S seconds (default 300, at most 3600)",
    )
    parser.add_argument("--no-qr", action="store_true", help="do not print the QR code")
    add_common(parser)
    parser.set_defaults(func=login_command)


def login_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    account = pick_account(settings, args.account)
    store = TokenStore(settings.state_dir)
    out = sys.stdout
    if args.redirect_url is not None:
        login = store.load_login(account, time.time())
        asyncio.run(_finish(settings, account, login, _redirect_given(args.redirect_url), out))
        return 0
    login = _start(settings, account)
    # --listen needs the browser on this machine: Ford sends it to a loopback address, which on
    # a phone that scanned the code is the phone itself (and the login then timed out here).
    _show_url(login.url, out, qr=not (args.no_qr or args.listen))
    if args.print_url:
        print(
            f"Then run: ownerlink login {account} --redirect-url '<the URL Ford sent you to>'",
            file=out,
        )
        return 0
    url = asyncio.run(_listen(login, args.timeout, out)) if args.listen else _prompt(out)
    asyncio.run(_finish(settings, account, login, url, out))
    return 0


def _redirect_given(value: str) -> str:
    """The redirect URL from the command line, or from standard input's first line for `-`."""
    return sys.stdin.readline().strip() if value == "-" else value


def _start(settings: Settings, account: str) -> LoginRequest:
    """A new login (state, PKCE verifier), remembered on disk so `--redirect-url` can finish it."""
    login = start_login(settings.accounts[account], time.time())
    TokenStore(settings.state_dir).save_login(account, login)
    return login


def pick_account(settings: Settings, name: str | None) -> str:
    """The named account, or the only configured one."""
    if name is not None:
        if name not in settings.accounts:
            known = ", ".join(sorted(settings.accounts)) or "none configured"
            raise ConfigError([f"accounts.{name}: no such account (known: {known})"])
        return name
    if len(settings.accounts) != 1:
        known = ", ".join(sorted(settings.accounts)) or "none configured"
        raise ConfigError([f"accounts: name the account to log in ({known})"])
    return next(iter(settings.accounts))


def _show_url(url: str, out: TextIO, *, qr: bool) -> None:
    print("Open this URL to log in at Ford and choose the vehicle(s) to share:", file=out)
    print(f"  {url}", file=out)
    if qr:
        import qrcode

        code = qrcode.QRCode(border=1)
        code.add_data(url)
        print("Or scan it with your phone:", file=out)
        code.print_ascii(out=out, invert=True)
    out.flush()


def _prompt(out: TextIO) -> str:
    print(
        "After consenting, your browser is sent to the redirect URI (the page may not load).",
        file=out,
    )
    print("Paste that whole URL here and press Enter:", file=out, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        raise LoginError("no redirect URL was pasted; run `ownerlink login` again")
    return line.strip()


async def _finish(
    settings: Settings, account: str, login: LoginRequest, redirect_url: str, out: TextIO
) -> None:
    """Check the redirect, trade its code for tokens, store them, list the consented vehicles."""
    code = parse_redirect(redirect_url, expected_state=login.state)
    # Not charged to the budget: a login is the owner's deliberate, rare act (one exchange and one
    # listing), and an exhausted budget must never stop the owner from logging in again.
    parts = build_account(settings, account, gate=FreeGate(), alerts=CollectingAlerts())
    store = TokenStore(settings.state_dir)
    try:
        print("Exchanging the authorisation code for tokens…", file=out, flush=True)
        try:
            await parts.tokens.complete_login(login, code)
        except (LoginError, ProviderError) as exc:
            raise _login_error(exc, parts.oauth.token_endpoint) from exc
        store.forget_login(account)
        print(
            f"Logged in: tokens for account {account} stored (0600) in {store.path(account)}",
            file=out,
        )
        await _print_vehicles(parts, out)
    finally:
        await parts.provider.aclose()


def _login_error(exc: Exception, token_endpoint: str) -> LoginError:
    if isinstance(exc, LoginError):
        return exc
    host = urlsplit(token_endpoint).netloc
    return LoginError(f"the token endpoint at {host} failed: {exc}")


async def _print_vehicles(parts: AccountParts, out: TextIO) -> None:
    try:
        vehicles = await parts.provider.list_vehicles()
    except ProviderError as exc:
        print(f"Logged in, but listing the vehicles failed: {exc}", file=out)
        return
    print(f"The consent covers {len(vehicles)} vehicle(s):", file=out)
    for info in vehicles:
        label = " ".join(str(p) for p in (info.year, info.make, info.model) if p)
        nickname = f" “{info.nickname}”" if info.nickname else ""
        print(f"  {info.vehicle_id}  {label or 'unknown model'}{nickname}", file=out)


async def _listen(login: LoginRequest, timeout_s: float, out: TextIO) -> str:
    """Serve the redirect URI on loopback until Ford's redirect arrives; return its full URL."""
    target = urlsplit(login.redirect_uri)
    host, port = target.hostname or "", target.port or 80
    if host not in LOOPBACK_HOSTS or target.scheme != "http":
        raise LoginError(
            f"--listen needs an http://127.0.0.1:PORT/… redirect_uri, not "
            f"{login.redirect_uri}; use --redirect-url or paste the URL instead"
        )
    arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    handler = _callback_handler(target.path or "/", f"http://{target.netloc}", arrived)
    try:
        server = await asyncio.start_server(handler, host, port)
    except OSError as exc:
        raise LoginError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    async with server:
        print(
            f"Waiting for the redirect on {login.redirect_uri} (up to {timeout_s:g} s)…",
            file=out,
            flush=True,
        )
        try:
            return await asyncio.wait_for(arrived, timeout_s)
        except TimeoutError as exc:
            raise LoginError(f"no redirect arrived within {timeout_s:g} s") from exc


def _callback_handler(path: str, origin: str, arrived: asyncio.Future[str]) -> Any:
    """A minimal HTTP/1.0 handler: the callback path resolves `arrived`, anything else is 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_target = await asyncio.wait_for(_read_request(reader), REQUEST_READ_TIMEOUT_S)
            found = request_target is not None and urlsplit(request_target).path == path
            writer.write(_response(found))
            await writer.drain()
            if found and request_target is not None and not arrived.done():
                arrived.set_result(origin + request_target)
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass  # a stray or broken connection must not end the login
        finally:
            writer.close()

    return handle


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """The request target of a GET, after consuming the headers."""
    line = (await reader.readline()).decode("latin-1")
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    fields = line.split()
    return fields[1] if len(fields) >= 2 and fields[0] == "GET" else None


def _response(found: bool) -> bytes:
    status, body = (b"200 OK", DONE_PAGE) if found else (b"404 Not Found", b"not found")
    head = (
        b"HTTP/1.0 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    return head + body
