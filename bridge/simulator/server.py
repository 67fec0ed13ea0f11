"""Serving the simulator with uvicorn: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import uvicorn

from bridge.simulator.app import create_app
from bridge.simulator.guard import SimulatedDrop
from bridge.simulator.world import Simulator

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 5.0


class _QuietDrops(logging.Filter):
    """Drops uvicorn's traceback for a `drop` fault: it is the simulator's intent, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDrop)


def quiet_simulated_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


def uvicorn_config(sim: Simulator, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(sim),
        host=host,
        port=port,
        log_level=log_level,
        # Through our logging, not uvicorn's own handlers: where the simulator shares a process
        # with the daemon (the demo, tests), uvicorn's config would otherwise take over the
        # daemon's web server's loggers too, bypassing the JSON format and the redaction.
        log_config=None,
        access_log=False,
        lifespan="off",
        # A `timeout` fault parks a request for a long time; don't let it hold up shutdown.
        timeout_graceful_shutdown=1,
    )


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.contextmanager
def serve_in_thread(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `sim` over real sockets on a background thread; yields the base URL.

    Port 0 picks a free port. On exit the server stops and the thread is joined.
    """
    quiet_simulated_drops()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = _Server(uvicorn_config(sim, host=host, port=bound_port, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"simulator:{bound_port}", daemon=True
    )
    thread.start()
    try:
        if not server.ready.wait(STARTUP_TIMEOUT_S):
            raise RuntimeError("the simulator did not start listening in time")
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(SHUTDOWN_TIMEOUT_S)
        sock.close()
