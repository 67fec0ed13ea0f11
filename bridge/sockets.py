"""A listening address claimed before a server starts, so its failure is ours to word."""

from __future__ import annotations

import socket


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (SO_REUSEADDR: a restart need not wait out TIME_WAIT),
    for uvicorn to listen on. `socket.gaierror` when `host` does not resolve; any other
    OSError when the address cannot be bound (taken, not this machine's, a privileged port)."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
