"""The /api/v1 resource routes: bearer tokens, scopes, allowlists, rate limits, commands, audit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bridge.model import Scope
from tests.web.conftest import ClientFactory
from tests.web.oauth_helpers import RestClient, add_rest_app, bearer, tokens_for
from tests.web.support import BASE_URL, Harness, build_harness, login

ALL = [
    "read:status",
    "read:health",
    "read:location",
    "command:lock",
    "command:unlock",
    "command:remote_start",
]


@pytest.fixture
async def rest(owner: httpx.AsyncClient) -> RestClient:
    return await add_rest_app(owner, "dash", ALL)


async def token(owner: httpx.AsyncClient, rest: RestClient, scopes: str) -> dict[str, str]:
    return bearer((await tokens_for(owner, owner, rest, scopes))["access_token"])


async def test_calls_without_a_token_get_401_with_a_challenge(client: httpx.AsyncClient) -> None:
    """No bearer token: 401 and a WWW-Authenticate header naming the Bearer scheme."""
    response = await client.get("/api/v1/vehicles")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    bogus = await client.get("/api/v1/vehicles", headers=bearer("made-up"))
    assert bogus.json()["error"] == "invalid_token"


async def test_status_needs_read_status_and_never_exposes_the_vin(
    owner: httpx.AsyncClient, rest: RestClient
) -> None:
    """With read:status the status document comes back under the vehicle's slug."""
    headers = await token(owner, rest, "read:status")
    listing = (await owner.get("/api/v1/vehicles", headers=headers)).json()
    assert listing["vehicles"][0]["vehicle"] == "family-car"
    status = await owner.get("/api/v1/vehicles/family-car/status", headers=headers)
    assert status.status_code == 200
    assert status.json()["lock"] == "locked"
    assert status.json()["vehicle"] == "family-car"


async def test_missing_scope_is_403_insufficient_scope(
    owner: httpx.AsyncClient, rest: RestClient
) -> None:
    """A token without read:health or read:location cannot read those documents."""
    headers = await token(owner, rest, "read:status")
    for doc, scope in (("health", "read:health"), ("location", "read:location")):
        response = await owner.get(f"/api/v1/vehicles/family-car/{doc}", headers=headers)
        assert response.status_code == 403
        assert response.json()["error"] == "insufficient_scope"
        assert f'scope="{scope}"' in response.headers["www-authenticate"]


async def test_location_with_its_opt_in_scope(owner: httpx.AsyncClient, rest: RestClient) -> None:
    """Once the owner ticks location on the consent page the app can read it."""
    headers = await token(owner, rest, "read:location")
    body = (await owner.get("/api/v1/vehicles/family-car/location", headers=headers)).json()
    assert body["latitude"] == pytest.approx(51.501)


async def test_withdrawing_a_scope_in_the_registry_takes_effect_at_once(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """Tokens carry consented scopes, but the registry's current grant is the ceiling."""
    headers = await token(owner, rest, "read:status read:health")
    harness.registry.withdraw("dash", frozenset({Scope.READ_HEALTH}))
    health = await owner.get("/api/v1/vehicles/family-car/health", headers=headers)
    assert health.status_code == 403
    assert (await owner.get("/api/v1/vehicles/family-car/status", headers=headers)).is_success


async def test_wrong_ip_is_refused_by_the_apps_allowlist(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness, client_for: ClientFactory
) -> None:
    """An app allowlisted to one address gets 403 from any other, with a valid token."""
    headers = await token(owner, rest, "read:status")
    harness.registry.set(replace(harness.registry.require("dash"), allow_cidrs=("127.0.0.5/32",)))
    away = await client_for("127.0.0.6").get("/api/v1/vehicles", headers=headers)
    assert away.status_code == 403
    assert away.json()["error"] == "ip_not_allowed"
    assert (await client_for("127.0.0.5").get("/api/v1/vehicles", headers=headers)).is_success


async def test_unknown_vehicle_is_404(owner: httpx.AsyncClient, rest: RestClient) -> None:
    """A slug that is not one of the owner's vehicles is not found."""
    headers = await token(owner, rest, "read:status")
    response = await owner.get("/api/v1/vehicles/other-car/status", headers=headers)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_vehicle"


async def test_reads_are_rate_limited_per_app(tmp_path: Path) -> None:
    """Past web.api_reads_per_minute the app gets 429 with Retry-After, until the minute passes."""
    harness = build_harness(tmp_path / "s", api_reads_per_minute=3)
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        await login(client)
        rest = await add_rest_app(client, "dash", ["read:status"])
        headers = await token(client, rest, "read:status")
        codes = [
            (await client.get("/api/v1/vehicles", headers=headers)).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        harness.clock.advance(61)
        assert (await client.get("/api/v1/vehicles", headers=headers)).status_code == 200
    harness.store.close()


async def test_lock_command_goes_through_the_pipeline(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """POST a command: the pipeline decides and returns the final result document."""
    headers = await token(owner, rest, "command:lock")
    response = await owner.post(
        "/api/v1/vehicles/family-car/commands/lock",
        json={"action": "LOCK", "id": "c-1"},
        headers=headers,
    )
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "succeeded"
    assert result["id"] == "c-1"
    assert set(result) == {"id", "command", "action", "status", "reason", "ts"}
    assert harness.pipeline.forwarded == [("dash", "family-car", "lock", "LOCK")]


async def test_unlock_needs_a_step_up_code(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """Unlock without a code is refused (403, stepup_required); with a fresh TOTP code it runs."""
    harness.stepup.enroll()
    headers = await token(owner, rest, "command:unlock")
    url = "/api/v1/vehicles/family-car/commands/lock"
    refused = await owner.post(url, json={"action": "UNLOCK"}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "stepup_required"
    bad = await owner.post(url, json={"action": "UNLOCK", "code": "000000"}, headers=headers)
    assert bad.json()["reason"] == "stepup_failed"
    good = await owner.post(
        url, json={"action": "UNLOCK", "code": harness.stepup.code()}, headers=headers
    )
    assert good.status_code == 200
    assert good.json()["status"] == "succeeded"


async def test_command_needs_the_scope_on_the_token_not_only_the_app(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """The app holds command:unlock, but a token consented without it cannot unlock (the
    pipeline refuses it, so the refusal is on record)."""
    headers = await token(owner, rest, "command:lock")
    response = await owner.post(
        "/api/v1/vehicles/family-car/commands/lock", json={"action": "UNLOCK"}, headers=headers
    )
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert harness.pipeline.forwarded == []
    decisions = [r["reason"] for r in harness.audit.items if r["kind"] == "command.decision"]
    assert decisions == ["scope_missing"]


async def test_malformed_command_bodies_are_422(owner: httpx.AsyncClient, rest: RestClient) -> None:
    """Unknown fields, over-long codes and unknown commands are refused before the pipeline."""
    headers = await token(owner, rest, "command:lock")
    url = "/api/v1/vehicles/family-car/commands"
    for path, body in (
        ("/lock", {"action": "LOCK", "extra": 1}),
        ("/lock", {"action": "LOCK", "code": "1" * 40}),
        ("/explode", {"action": "PRESS"}),
    ):
        response = await owner.post(url + path, json=body, headers=headers)
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"


async def test_a_key_given_twice_is_refused_not_settled_by_the_parser(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """{"action": "LOCK", ..., "action": "UNLOCK"} is 422 and reaches nobody, as over MQTT:
    a reader keeping the first key and one keeping the last must not see two commands."""
    harness.stepup.enroll()
    headers = await token(owner, rest, "command:lock command:unlock")
    code = harness.stepup.code()
    for body in (
        f'{{"action": "LOCK", "code": "{code}", "action": "UNLOCK"}}',
        '{"action": "LOCK", "id": "a", "id": "b"}',
        '{"action": NaN}',
        '{"action": "LOCK"',
        "",
    ):
        response = await owner.post(
            "/api/v1/vehicles/family-car/commands/lock",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"
        assert response.json()["error_description"].startswith("body: ")
    assert harness.pipeline.forwarded == []


async def test_a_command_without_a_token_is_401_whatever_its_body(
    client: httpx.AsyncClient,
) -> None:
    """The token is checked before the body is read: a caller without one learns nothing of
    what the body should be (RFC 6750 section 3.1)."""
    for body in ('{"action":', '{"action": "LOCK", "extra": 1}', '{"action": "LOCK"}'):
        response = await client.post(
            "/api/v1/vehicles/family-car/commands/lock",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 401, body
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_every_access_is_audited_and_repeats_are_summarised(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """First access per route and status per minute is recorded at once; repeats as a summary."""
    headers = await token(owner, rest, "read:status")
    for _ in range(3):
        await owner.get("/api/v1/vehicles/family-car/status", headers=headers)
    await owner.get("/api/v1/vehicles/family-car/health", headers=headers)
    records = [r for r in harness.audit.items if r["kind"] == "api.access"]
    assert [(r["route"], r["status"]) for r in records] == [
        ("/api/v1/vehicles/{vehicle}/status", 200),
        ("/api/v1/vehicles/{vehicle}/health", 403),
    ]
    assert records[0]["app"] == "dash"
    assert records[0]["vehicle"] == "family-car"
    assert records[1]["decision"] == "denied"
    harness.clock.advance(60)
    harness.app.state.ctx.access_log.flush()
    summary = harness.audit.items[-1]
    assert summary["summary"] is True
    assert summary["repeats"][0]["count"] == 2
    assert harness.registry.touched == ["dash"]
    # Only the OpenAPI document is left out, not whatever else a caller names `….json`.
    await owner.get("/api/v1/openapi.json", headers=headers)
    await owner.post("/api/v1/vehicles/family-car/commands/lock.json", json={}, headers=headers)
    routes = [r.get("route") for r in harness.audit.items if r["kind"] == "api.access"]
    assert routes[-1] == "/api/v1/vehicles/{vehicle}/commands/{command}"


async def test_what_a_caller_makes_up_does_not_grow_the_audit_log(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """Anyone the allowlist admits can call without a token: a made-up 60 KB vehicle name or
    method is not written into the fsync'd access records, which stay a few hundred bytes."""
    huge = "v" * 60_000
    assert (await client.get(f"/api/v1/vehicles/{huge}/status")).status_code == 401
    assert (await client.request("PURGEEVERYTHING", "/api/v1/vehicles")).status_code == 405
    assert (await client.get("/api/v1/vehicles/no-such-car/status")).status_code == 401
    records = [r for r in harness.audit.items if r["kind"] == "api.access"]
    assert [(r["vehicle"], r["method"], r["status"]) for r in records] == [
        (None, "GET", 401),
        (None, "other", 405),
    ]  # the third is a repeat of the first kind this minute: counted, not written
    assert max(len(json.dumps(r)) for r in records) < 400
    harness.clock.advance(60)
    harness.app.state.ctx.access_log.flush()
    assert harness.audit.items[-1]["repeats"] == [
        {"route": "/api/v1/vehicles/{vehicle}/status", "vehicle": None, "status": 401, "count": 1}
    ]


async def test_no_vehicle_data_goes_out_while_its_access_cannot_be_audited(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """With the audit log down, a read is answered 503 audit_unavailable, without the data, and
    so is every later one of the same kind: none is taken for a repeat of a record never made."""
    headers = await token(owner, rest, "read:status read:location")
    harness.audit.unwritable = True
    for _ in range(2):
        for path in ("/status", "/location"):
            response = await owner.get(f"/api/v1/vehicles/family-car{path}", headers=headers)
            assert response.status_code == 503
            assert response.json()["error"] == "audit_unavailable"
            assert "lat" not in response.text and "lock" not in response.text
    harness.audit.unwritable = False
    served = await owner.get("/api/v1/vehicles/family-car/status", headers=headers)
    assert served.status_code == 200
    assert [r["status"] for r in harness.audit.items if r["kind"] == "api.access"] == [200]


async def test_openapi_document_covers_the_api_and_not_the_owner_pages(
    client: httpx.AsyncClient,
) -> None:
    """/api/v1/openapi.json lists the resource and token routes, and no owner page."""
    doc = (await client.get("/api/v1/openapi.json")).json()
    paths = set(doc["paths"])
    assert "/api/v1/vehicles/{vehicle}/commands/{command}" in paths
    assert "/oauth/token" in paths
    assert not any(p.startswith(("/apps", "/login", "/audit", "/security")) for p in paths)


async def test_openapi_document_declares_the_oauth_flow_and_the_error_shapes(
    client: httpx.AsyncClient,
) -> None:
    """Every /api/v1 operation was shown as open to anyone, the OAuth refusals had no body schema
    and the token body made nothing but grant_type required: clients and generators built from
    the document could not know to get a token, or what a refusal looks like."""
    doc = (await client.get("/api/v1/openapi.json")).json()
    flow = doc["components"]["securitySchemes"]["ownerlink"]["flows"]["authorizationCode"]
    assert (flow["authorizationUrl"], flow["tokenUrl"]) == ("/oauth/authorize", "/oauth/token")
    assert set(flow["scopes"]) == {scope.value for scope in Scope}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security") == [{"ownerlink": []}]
            assert secured == path.startswith("/api/v1/"), (method, path)
            if path.startswith("/oauth/"):
                error = operation["responses"]["400"]["content"]["application/json"]["schema"]
                assert error["required"] == ["error", "error_description"], path
            if secured:
                assert "503" in operation["responses"], path  # audit_unavailable
    token = doc["paths"]["/oauth/token"]["post"]["requestBody"]["content"]
    variants = token["application/x-www-form-urlencoded"]["schema"]["oneOf"]
    assert [v["required"] for v in variants] == [
        ["grant_type", "code", "code_verifier"],
        ["grant_type", "refresh_token"],
    ]
    revoke = doc["paths"]["/oauth/revoke"]["post"]["requestBody"]["content"]
    hint = revoke["application/x-www-form-urlencoded"]["schema"]["properties"]["token_type_hint"]
    assert "enum" not in hint  # a hint the server does not know is ignored (RFC 7009 §2.1)
