"""`WebServer`: uvicorn on the daemon's own event loop, started and stopped with the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Iterator
from typing import cast

import uvicorn
from starlette.types import ASGIApp

from bridge.config import WebConfig
from bridge.errors import ConfigError, PortInUse
from bridge.sockets import bound_socket

# How long stop() lets requests still running finish before cancelling them. uvicorn's default
# is to wait for ever, and a REST command waits for the car (up to `commands.timeout_s`): the
# daemon's stop, which stops the page first, then outlived systemd's TimeoutStopSec (20 s) and
# was killed before it could record its commands' outcomes or publish `offline`.
GRACEFUL_STOP_S = 5.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers (the daemon owns SIGTERM/SIGINT and stops us in order)
    and without its ten wake-ups a second."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_requested = asyncio.Event()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit_requested.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn polls `should_exit` every 0.1 s, which is most of an idle daemon's CPU on a Pi.
        # We are told when to stop instead, and tick once a second: `on_tick` refreshes the Date
        # header whenever its counter is a multiple of ten.
        counter = 0
        while not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), 1.0)
            counter = (counter + 10) % 864_000


class WebServer:
    """Serves an ASGI app on `config.host:config.port` (TLS when a cert and key are given)."""

    def __init__(
        self,
        app: ASGIApp,
        config: WebConfig,
        *,
        sock: socket.socket | None = None,
        graceful_stop_s: float = GRACEFUL_STOP_S,
    ) -> None:
        self.app = app
        self.config = config
        self.graceful_stop_s = graceful_stop_s
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = sock  # bound already (see `listen_socket`), or not

    @property
    def port(self) -> int:
        """The bound port (useful with `port: 0`, which picks a free one)."""
        if self._socket is None:
            raise RuntimeError("the web server is not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind, then serve in a task; returns once requests are being accepted.

        Binding and TLS loading happen here, not inside uvicorn, because uvicorn answers those
        failures with sys.exit(), which must not escape into the daemon's event loop.
        """
        config = self._uvicorn_config()
        if self._socket is None:
            self._socket = listen_socket(self.config)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise what stopped it
                raise ConfigError(["web: the web server stopped during start-up"])
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Finish in-flight requests (cancelled after `graceful_stop_s`), run the app's shutdown
        (flushes the access log), close."""
        if self._server is None or self._task is None:
            return
        self._server.request_exit()
        await self._task
        self._server = self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _uvicorn_config(self) -> uvicorn.Config:
        cfg = self.config
        if (cfg.tls_cert is None) != (cfg.tls_key is None):
            raise ConfigError(["web.tls_cert / web.tls_key: give both or neither"])
        config = uvicorn.Config(
            self.app,
            ssl_certfile=str(cfg.tls_cert) if cfg.tls_cert else None,
            ssl_keyfile=str(cfg.tls_key) if cfg.tls_key else None,
            # Our own logging is configured once by bridge.logs; uvicorn must not replace it,
            # and its access log would write every URL (OAuth state, codes in redirects).
            log_config=None,
            access_log=False,
            lifespan="on",
            # Plain HTTP/1.1 and no WebSocket: nothing here speaks WebSocket, and "auto" would
            # import the websockets package (half a megabyte) because another dependency brings it.
            http="h11",
            ws="none",
            server_header=False,
            proxy_headers=False,  # never trust X-Forwarded-For: the allowlist uses the peer
            # Annotated as int, but uvicorn only hands it to asyncio.wait_for: fractions work.
            timeout_graceful_shutdown=cast(int, self.graceful_stop_s),
        )
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"web.tls_cert / web.tls_key: cannot load ({exc})"]) from exc
        return config


def listen_socket(config: WebConfig) -> socket.socket:
    """A bound socket for `web.host:web.port` (uvicorn listens on it). ConfigError naming the keys
    when the address cannot be ours; PortInUse when another program holds it (which may pass)."""
    host, port = config.host, config.port
    try:
        return bound_socket(host, port)
    except socket.gaierror as exc:
        raise ConfigError([f"web.host: cannot resolve {host!r} ({exc})"]) from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"cannot listen on {host}:{port}: another program is using it") from exc
        raise ConfigError([f"web.host / web.port: cannot listen on {host}:{port} ({exc})"]) from exc
