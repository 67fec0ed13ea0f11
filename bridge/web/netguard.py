"""Network guards for every request: the CIDR allowlist, the client address it is checked on, and
the Host check that keeps DNS rebinding out."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

IpAddress = IPv4Address | IPv6Address
# Paths whose clients are programs: their errors are JSON `{error, error_description}` (RFC 6749
# §5.2, RFC 6750 §3), whichever layer refuses them; the owner's pages answer with text or a page.
API_PREFIXES = ("/api/", "/oauth/token", "/oauth/revoke", "/oauth/introspect", "/.well-known/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def refusal(scope: Scope, status: int, error: str, description: str) -> Response:
    """A guard's answer, before any route runs: JSON on API paths, plain text elsewhere."""
    if is_api_path(str(scope.get("path", ""))):
        return JSONResponse({"error": error, "error_description": description}, status)
    return PlainTextResponse(description, status)


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
            text = "forbidden: address not in web.allow_cidrs"
            await refusal(scope, 403, "ip_not_allowed", text)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Where bridge.web.ingress puts the path prefix of a request that came through a trusted Ingress
# proxy (read by the templates, cookies and frame rules through `ingress.prefix_of`).
INGRESS_PREFIX_KEY = "ownerlink.prefix"
# Names no public DNS answers for: an attacker cannot own one, so cannot rebind one. RFC 6761
# (`localhost`), RFC 6762 (`local`, mDNS), RFC 8375 (`home.arpa`), ICANN's private `internal`.
LOCAL_SUFFIXES = (".localhost", ".local", ".home.arpa", ".internal")


def host_of(header: str) -> str:
    """`Example.COM.:8088` → `example.com`; `[::1]:8088` → `::1`."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


def host_allowed(host: str, extra: Iterable[str]) -> bool:
    """Whether a page asked for under this name can be the owner's own.

    DNS rebinding points a name the attacker owns at 127.0.0.1, and the owner's browser then
    sends this server the attacker's page's requests from an allowed address. Such a name is
    always a public one with a dot in it; an address typed as digits, a bare host name and the
    special-use local names cannot be registered by anyone, so they pass. Other names must be
    listed (web.allowed_hosts, or the host of web.public_url).
    """
    if not host or "." not in host or parse_ip(host) is not None:
        return True
    return host.endswith(LOCAL_SUFFIXES) or host in extra


def allowed_hosts(listed: Iterable[str], public_url: str | None) -> frozenset[str]:
    names = {host_of(name) for name in listed}
    if public_url:
        names.add(host_of(urlsplit(public_url).netloc.rsplit("@", 1)[-1]))
    return frozenset(names)


class HostGuard:
    """Refuses (400) every HTTP request whose Host header names a host we do not answer to."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Through Ingress the Host is Home Assistant's own name (often a public one), and the
        # Supervisor, not a browser, connected: rebinding cannot produce such a request.
        if scope["type"] == "http" and not scope.get(INGRESS_PREFIX_KEY):
            header = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
            host = host_of(header)
            if not host_allowed(host, self.hosts):
                text = f"bad request: this server does not answer to {host!r}; add the name to "
                text += "web.allowed_hosts to use it"
                await refusal(scope, 400, "invalid_request", text)(scope, receive, send)
                return
        await self.app(scope, receive, send)
