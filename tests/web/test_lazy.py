"""`LazyApp`: health checks without the page, one build for the first requests, its lifespan run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]
# The owner's visit, then an app's first API calls, in a fresh interpreter: sys.modules shows what
# each loaded. The harness is the web app on fakes, as the other web tests build it.
PAGE_THEN_API = """
import asyncio, json, sys, tempfile
from pathlib import Path
import httpx
from tests.web.support import BASE_URL, build_harness, login

HEAVY = ("fastapi", "pydantic.v1", "opentelemetry", "qrcode", "oauthlib")

async def visit():
    harness = build_harness(Path(tempfile.mkdtemp()) / "state")
    harness.registry.add("nodered", scopes=["read:status"])
    transport = httpx.ASGITransport(app=harness.app, client=("127.0.0.1", 40000))
    seen = {}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        statuses = [(await login(client)).status_code]
        for path in ("/apps", "/vehicles", "/audit", "/security", "/apps/nodered", "/nope"):
            statuses.append((await client.get(path)).status_code)
        seen["pages"] = statuses
        seen["page_loaded"] = [m for m in HEAVY if m in sys.modules]
        seen["api"] = [
            (await client.get("/api/v1/openapi.json")).status_code,
            (await client.get("/api/v1/me")).status_code,
            (await client.post("/oauth/token", data={"grant_type": "x"})).status_code,
            (await client.get("/.well-known/oauth-authorization-server")).status_code,
        ]
        seen["api_loaded"] = "fastapi" in sys.modules
    print(json.dumps(seen))

asyncio.run(visit())
"""


def test_the_owner_pages_load_no_fastapi_and_the_api_loads_it_when_called() -> None:
    """Logging in and opening every page (and a missing one) leaves FastAPI, pydantic.v1,
    OpenTelemetry, qrcode and oauthlib out of the process; the API answers once called."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PAGE_THEN_API],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
        cwd=ROOT,
        env=env,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["pages"] == [303, 200, 200, 200, 200, 200, 404]
    assert seen["page_loaded"] == []
    assert seen["api"] == [200, 401, 400, 200]
    assert seen["api_loaded"] is True
