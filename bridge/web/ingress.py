"""Serving the owner page through Home Assistant's Ingress: under a path prefix, in HA's frame.

The Supervisor proxies `https://<ha>/api/hassio_ingress/<token>/apps` to our `/apps` and names
the prefix it stripped in `X-Ingress-Path`. The page then has to put that prefix in front of its
links, redirects and cookie path, and let Home Assistant's own page frame it. The header is
believed only from the addresses in `web.ingress_from` (the Supervisor): from anyone else it
would let a client move the page's links, cookie and framing rules wherever it liked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.web.netguard import INGRESS_PREFIX_KEY, client_ip, ip_allowed, parse_ip

# The Supervisor's form: a fixed path and a URL-safe token.
INGRESS_PATH = re.compile(r"^/api/hassio_ingress/[A-Za-z0-9_-]{1,128}$")


def prefix_of(scope: Scope) -> str:
    """The path prefix the page is served under: "" unless the request came through Ingress."""
    return str(scope.get(INGRESS_PREFIX_KEY, ""))


def prefixed_location(location: bytes, prefix: bytes, slash_of: bytes = b"") -> bytes:
    """A redirect to one of our own paths (`/apps`) goes under the prefix; so does Starlette's
    trailing-slash redirect, an absolute URL to `slash_of` (the request's path) with a slash
    added or taken away. Every other absolute URL stays as it is: an OAuth client's redirect
    URI may well be on Home Assistant's own host (the Host the Supervisor passes on), and must
    not be pulled into the add-on. `//host` stays too."""
    if location.startswith(b"/") and not location.startswith(b"//"):
        return prefix + location
    parts = urlsplit(location)
    if slash_of and parts.scheme in (b"http", b"https") and _slash_twin(parts.path, slash_of):
        return prefix + parts.path + (b"?" + parts.query if parts.query else b"")
    return location


def _slash_twin(path: bytes, requested: bytes) -> bool:
    return path != requested and path.rstrip(b"/") == requested.rstrip(b"/")


def _moved(name: bytes, value: bytes, prefix: bytes, slash_of: bytes) -> bytes:
    return prefixed_location(value, prefix, slash_of) if name.lower() == b"location" else value


class Ingress:
    """Takes the prefix from a trusted proxy's `X-Ingress-Path` and puts it on the redirects."""

    def __init__(self, app: ASGIApp, *, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prefix = self._prefix(scope) if scope["type"] == "http" and self.trusted else ""
        if not prefix:
            await self.app(scope, receive, send)
            return
        scope[INGRESS_PREFIX_KEY] = prefix
        raw = prefix.encode("ascii")
        requested = str(scope.get("path", "")).encode("utf-8")

        async def under_prefix(message: Message) -> None:
            if message["type"] == "http.response.start":
                slash_of = requested if message.get("status") in (307, 308) else b""
                message["headers"] = [
                    (name, _moved(name, value, raw, slash_of))
                    for name, value in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, under_prefix)

    def _prefix(self, scope: Scope) -> str:
        if not ip_allowed(parse_ip(client_ip(scope)), self.trusted):
            return ""
        header = dict(scope.get("headers") or ()).get(b"x-ingress-path", b"")
        text = header.decode("latin-1")
        return text if INGRESS_PATH.match(text) else ""
