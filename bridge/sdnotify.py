"""systemd readiness notification (sd_notify) over $NOTIFY_SOCKET, without a dependency."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send e.g. `READY=1` or `STOPPING=1`; a no-op (False) when not started by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True
