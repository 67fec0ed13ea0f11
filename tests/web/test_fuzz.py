"""The REST API fuzzed from its own OpenAPI document with schemathesis: no 5xx, no crash.

Every operation in /api/v1/openapi.json (resource routes and the OAuth back channel) gets
generated requests, valid and invalid, carrying a real bearer token that holds every scope, so
the generator reaches the handlers and not only the 401 path. The app is built when the module
loads because schemathesis reads the schema then (its lazy fixture loader does not work with
pytest 9).
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.model import Scope as OwnerScope
from bridge.web.oauth.store import OAuthStore, scopes_text
from tests.web.support import Harness, build_harness

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def from_loopback(app: ASGIApp) -> ASGIApp:
    """Starlette's test client reports its peer as "testclient", which is no IP address and so
    fails the allowlist; present it as 127.0.0.1, as a local client would be."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "client": ("127.0.0.1", 50000)}, receive, send)

    return wrapped


def fuzz_target(state_dir: Path) -> tuple[Harness, dict[str, str]]:
    """The app on fakes, an app `fuzz` holding every scope, and a bearer token for it."""
    harness = build_harness(state_dir, api_reads_per_minute=6000)
    app = harness.registry.add("fuzz", scopes=frozenset(OwnerScope), allow_location=True).app
    store, now = OAuthStore(harness.store), harness.clock().timestamp()
    store.add_client(app, kind="public", secret=None, uris=["https://a.example/cb"], now=now)
    scopes = scopes_text(frozenset(OwnerScope))
    grant = store.new_grant("fuzz", scopes, now=now)
    token = secrets.token_urlsafe(32)
    store.save_token(
        token,
        kind="access",
        grant_id=grant,
        client_id="fuzz",
        scopes=scopes,
        scope_mark=harness.registry.scope_mark(),
        now=now,
        ttl_s=3600,
    )
    return harness, {"Authorization": f"Bearer {token}"}


_STATE = tempfile.TemporaryDirectory(prefix="ownerlink-fuzz-")
HARNESS, BEARER = fuzz_target(Path(_STATE.name) / "state")
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", from_loopback(HARNESS.app))


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    HARNESS.store.close()
    _STATE.cleanup()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_api_answers_every_generated_request_without_server_errors(case: Any) -> None:
    """Any request the schema admits (or nearly admits) gets a documented, non-5xx answer."""
    case.call_and_validate(headers=BEARER, checks=CHECKS)
