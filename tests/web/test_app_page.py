"""One app's page: its forms refused field by field, and disabling or enabling the app."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.web.support import BASE_URL, Harness, build_harness, login, page_csrf
from tests.web.test_pages import add_app

LIMIT_KINDS = ("app.allowlist_set", "app.rate_limit_set")


async def post_limits(owner: httpx.AsyncClient, cidrs: str, rate: str) -> httpx.Response:
    form = {"csrf": await page_csrf(owner, "/apps/dash"), "allow_cidrs": cidrs, "rate_limit": rate}
    return await owner.post("/apps/dash/limits", data=form)


def limit_changes(harness: Harness) -> list[str]:
    return [r["kind"] for r in harness.audit.items if r["kind"] in LIMIT_KINDS]


def field(page: str, name: str) -> str:
    """The <input> or <textarea> element with this id, as served."""
    match = re.search(rf'<(input|textarea)[^>]* id="{name}"[^>]*>', page)
    assert match, f"no field {name}"
    return match.group(0)


@pytest.mark.parametrize("rate", ["abc", "-5", "0", "601", "٣", "huge"])
async def test_a_bad_rate_saves_neither_limit_and_shows_the_page_again(
    owner: httpx.AsyncClient, harness: Harness, rate: str
) -> None:
    """Every field is checked before anything is saved; the error is shown on the app's page,
    next to the field, with what was typed kept."""
    if rate == "huge":
        rate = "9" * 5000  # past int()'s 4,300-digit limit: once a 500 page
    await add_app(owner, "dash", ["read:status"])
    response = await post_limits(owner, "10.0.0.0/8", rate)
    assert response.status_code == 400
    assert limit_changes(harness) == []
    app = harness.registry.require("dash")
    assert (app.allow_cidrs, app.rate_limit_per_minute) == ((), None)
    page = response.text
    assert "<h1>dash <code>dash</code></h1>" in page
    assert 'id="rate_limit-error"' in page
    assert "1-600" in page
    assert 'value="10.0.0.0/8"' in field(page, "allow_cidrs")
    assert 'aria-invalid="true"' in field(page, "rate_limit")
    assert 'aria-invalid="true"' not in field(page, "allow_cidrs")


async def test_a_bad_cidr_saves_nothing_and_is_shown_at_its_field(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """A CIDR the registry would refuse is refused before the (valid) rate is saved."""
    await add_app(owner, "dash", ["read:status"])
    response = await post_limits(owner, "10.0.0.0/33 192.168.1.0/24", "30")
    assert response.status_code == 400
    assert limit_changes(harness) == []
    assert "invalid CIDR &#39;10.0.0.0/33&#39;" in response.text
    assert 'id="allow_cidrs-error"' in response.text
    assert 'value="30"' in field(response.text, "rate_limit")


async def test_valid_limits_are_saved_once_each(owner: httpx.AsyncClient, harness: Harness) -> None:
    """Both limits are saved as the registry stores them; the same values again change nothing."""
    await add_app(owner, "dash", ["read:status"])
    assert (await post_limits(owner, "192.168.1.5, 10.0.0.0/8", "30")).status_code == 303
    app = harness.registry.require("dash")
    assert app.allow_cidrs == ("10.0.0.0/8", "192.168.1.5/32")
    assert app.rate_limit_per_minute == 30
    assert (await post_limits(owner, "10.0.0.0/8 192.168.1.5/32", "30")).status_code == 303
    assert limit_changes(harness) == list(LIMIT_KINDS)
    assert (await post_limits(owner, "", "")).status_code == 303
    app = harness.registry.require("dash")
    assert (app.allow_cidrs, app.rate_limit_per_minute) == ((), None)


async def test_a_bad_redirect_uri_is_shown_on_the_apps_page_with_the_form_kept(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Not a bare error page: the app's page again, the typed URIs and client type kept."""
    await add_app(owner, "dash", ["read:status"])
    uris = "https://dash.example/cb\nhttp://example.com/cb"
    form = {"csrf": await page_csrf(owner, "/apps/dash"), "kind": "public", "redirect_uris": uris}
    response = await owner.post("/apps/dash/oauth", data=form)
    assert response.status_code == 400
    page = response.text
    assert "may use http only for a loopback address" in page
    assert 'id="redirect_uris-error"' in page
    assert f">{uris}</textarea>" in page
    assert "checked" in field(page, "kind-public")
    assert "checked" not in field(page, "kind-confidential")
    assert "oauth.client_registered" not in harness.audit.kinds()


async def test_the_owner_can_disable_and_enable_an_app(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """The page shows the status and offers the matching button; each change goes through the
    registry's set_enabled (as `ownerlink apps disable/enable`) and is audited."""
    await add_app(owner, "dash", ["read:status"])
    page = (await owner.get("/apps/dash")).text
    assert re.search(r'data-testid="app-status">\s*<span class="badge ok">enabled', page)
    assert 'action="/apps/dash/disable"' in page
    assert 'action="/apps/dash/enable"' not in page
    csrf = await page_csrf(owner, "/apps/dash")
    response = await owner.post("/apps/dash/disable", data={"csrf": csrf})
    assert (response.status_code, response.headers["location"]) == (303, "/apps/dash")
    assert not harness.registry.require("dash").enabled
    record = harness.audit.items[-1]
    assert (record["kind"], record["app"], record["actor"]) == ("app.disabled", "dash", "web")
    page = (await owner.get("/apps/dash")).text
    assert "Disabled dash (dash)" in page
    assert '<span class="badge warn">disabled</span>' in page
    assert 'action="/apps/dash/enable"' in page
    assert "Enable REST access" not in page
    await owner.post("/apps/dash/enable", data={"csrf": csrf})
    assert harness.registry.require("dash").enabled
    assert harness.audit.kinds()[-2:] == ["app.disabled", "app.enabled"]
    assert "Enable REST access" in (await owner.get("/apps/dash")).text


async def test_a_disabled_app_cannot_be_given_rest_access(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Not offered on the page, and refused if the form is sent anyway (from a stale page)."""
    await add_app(owner, "dash", ["read:status"])
    csrf = await page_csrf(owner, "/apps/dash")
    await owner.post("/apps/dash/disable", data={"csrf": csrf})
    form = {"csrf": csrf, "kind": "confidential", "redirect_uris": "https://dash.example/cb"}
    response = await owner.post("/apps/dash/oauth", data=form)
    assert response.status_code == 400
    assert "is disabled: enable it first" in response.text
    assert "oauth.client_registered" not in harness.audit.kinds()


async def test_disabling_needs_the_csrf_token(owner: httpx.AsyncClient, harness: Harness) -> None:
    """A cross-site form cannot disable an app."""
    await add_app(owner, "dash", ["read:status"])
    assert (await owner.post("/apps/dash/disable", data={})).status_code == 403
    assert harness.registry.require("dash").enabled


async def test_disabling_an_unknown_app_is_404(owner: httpx.AsyncClient) -> None:
    csrf = await page_csrf(owner)
    assert (await owner.post("/apps/nope/disable", data={"csrf": csrf})).status_code == 404


def broker_effect(page: str) -> str:
    match = re.search(r'data-testid="broker-effect">(.*?)</p>', page, re.S)
    assert match, "the page says nothing about the broker"
    return " ".join(match.group(1).split())


async def test_without_broker_enforcement_revoking_promises_no_disconnection(
    owner: httpx.AsyncClient,
) -> None:
    """With mqtt.enforcement none (the default, and the demo's) Ownerlink does not manage the
    broker: the revoke page once said the app 'loses its broker login at once, is disconnected',
    which nothing did. It now says what the CLI says: the login is the owner's to remove."""
    created = await add_app(owner, "dash", ["read:status"])
    shown = await owner.get(created.headers["location"])
    assert "create this login on the broker yourself" in broker_effect(shown.text)
    page = (await owner.get("/apps/dash/revoke")).text
    assert "disconnected" not in page
    assert "remove this app's login there yourself" in broker_effect(page)


@pytest.mark.parametrize(
    ("mode", "said"),
    [("dynsec", "removed at once and its connections are closed"), ("acl-file", "reload")],
)
async def test_the_revoke_page_says_what_the_broker_will_do(
    tmp_path: Path, mode: str, said: str
) -> None:
    mqtt = {"enforcement": mode, "admin_username": "admin-x", "admin_password": "secret-x"}
    harness = build_harness(tmp_path / "state", mqtt=mqtt)
    transport = httpx.ASGITransport(app=harness.app, client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as owner:
            assert (await login(owner)).status_code == 303
            created = await add_app(owner, "dash", ["read:status"])
            shown = (await owner.get(created.headers["location"])).text
            assert 'data-testid="broker-effect"' not in shown
            assert said in broker_effect((await owner.get("/apps/dash/revoke")).text)
    finally:
        harness.store.close()
