"""`LazyApp`: health checks without the page, one build for the first requests, its lifespan run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge.web.lazy import LazyApp


def app_saying(text: str, events: list[str] | None = None) -> Starlette:
    async def say(_request: Request) -> PlainTextResponse:
        return PlainTextResponse(text)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if events is not None:
            events.append("started")
        yield
        if events is not None:
            events.append("stopped")

    return Starlette(routes=[Route("/{path:path}", say)], lifespan=lifespan)


async def run_lifespan(app: LazyApp, messages: list[str]) -> list[str]:
    """Drive the ASGI lifespan protocol as uvicorn does; returns what the app answered."""
    inbox = [{"type": m} for m in messages]
    answers: list[str] = []

    async def receive() -> dict[str, str]:
        return inbox.pop(0)

    async def send(message: dict[str, str]) -> None:
        answers.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)  # type: ignore[arg-type]
    return answers


async def test_light_paths_never_build_the_full_app() -> None:
    builds: list[int] = []

    async def build() -> Starlette:
        builds.append(1)
        return app_saying("full")

    lazy = LazyApp(light=app_saying("light"), light_paths=frozenset({"/healthz"}), build=build)
    transport = httpx.ASGITransport(app=lazy)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/healthz")).text == "light"
        assert builds == [] and not lazy.built
        assert (await client.get("/apps")).text == "full"
        assert (await client.get("/healthz")).text == "light"  # still the light app after
    assert builds == [1]


async def test_concurrent_first_requests_share_one_build_and_its_lifespan_runs() -> None:
    """Five requests arrive while the build is under way: one build; the built app's lifespan
    starts with it and stops when the server shuts down."""
    events: list[str] = []
    builds: list[int] = []

    async def build() -> Starlette:
        builds.append(1)
        await asyncio.sleep(0.05)
        return app_saying("full", events)

    lazy = LazyApp(light=app_saying("light"), light_paths=frozenset(), build=build)
    transport = httpx.ASGITransport(app=lazy)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        pages = await asyncio.gather(*(client.get(f"/p{i}") for i in range(5)))
    assert [p.text for p in pages] == ["full"] * 5
    assert builds == [1] and events == ["started"]
    answers = await run_lifespan(lazy, ["lifespan.startup", "lifespan.shutdown"])
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["started", "stopped"]
