"""ASGI apps built on their first request: the owner page, and behind it the REST API.

Most owners look at the page now and then, while Home Assistant, Docker's health check and
Prometheus ask `/healthz` and `/metrics` all day. Loading the page (Jinja2 and the page's modules)
costs about 3 MB that an owner who never opens it would carry for nothing. So `LazyApp` serves
the small observability app at once and builds the full app (and starts its lifespan) the first
time any other path is asked for; from then on it forwards to it. `Deferred` does the same inside
the page for the REST API (FastAPI and oauthlib, about 8 MB more), which only apps call. The
builds run their imports in a thread, so the event loop keeps polling and taking commands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

Build = Callable[[], Awaitable[ASGIApp]]


class LazyApp:
    """`light` serves `light_paths`; everything else goes to the app `build()` returns."""

    def __init__(self, *, light: ASGIApp, light_paths: frozenset[str], build: Build) -> None:
        self._light = light
        self._light_paths = light_paths
        self._build = build
        self._app: ASGIApp | None = None
        self._lock: asyncio.Lock | None = None  # made on the loop, at the first build
        self._lifespans = contextlib.AsyncExitStack()

    @property
    def built(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope.get("path") in self._light_paths:
            await self._light(scope, receive, send)
        else:
            app = self._app or await self._load()
            await app(scope, receive, send)

    async def _load(self) -> ASGIApp:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:  # the first requests wait for one build, not one each
            if self._app is None:
                app = await self._build()
                # Built after the server's own start-up: run the app's lifespan ourselves.
                router = getattr(app, "router", None)
                lifespan = getattr(router, "lifespan_context", None)
                if lifespan is not None:
                    await self._lifespans.enter_async_context(lifespan(app))
                self._app = app
        return self._app

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._lifespans.aclose()  # the built app's shutdown (flushes its logs)
                await send({"type": "lifespan.shutdown.complete"})
                return


class Deferred:
    """An ASGI app that `build()` makes on its first request (one build however many requests
    arrive meanwhile), then forwards every request to. No lifespan: what it builds has none."""

    def __init__(self, build: Build) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._lock: asyncio.Lock | None = None  # made on the loop, at the first build

    @property
    def built(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._load()
        await app(scope, receive, send)

    async def _load(self) -> ASGIApp:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._app is None:
                self._app = await self._build()
        return self._app
