"""A stand-in for systemd's notify socket: what the daemon sent it."""

from __future__ import annotations

import socket


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on the (non-blocking) socket."""
    got = []
    while True:
        try:
            got.append(sock.recv(64))
        except BlockingIOError:
            return got
