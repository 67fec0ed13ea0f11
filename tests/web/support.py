"""Helpers for the web tests: the app built on fakes, logging in, reading CSRF tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyotp
from starlette.applications import Starlette

from bridge.config import Settings
from bridge.store import Store
from bridge.web.app import create_web_app
from bridge.web.passwords import set_owner_password
from tests.web.fakes import (
    FakePipeline,
    FakeRegistry,
    FakeStepUp,
    FakeVehicles,
    MemoryAudit,
    MutableClock,
)

OWNER_PASSWORD = "correct horse battery staple"
BASE_URL = "http://127.0.0.1:8088"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Harness:
    """One web app on fakes, with every collaborator reachable from the test."""

    app: Starlette
    store: Store
    clock: MutableClock
    audit: MemoryAudit
    registry: FakeRegistry
    stepup: FakeStepUp
    pipeline: FakePipeline
    vehicles: FakeVehicles
    settings: Settings


def build_harness(state_dir: Path, mqtt: dict[str, Any] | None = None, **web: Any) -> Harness:
    clock = MutableClock()
    audit = MemoryAudit(clock)
    registry = FakeRegistry(audit, clock)
    stepup = FakeStepUp(clock)
    vehicles = FakeVehicles(clock)
    pipeline = FakePipeline(
        registry=registry,
        stepup=stepup,
        audit=audit,
        clock=clock,
        vehicles=[v.slug for v in vehicles.views],
    )
    settings = Settings(state_dir=state_dir, web=web, mqtt=mqtt or {})
    store = Store.open(state_dir)
    app = create_web_app(
        settings=settings,
        store=store,
        registry=registry,
        audit=audit,
        audit_reader=audit,
        pipeline=pipeline,
        vehicles_view=vehicles,
        stepup=stepup,
        clock=clock,
    )
    set_owner_password(store, OWNER_PASSWORD, now=clock())
    return Harness(app, store, clock, audit, registry, stepup, pipeline, vehicles, settings)


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def login(
    client: httpx.AsyncClient, password: str = OWNER_PASSWORD, **extra: str
) -> httpx.Response:
    """Open the login page (for its CSRF token) and submit the password."""
    page = await client.get("/login")
    form = {"csrf": csrf_of(page.text), "password": password, "next": "/apps", **extra}
    return await client.post("/login", data=form)


async def page_csrf(client: httpx.AsyncClient, path: str = "/apps") -> str:
    return csrf_of((await client.get(path)).text)


NEW_STEPUP_SECRET = re.compile(r'<code class="secret">([A-Z2-7]+)</code>')


async def enrol_stepup(
    client: httpx.AsyncClient, now: datetime, password: str = OWNER_PASSWORD
) -> str:
    """Enrol (or replace) step-up on the Security page as the owner does: password, then a code
    from the proposed secret. Returns the secret now in force."""
    form = {"csrf": await page_csrf(client, "/security"), "password": password}
    asked = await client.post("/security/stepup", data=form)
    assert asked.status_code == 303, asked.text
    shown = (await client.get("/security/stepup/new")).text
    match = NEW_STEPUP_SECRET.search(shown)
    assert match, "no new secret on the page"
    secret = match.group(1)
    code = pyotp.TOTP(secret).at(now)
    confirmed = await client.post(
        "/security/stepup/new", data={"csrf": csrf_of(shown), "code": code}
    )
    assert confirmed.status_code == 303, confirmed.text
    return secret
