"""A TCP front for a broker: forwards, or, while `dropping`, accepts a connection, reads what
the client sends and hangs up (what a container port does while the broker behind it restarts).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from bridge.demo.broker import free_port


class BrokerFront:
    def __init__(
        self, host: str, port: int, *, listen: int | None = None, dropping: bool = True
    ) -> None:
        self.target = (host, port)
        self.port = listen or free_port()
        self.dropping = dropping
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.dropping:
                self.dropped += 1
                with contextlib.suppress(OSError), conn:
                    conn.settimeout(1)
                    conn.recv(4096)
                continue
            upstream = socket.create_connection(self.target)
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._server.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
