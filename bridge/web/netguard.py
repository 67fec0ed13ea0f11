"""Network guards for every request: the CIDR allowlist and the client address it is checked on."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

IpAddress = IPv4Address | IPv6Address


def parse_ip(text: str | None) -> IpAddress | None:
    """The address a peer connected from, with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) unwrapped.

    A dual-stack listener reports IPv4 peers in mapped form; unwrapping keeps `127.0.0.0/8`
    matching them.
    """
    if not text:
        return None
    try:
        addr = ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def ip_allowed(addr: IpAddress | None, cidrs: Iterable[str]) -> bool:
    """True when `addr` lies in one of `cidrs`; an unknown address is never allowed."""
    if addr is None:
        return False
    return any(addr in ip_network(cidr, strict=False) for cidr in cidrs)


def client_ip(scope: Scope) -> str | None:
    """The peer address of an ASGI connection. Forwarded headers are ignored on purpose: they are
    set by the client, and the allowlist must only trust the socket's own peer address."""
    client = scope.get("client")
    return str(client[0]) if client else None


class AllowlistMiddleware:
    """Refuses (403) every HTTP request whose peer address is outside the allowlist."""

    def __init__(self, app: ASGIApp, *, allow_cidrs: Iterable[str]) -> None:
        self.app = app
        self.allow_cidrs = tuple(allow_cidrs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not ip_allowed(parse_ip(client_ip(scope)), self.allow_cidrs):
            response = PlainTextResponse("forbidden: address not in web.allow_cidrs", 403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
