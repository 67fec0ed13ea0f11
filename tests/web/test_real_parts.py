"""The web app wired to the real registry, audit log, step-up verifier and command pipeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.access.apps import AppRegistry
from bridge.access.broker import NoEnforcement
from bridge.audit.log import AuditLog
from bridge.audit.verify import verify
from bridge.commands import stepup as totp
from bridge.commands.dedup import DedupStore
from bridge.commands.forward import VehicleRoute
from bridge.commands.pipeline import CommandPipeline
from bridge.commands.stepup import StepUp
from bridge.config import CommandsConfig, Settings, StepUpConfig
from bridge.events import AlertKind, CollectingAlerts, CollectingAudit
from bridge.model import (
    CommandOutcome,
    CommandStatus,
    Operation,
    VehicleInfo,
    VehicleState,
)
from bridge.mqtt.topics import Publish, Topics
from bridge.providers.base import OnAccepted
from bridge.store import Store
from bridge.web.adapters import AuditFiles, OwnerStepUp
from bridge.web.app import create_web_app
from bridge.web.passwords import set_owner_password
from tests.web.fakes import FakeVehicles, MutableClock
from tests.web.oauth_helpers import add_rest_app, bearer, refresh, tokens_for
from tests.web.support import (
    BASE_URL,
    OWNER_PASSWORD,
    csrf_of,
    enrol_stepup,
    login,
    page_csrf,
)


class RecordingProvider:
    """A provider that accepts every command at once and remembers it."""

    account = "acct"

    def __init__(self) -> None:
        self.executed: list[Operation] = []

    async def list_vehicles(self) -> list[VehicleInfo]:
        return [VehicleInfo("car-1")]

    async def read(self, vehicle_id: str) -> VehicleState:
        return VehicleState(vehicle_id, None)

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        return frozenset(Operation)

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        self.executed.append(operation)
        return CommandOutcome(CommandStatus.SUCCEEDED)

    async def aclose(self) -> None:
        return None


class Published:
    def __init__(self) -> None:
        self.messages: list[Publish] = []

    def publish(self, message: Publish) -> None:
        self.messages.append(message)


@dataclass
class Daemon:
    client: httpx.AsyncClient
    registry: AppRegistry
    provider: RecordingProvider
    state_dir: Path
    clock: MutableClock
    alerts: CollectingAlerts

    def audit_records(self) -> list[dict[str, Any]]:
        text = (self.state_dir / "audit" / "audit.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """The real parts on a temporary state directory, the web app in front of them."""
    state_dir, clock = tmp_path / "state", MutableClock()
    store, alerts = Store.open(state_dir), CollectingAlerts()
    audit = AuditLog(state_dir / "audit", clock=clock, rotate_bytes=1 << 20)
    audit.open()
    registry = AppRegistry(
        store=store, audit=audit, alerts=alerts, enforcement=NoEnforcement(), clock=clock
    )
    registry.migrate()
    verifier = StepUp(store=store, state_dir=state_dir, config=StepUpConfig(), alerts=alerts)
    verifier.start()
    ids = DedupStore(store=store, window_s=3600)
    ids.start()
    provider = RecordingProvider()
    pipeline = CommandPipeline(
        topics=Topics(base="t"),
        commands=CommandsConfig(),
        apps=registry,
        stepup_required_for=StepUpConfig().required_for,
        vehicles={"family-car": VehicleRoute(provider, "car-1", frozenset(Operation))},
        audit=audit,
        stepup=verifier,
        ids=ids,
        publisher=Published(),
        alerts=alerts,
        clock=clock,
    )
    await pipeline.start()
    app = create_web_app(
        settings=Settings(state_dir=state_dir),
        store=store,
        registry=registry,
        audit=audit,
        audit_reader=AuditFiles(state_dir / "audit"),
        pipeline=pipeline,
        vehicles_view=FakeVehicles(clock),
        stepup=OwnerStepUp(verifier=verifier, state_dir=state_dir, clock=clock),
        clock=clock,
    )
    set_owner_password(store, OWNER_PASSWORD, now=clock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield Daemon(client, registry, provider, state_dir, clock, alerts)
    await pipeline.stop()
    audit.close()
    store.close()


async def test_owner_page_drives_the_real_registry_and_audit_log(daemon: Daemon) -> None:
    """Adding, re-scoping and revoking on the page changes the registry; the chain verifies."""
    owner = daemon.client
    await login(owner)
    form = {
        "csrf": await page_csrf(owner),
        "app_id": "ha",
        "name": "Home Assistant",
        "scope": ["read:status", "read:location"],
    }
    assert (await owner.post("/apps", data=form)).status_code == 303
    assert 'data-testid="secret"' in (await owner.get("/apps/ha/created")).text
    app = daemon.registry.get("ha")
    assert app is not None and {s.value for s in app.scopes} == {"read:status", "read:location"}
    form = {"csrf": await page_csrf(owner, "/apps/ha"), "scope": ["read:status", "command:lock"]}
    await owner.post("/apps/ha/scopes", data=form)
    confirm = await owner.get("/apps/ha/revoke")
    await owner.post("/apps/ha/revoke", data={"csrf": csrf_of(confirm.text)})
    assert daemon.registry.get("ha") is None
    kinds = [r["kind"] for r in daemon.audit_records()]
    for kind in (
        "owner.login",
        "app.added",
        "app.scopes_withdrawn",
        "app.scopes_granted",
        "app.revoked",
    ):
        assert kind in kinds
    assert [r["actor"] for r in daemon.audit_records() if r["kind"].startswith("app.")] == [
        "web"
    ] * 4
    page = (await owner.get("/audit?app=ha")).text
    assert "Chain verified" in page
    assert verify(daemon.state_dir / "audit").ok


async def test_rest_commands_go_through_the_real_pipeline_with_step_up(daemon: Daemon) -> None:
    """Lock runs; unlock needs the owner's TOTP code, refused without, accepted with."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["read:status", "command:lock", "command:unlock"])
    tokens = await tokens_for(owner, owner, rest, "read:status command:lock command:unlock")
    headers = bearer(tokens["access_token"])
    url = "/api/v1/vehicles/family-car/commands/lock"
    locked = await owner.post(url, json={"action": "LOCK", "id": "one"}, headers=headers)
    assert locked.status_code == 200, locked.text
    assert locked.json()["status"] == "succeeded"
    await enrol_stepup(owner, daemon.clock())
    daemon.clock.advance(30)  # the code that confirmed the new secret is spent
    refused = await owner.post(url, json={"action": "UNLOCK"}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "stepup_required"
    code = totp.code_at(totp.load_secret(daemon.state_dir) or "", daemon.clock())
    unlocked = await owner.post(url, json={"action": "UNLOCK", "code": code}, headers=headers)
    assert unlocked.json()["status"] == "succeeded", unlocked.text
    assert daemon.provider.executed == [Operation.LOCK, Operation.UNLOCK]
    decisions = [r for r in daemon.audit_records() if r["kind"] == "command.decision"]
    assert [d["decision"] for d in decisions] == ["allowed", "refused", "allowed"]
    assert all("code" not in d or d["code"] == "[redacted]" for d in decisions)
    assert any(r["kind"] == "api.access" for r in daemon.audit_records())


@pytest.mark.parametrize("action", ["UNLOCK", "unlock", " Unlock"])
async def test_a_token_without_the_scope_cannot_command_however_the_action_is_spelt(
    daemon: Daemon, action: str
) -> None:
    """The owner consented to lock only: the app's own unlock scope does not help the token."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["command:lock", "command:unlock"])
    headers = bearer((await tokens_for(owner, owner, rest, "command:lock"))["access_token"])
    await enrol_stepup(owner, daemon.clock())
    daemon.clock.advance(30)  # the code that confirmed the new secret is spent
    code = totp.code_at(totp.load_secret(daemon.state_dir) or "", daemon.clock())
    url = "/api/v1/vehicles/family-car/commands/lock"
    refused = await owner.post(url, json={"action": action, "code": code}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
    locked = await owner.post(url, json={"action": "lock"}, headers=headers)
    assert locked.json()["status"] == "succeeded", locked.text
    assert daemon.provider.executed == [Operation.LOCK]


async def test_a_rest_command_refused_for_its_scope_is_recorded_and_alerted_as_over_mqtt(
    daemon: Daemon,
) -> None:
    """The pipeline decides a scope refusal: a `command.decision` record and an alert, and the
    app still gets 403 insufficient_scope naming the scope, with the command's result."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["command:lock", "command:unlock"])
    headers = bearer((await tokens_for(owner, owner, rest, "command:lock"))["access_token"])
    url = "/api/v1/vehicles/family-car/commands/lock"
    refused = await owner.post(url, json={"action": "UNLOCK", "id": "u-1"}, headers=headers)
    assert refused.status_code == 403
    body = refused.json()
    assert (body["error"], body["reason"], body["id"]) == (
        "insufficient_scope",
        "scope_missing",
        "u-1",
    )
    assert 'scope="command:unlock"' in refused.headers["www-authenticate"]
    decisions = [r for r in daemon.audit_records() if r["kind"] == "command.decision"]
    assert [(d["id"], d["reason"], d["source"]) for d in decisions] == [
        ("u-1", "scope_missing", "api")
    ]
    refusals = [a for a in daemon.alerts.alerts if a.kind == AlertKind.COMMAND_REFUSED]
    assert [a.app for a in refusals] == ["dash"]
    assert daemon.provider.executed == []


async def test_a_refused_command_over_its_limit_says_when_to_retry(daemon: Daemon) -> None:
    """Past the command rate limit: 429, with Retry-After for the limit's minute."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["command:lock"])
    headers = bearer((await tokens_for(owner, owner, rest, "command:lock"))["access_token"])
    url = "/api/v1/vehicles/family-car/commands/lock"
    limit = CommandsConfig().rate_limit_per_minute  # what the pipeline here runs with
    for _ in range(limit):
        assert (await owner.post(url, json={"action": "LOCK"}, headers=headers)).status_code == 200
    refused = await owner.post(url, json={"action": "LOCK"}, headers=headers)
    assert (refused.status_code, refused.json()["reason"]) == (429, "rate_limited")
    assert refused.headers["retry-after"] == "60"


async def test_revoking_in_the_real_registry_ends_rest_access(daemon: Daemon) -> None:
    """A revocation through the registry (as `ownerlink apps revoke` does) stops the tokens."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["read:status"])
    tokens = await tokens_for(owner, owner, rest)
    daemon.registry.revoke("dash")
    assert (
        await owner.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    assert (await refresh(owner, rest, tokens["refresh_token"])).status_code == 401


async def test_a_grant_ended_by_another_process_stays_ended_when_the_scope_comes_back(
    daemon: Daemon,
) -> None:
    """`ownerlink apps` (another process, its own connection) withdraws the app's only consented
    scope and grants it back while the app is idle: the web side never heard of the moment in
    between, yet the refresh token is refused and the access token is dead."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["read:status"])
    tokens = await tokens_for(owner, owner, rest)
    cli_store = Store.open(daemon.state_dir)
    cli = AppRegistry(
        store=cli_store,
        audit=CollectingAudit(),
        alerts=CollectingAlerts(),
        enforcement=NoEnforcement(),
        clock=daemon.clock,
    )
    cli.migrate()
    cli.withdraw("dash", ["read:status"])
    cli.grant("dash", ["read:status"])
    cli_store.close()
    refused = await refresh(owner, rest, tokens["refresh_token"])
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    me = await owner.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    ended = [r for r in daemon.audit_records() if r["kind"] == "oauth.revoked"]
    assert [r["reason"] for r in ended] == ["scopes_withdrawn"]


async def test_a_disabled_apps_token_says_disabled_and_works_again_once_enabled(
    daemon: Daemon,
) -> None:
    """Disabling is not revoking: the 401 says which, and enabling brings the token back."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["read:status"])
    headers = bearer((await tokens_for(owner, owner, rest))["access_token"])
    daemon.registry.set_enabled("dash", False)
    refused = await owner.get("/api/v1/me", headers=headers)
    assert refused.status_code == 401
    assert "the app is disabled" in refused.headers["www-authenticate"]
    daemon.registry.set_enabled("dash", True)
    assert (await owner.get("/api/v1/me", headers=headers)).status_code == 200


@pytest.mark.parametrize("rate", ["abc", "-5", "0"])
async def test_a_refused_limits_form_leaves_the_real_registry_unchanged(
    daemon: Daemon, rate: str
) -> None:
    """The allowlist is not saved when the rate beside it is refused, nor audited."""
    owner = daemon.client
    await login(owner)
    form = {"csrf": await page_csrf(owner), "app_id": "dash", "scope": ["read:status"]}
    assert (await owner.post("/apps", data=form)).status_code == 303
    csrf = await page_csrf(owner, "/apps/dash")
    form = {"csrf": csrf, "allow_cidrs": "10.0.0.0/8", "rate_limit": rate}
    response = await owner.post("/apps/dash/limits", data=form)
    assert response.status_code == 400
    assert 'id="rate_limit-error"' in response.text
    app = daemon.registry.get("dash")
    assert app is not None and (app.allow_cidrs, app.rate_limit_per_minute) == ((), None)
    kinds = [r["kind"] for r in daemon.audit_records()]
    assert "app.allowlist_set" not in kinds and "app.rate_limit_set" not in kinds


async def test_a_taken_app_id_is_named_once(daemon: Daemon) -> None:
    """`'dash' is already taken`, not `… (by 'dash')`; a case-variant still names the holder."""
    owner = daemon.client
    await login(owner)
    for app_id in ("dash", "dash", "Dash"):
        form = {"csrf": await page_csrf(owner), "app_id": app_id, "scope": ["read:status"]}
        response = await owner.post("/apps", data=form)
        if response.status_code == 303:
            await owner.get(response.headers["location"])  # its password shown, as a browser does
    assert response.status_code == 400
    assert "app id &#39;Dash&#39; is already taken (by &#39;dash&#39;)" in response.text
    form = {"csrf": await page_csrf(owner), "app_id": "dash", "scope": ["read:status"]}
    response = await owner.post("/apps", data=form)
    assert response.status_code == 400
    assert "app id &#39;dash&#39; is already taken" in response.text
    assert "(by " not in response.text


async def test_disabling_on_the_page_goes_through_the_real_registry(daemon: Daemon) -> None:
    """The page's Disable calls the registry's set_enabled, as the CLI does: the registry
    writes app.disabled / app.enabled, and the app's REST token stops and starts working."""
    owner = daemon.client
    await login(owner)
    rest = await add_rest_app(owner, "dash", ["read:status"])
    headers = bearer((await tokens_for(owner, owner, rest))["access_token"])
    csrf = await page_csrf(owner, "/apps/dash")
    assert (await owner.post("/apps/dash/disable", data={"csrf": csrf})).status_code == 303
    assert (await owner.get("/api/v1/me", headers=headers)).status_code == 401
    assert (await owner.post("/apps/dash/enable", data={"csrf": csrf})).status_code == 303
    assert (await owner.get("/api/v1/me", headers=headers)).status_code == 200
    toggles = [r for r in daemon.audit_records() if r["kind"] in {"app.disabled", "app.enabled"}]
    assert [(r["kind"], r["app"], r["actor"]) for r in toggles] == [
        ("app.disabled", "dash", "web"),
        ("app.enabled", "dash", "web"),
    ]
    assert verify(daemon.state_dir / "audit").ok


async def test_a_damaged_step_up_secret_is_shown_and_replaced_on_the_security_page(
    daemon: Daemon,
) -> None:
    """A step-up secret that cannot be read shows as damaged, and the page replaces it (through
    Ingress it is the owner's only tool); nothing answers a 500."""
    await login(daemon.client)
    path = daemon.state_dir / "stepup.secret"
    path.write_text("not base32!\n")
    path.chmod(0o600)
    shown = await daemon.client.get("/security")
    assert shown.status_code == 200 and "damaged" in shown.text
    await enrol_stepup(daemon.client, daemon.clock())
    assert "enrolled" in (await daemon.client.get("/security")).text
    assert path.read_text() != "not base32!\n"
