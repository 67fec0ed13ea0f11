"""The owner page in a real headless Chromium, against the app served by uvicorn on a free port."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bridge.config import WebConfig
from bridge.web.server import WebServer
from tests.web.support import OWNER_PASSWORD, Harness, build_harness

pytestmark = pytest.mark.browser

HA_NAME = "ha.example.net"
REBOUND_NAME = "rebind.attacker.example"
CHROMIUM = os.environ.get("OWNERLINK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Public-looking names that lead here: Home Assistant's own (for Ingress) and a website's
    # that has rebound its name to this machine.
    f"--host-resolver-rules=MAP {HA_NAME} 127.0.0.1, MAP {REBOUND_NAME} 127.0.0.1",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _no_browser(reason: str) -> None:
    # Under CI a missing browser is a failure, never a silent skip.
    if IN_CI:
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


class ServerThread:
    """WebServer on its own event loop in a thread, as the daemon would run it on its loop."""

    def __init__(self, app: ASGIApp) -> None:
        self.server = WebServer(app, WebConfig(port=0))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=10)
        return f"http://127.0.0.1:{self.server.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def base_url(harness: Harness) -> Iterator[str]:
    """The owner page served over a real socket."""
    with ServerThread(harness.app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's), driven by Playwright."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _no_browser(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def log_in(page: Any, base_url: str, password: str = OWNER_PASSWORD) -> None:
    page.goto(f"{base_url}/apps")
    page.get_by_label("Owner password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_owner_adds_rescopes_revokes_and_audits_an_app(
    page: Any, base_url: str, harness: Harness
) -> None:
    """Log in, add an app (password once), change scopes, revoke, find it all in the audit view."""
    from playwright.sync_api import expect

    log_in(page, base_url)
    expect(page.get_by_role("heading", name="Connected apps")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "ownerlink_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.get_by_label("App id").fill("garage")
    page.get_by_label("Display name").fill("Garage script")
    location = page.locator("#scope-read\\:location")
    expect(location).not_to_be_checked()
    page.locator("#scope-command\\:lock").check()
    page.get_by_role("button", name="Add app").click()
    secret = page.get_by_test_id("secret")
    expect(secret).to_be_visible()
    password = secret.inner_text()
    assert len(password) >= 16

    page.reload()
    expect(page.get_by_test_id("secret-gone")).to_be_visible()
    assert password not in page.content()

    page.goto(f"{base_url}/apps/garage")
    page.locator("#scope-command\\:lock").uncheck()
    page.locator("#scope-read\\:health").check()
    page.get_by_role("button", name="Save scopes").click()
    expect(page.get_by_role("status")).to_contain_text("granted read:health")

    page.get_by_role("link", name="Revoke Garage script…").click()
    page.get_by_role("button", name="Yes, revoke Garage script").click()
    expect(page.get_by_role("status")).to_contain_text("Revoked Garage script")

    page.goto(f"{base_url}/audit")
    page.get_by_label("App").select_option("garage")
    page.get_by_role("button", name="Filter").click()
    kinds = page.locator("table.audit tbody td:nth-child(3)").all_inner_texts()
    assert kinds == ["app.revoked", "app.scopes_granted", "app.scopes_withdrawn", "app.added"]
    expect(page.get_by_test_id("chain")).to_contain_text("Chain verified")


def test_wrong_password_is_refused_in_the_browser(page: Any, base_url: str) -> None:
    """A wrong password keeps the owner on the login page with an error."""
    from playwright.sync_api import expect

    log_in(page, base_url, "definitely wrong")
    expect(page.get_by_role("alert")).to_contain_text("Wrong password")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_form_without_csrf_token_is_refused_in_the_browser(
    browser: Any, base_url: str, harness: Harness
) -> None:
    """Removing the hidden CSRF field makes the server refuse the form with 403."""
    from playwright.sync_api import expect

    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    log_in(page, base_url)
    page.get_by_label("App id").fill("sneaky")
    page.evaluate("document.querySelector('form[action=\"/apps\"] input[name=csrf]').remove()")
    with page.expect_response(lambda r: r.url.endswith("/apps")) as answer:
        page.get_by_role("button", name="Add app").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    assert harness.registry.get("sneaky") is None
    context.close()


PHONE = {"width": 375, "height": 740}
LONG_ID = "home-automation-dashboard-for-the-garage-and-the-driveway-lights"


# The number of line boxes a cell's text is laid out in.
LINES_OF_TEXT = (
    "e => { const r = document.createRange(); r.selectNodeContents(e); "
    "return r.getClientRects().length; }"
)


def page_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def test_tables_and_long_uris_fit_a_phone_screen(
    browser: Any, base_url: str, harness: Harness
) -> None:
    """At 375px no page scrolls sideways: tables scroll in their own box, long URIs wrap; at
    desktop width an audit time stays on one line."""
    harness.registry.add(LONG_ID, scopes=["read:status", "command:lock"])
    uri = "https://dashboard.example.org/oauth/callback/" + "x" * 80
    harness.app.state.ctx.oauth.register_client(LONG_ID, kind="public", uris=[uri])
    harness.audit.append("command.decision", app=LONG_ID, vehicle="family-car", decision="allowed")
    # bypass_csp: the page allows no scripts, and measuring it needs one.
    context = browser.new_context(viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    log_in(page, base_url)
    for path in ("/apps", "/audit", f"/apps/{LONG_ID}"):
        page.goto(f"{base_url}{path}")
        assert page_width(page) <= PHONE["width"], path
    page.goto(f"{base_url}/audit")
    scroller = page.locator(".table-scroll")
    assert scroller.evaluate("e => e.scrollWidth > e.clientWidth")
    page.set_viewport_size({"width": 1280, "height": 800})
    lines = page.locator("table.audit tbody td.time").first.evaluate(LINES_OF_TEXT)
    assert lines == 1
    context.close()


def test_a_refused_limit_is_shown_on_the_apps_page_then_the_app_is_disabled(
    page: Any, base_url: str, harness: Harness
) -> None:
    """The error appears next to the field on the app's page, the typed values kept, and nothing
    saved; then Disable pauses the app and hides "Enable REST access"."""
    from playwright.sync_api import expect

    harness.registry.add("qa-dash", scopes=["read:status"])
    log_in(page, base_url)
    page.goto(f"{base_url}/apps/qa-dash")
    page.get_by_label("IP allowlist for REST calls").fill("10.0.0.0/8")
    page.get_by_label("Commands per minute").fill("0")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_role("alert")).to_contain_text("Not saved: invalid rate limit 0")
    expect(page.locator("#rate_limit-error")).to_contain_text("use 1-600 per minute")
    expect(page.get_by_label("IP allowlist for REST calls")).to_have_value("10.0.0.0/8")
    expect(page.get_by_label("Commands per minute")).to_have_value("0")
    assert harness.registry.require("qa-dash").allow_cidrs == ()

    expect(page.get_by_test_id("app-status")).to_contain_text("enabled")
    page.get_by_role("button", name="Disable qa-dash").click()
    expect(page.get_by_role("status")).to_contain_text("Disabled qa-dash")
    expect(page.get_by_test_id("app-status")).to_contain_text("disabled")
    expect(page.get_by_role("button", name="Enable REST access")).to_have_count(0)
    page.get_by_role("button", name="Enable qa-dash").click()
    expect(page.get_by_test_id("app-status")).not_to_contain_text("disabled")
    assert harness.audit.kinds()[-2:] == ["app.disabled", "app.enabled"]


INGRESS_PREFIX = "/api/hassio_ingress/b2s-Token_1"
HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


def fake_home_assistant(upstream: str) -> Starlette:
    """Home Assistant as far as the page can tell: its own page framing the add-on, and the
    Supervisor's Ingress proxy, which strips the prefix, names it in X-Ingress-Path, forwards
    the browser's headers (its Host and Cookie too) and hands back the answer untouched."""

    async def frontend(_request: Request) -> Response:
        frame = f'<iframe src="{INGRESS_PREFIX}/" title="Ownerlink" width="900" height="700">'
        return HTMLResponse(f"<!doctype html><title>Home Assistant</title>{frame}</iframe>")

    async def ingress(request: Request) -> Response:
        path = request.path_params["path"]
        query = f"?{request.url.query}" if request.url.query else ""
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in HOP_BY_HOP]
        headers.append((b"x-ingress-path", INGRESS_PREFIX.encode()))
        async with httpx.AsyncClient() as client:
            answer = await client.request(
                request.method,
                f"{upstream}/{path}{query}",
                headers=headers,
                content=await request.body(),
            )
        response = Response(answer.content, status_code=answer.status_code)
        kept = [(k, v) for k, v in answer.headers.raw if k.lower() not in HOP_BY_HOP]
        response.raw_headers = [*kept, (b"content-length", str(len(answer.content)).encode())]
        return response

    methods = ["GET", "POST"]
    return Starlette(
        routes=[
            Route("/", frontend),
            Route(f"{INGRESS_PREFIX}/{{path:path}}", ingress, methods=methods),
        ]
    )


def test_the_page_works_inside_home_assistant_through_ingress(page: Any, tmp_path: Path) -> None:
    """Opened from Home Assistant's sidebar on a fresh add-on: the page shows in HA's frame (its
    framing rules let HA's origin in), the owner chooses the password there, logs out and in
    again (the cookie kept to the prefix), adds an app and follows its links and redirects
    without ever leaving the prefix, under HA's public name."""
    from playwright.sync_api import expect

    harness = build_harness(tmp_path / "state", ingress_from=["127.0.0.1/32"])
    with harness.store.transaction() as conn:
        conn.execute("DELETE FROM web_owner")  # a fresh add-on: no password chosen yet
    with ServerThread(harness.app) as upstream, ServerThread(fake_home_assistant(upstream)) as ha:
        home = ha.replace("127.0.0.1", HA_NAME)
        page.goto(f"{home}/")
        frame = page.frame_locator("iframe")
        expect(frame.get_by_label("Setup code (from the add-on's log)")).to_be_visible()
        code = harness.app.state.ctx.setup.value  # what the add-on's log shows the administrator
        frame.get_by_label("Setup code (from the add-on's log)").fill(code)
        frame.get_by_label("Owner password (at least 10 characters)").fill(OWNER_PASSWORD)
        frame.get_by_label("The same password again").fill(OWNER_PASSWORD)
        frame.get_by_role("button", name="Set password and log in").click()
        expect(frame.get_by_role("heading", name="Connected apps")).to_be_visible()
        frame.get_by_role("button", name="Log out").click()
        frame.get_by_label("Owner password").fill(OWNER_PASSWORD)
        frame.get_by_role("button", name="Log in").click()
        expect(frame.get_by_role("heading", name="Connected apps")).to_be_visible()
        frame.get_by_label("App id").fill("garage")
        frame.locator("#scope-command\\:lock").check()
        frame.get_by_role("button", name="Add app").click()
        expect(frame.get_by_test_id("secret")).to_be_visible()
        frame.get_by_role("link", name="Done").click()
        expect(frame.get_by_test_id("app-status")).to_contain_text("enabled")
        inner = page.frames[1]
        assert inner.url == f"{home}{INGRESS_PREFIX}/apps/garage"
        cookie = next(c for c in page.context.cookies() if c["name"] == "ownerlink_ingress")
        assert cookie["path"] == INGRESS_PREFIX
        assert cookie["domain"] == HA_NAME
    assert "command:lock" in harness.registry.require("garage").scopes
    harness.store.close()


def test_a_website_rebinding_its_name_to_this_machine_gets_nothing(
    page: Any, base_url: str
) -> None:
    """The browser asks for the attacker's name from 127.0.0.1 (an allowed address): refused,
    the login form never shown."""
    rebound = base_url.replace("127.0.0.1", REBOUND_NAME)
    response = page.goto(f"{rebound}/login")
    assert response.status == 400
    assert "web.allowed_hosts" in page.content()
    assert "password" not in page.content().lower()


def test_an_unbroken_app_id_fits_a_phone_screen_on_every_app_page(
    browser: Any, base_url: str, harness: Harness
) -> None:
    """A 64-character id with no hyphen (allowed) made the app's page and its revoke page
    scroll sideways at phone width: headings and the 'Disable …' / 'Yes, revoke …' buttons
    had no place to wrap."""
    unbroken = "a" * 64
    harness.registry.add(unbroken, scopes=["read:status"])
    context = browser.new_context(viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    log_in(page, base_url)
    for path in ("/apps", f"/apps/{unbroken}", f"/apps/{unbroken}/revoke"):
        page.goto(f"{base_url}{path}")
        assert page_width(page) <= PHONE["width"], path
    # ... while tables keep words whole and scroll in their own box, not one letter a line.
    page.goto(f"{base_url}/apps")
    assert page.locator("table.list tbody th code").first.evaluate(LINES_OF_TEXT) == 1
    page.goto(f"{base_url}/audit")
    assert page.locator("table.audit tbody td code").first.evaluate(LINES_OF_TEXT) == 1
    context.close()


def test_each_vehicles_location_button_and_the_budget_meter_have_their_own_names(
    page: Any, base_url: str, harness: Harness
) -> None:
    """With two cars a screen reader's list of buttons read 'Show location' twice, with
    nothing to tell the cars apart, and the budget meter had no name at all."""
    from dataclasses import replace

    first = harness.vehicles.views[0]
    harness.vehicles.views.append(replace(first, slug="work-van", name="Work van"))
    log_in(page, base_url)
    page.goto(f"{base_url}/vehicles")
    for name in (first.name, "Work van"):
        button = page.get_by_role("button", name=f"Show location of {name}", exact=True)
        assert button.count() == 1, name
    assert page.get_by_role("meter", name="Share of today's API budget used").count() == 1


# axe-core's rules for WCAG 2.2 A and AA, and its best practices (landmarks, one h1, headings in
# order, regions), as the owner page promises in docs/security.md.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core's script, as the axe-playwright-python package (test extra) ships it."""
    from importlib.resources import files

    try:
        return (files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        _no_browser("axe-playwright-python (axe-core for the tests) is not installed")
        raise


def axe_violations(page: Any, source: str) -> list[str]:
    """axe-core's violations on the page as shown, one line each (rule and elements). Run by
    the driver, not as a page script, so the page's own CSP stays in force."""
    page.evaluate(source)
    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
    results = page.evaluate("options => axe.run(document, options)", options)
    return [
        f"{page.url} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
    ]


def with_rest_client(harness: Harness, app_id: str, redirect: str | None = None) -> None:
    """An app with REST access (a public client), made as the owner page would."""
    from tests.web.oauth_helpers import REDIRECT

    harness.registry.add(app_id, scopes=["read:status", "command:lock"])
    uris = [redirect or REDIRECT]
    harness.app.state.ctx.oauth.register_client(app_id, kind="public", uris=uris)


def consent_url(base_url: str, app_id: str, redirect: str | None = None) -> str:
    from tests.web.oauth_helpers import REDIRECT, authorize_query, pkce

    _verifier, challenge = pkce()
    query = authorize_query(app_id, challenge, "read:status", redirect_uri=redirect or REDIRECT)
    return f"{base_url}/oauth/authorize?{query}"


def an_apps_own_page() -> Starlette:
    """Where the browser is sent back with the code."""

    async def callback(_request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>The app</title>")

    return Starlette(routes=[Route("/callback", callback)])


def owner_pages(page: Any, base_url: str) -> Iterator[str]:
    """Walks the page through every owner page and state, yielding the heading each should show:
    login (and its error), apps, a new app's password, an app's page (and a refused form), REST
    access and its removal, revoke, vehicles, audit, security, step-up's QR, consent, errors."""
    page.goto(f"{base_url}/login")
    yield "Log in"
    log_in(page, base_url, "definitely wrong")
    yield "Log in"
    log_in(page, base_url)
    page.get_by_label("App id").fill("garage")
    page.get_by_role("button", name="Add app").click()
    yield "App garage added"
    pages = {
        "/apps": "Connected apps",
        "/apps/garage": "garage garage",
        "/vehicles": "Vehicles",
        "/audit": "Audit log",
        "/security": "Security",
    }
    for path, heading in pages.items():
        page.goto(f"{base_url}{path}")
        yield heading
    page.goto(f"{base_url}/apps/garage")
    page.get_by_label("Commands per minute").fill("0")
    page.get_by_role("button", name="Save limits").click()
    yield "garage garage"
    page.get_by_label("Redirect URIs").fill("https://garage.example.org/callback")
    page.get_by_role("button", name="Enable REST access").click()
    yield "REST access for garage"
    page.goto(f"{base_url}/apps/garage/oauth/remove")
    yield "Remove REST access for garage?"
    page.goto(f"{base_url}/apps/garage/revoke")
    yield "Revoke garage?"
    page.goto(f"{base_url}/security")
    page.get_by_label("Your password (to enrol)").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Enrol an authenticator").click()
    yield "New authenticator secret"
    page.goto(consent_url(base_url, "dash"))
    yield "Authorise dash?"
    page.goto(f"{base_url}/oauth/authorize?client_id=nobody")
    yield "This authorisation request is invalid"
    page.goto(f"{base_url}/apps/nobody")
    yield "Not possible"
    page.goto(f"{base_url}/apps")
    page.evaluate("document.querySelector('form[action=\"/apps\"] input[name=csrf]').remove()")
    page.get_by_label("App id").fill("sneaky")
    page.get_by_role("button", name="Add app").click()
    yield "Form refused"


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1280, "height": 800}], ids=str)
def test_every_owner_page_passes_axe_and_fits_the_screen(
    browser: Any, base_url: str, harness: Harness, axe_source: str, viewport: dict[str, int]
) -> None:
    """axe-core finds no WCAG 2.2 AA or best-practice violation on any page or state, and at
    375px none scrolls sideways."""
    with_rest_client(harness, "dash")
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    found: list[str] = []
    headings = []
    for heading in owner_pages(page, base_url):
        headings.append((page.locator("h1").inner_text(), heading))
        found += axe_violations(page, axe_source)
        assert page_width(page) <= viewport["width"], page.url
    assert [shown for shown, _ in headings] == [wanted for _, wanted in headings]
    assert len(headings) == 17
    assert found == []
    context.close()


def relative_luminance(css_rgb: str) -> float:
    """WCAG's relative luminance of a computed `rgb(r, g, b)` colour."""
    channels = [int(c) / 255 for c in css_rgb[css_rgb.index("(") + 1 : -1].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


FOCUSED = (
    "() => { const e = document.activeElement, s = getComputedStyle(e); return {"
    "outline: s.outlineStyle, colour: s.outlineColor, width: parseFloat(s.outlineWidth),"
    "text: (e.innerText || e.value || e.id || '').trim(), tag: e.tagName}; }"
)


def tab_to(page: Any, text: str, limit: int = 80) -> dict[str, Any]:
    """Presses Tab until the focused element's text (or id) is `text`; checks that its focus
    ring shows and stands out from the white page by WCAG's 3:1 for non-text contrast."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused: dict[str, Any] = page.evaluate(FOCUSED)
        if focused["text"] == text:
            assert focused["outline"] != "none" and focused["width"] >= 2, focused
            assert contrast(focused["colour"], "rgb(255, 255, 255)") >= 3, focused
            return focused
    raise AssertionError(f"{text!r} cannot be reached with Tab: {focused}")


def press_enter(page: Any) -> None:
    """Enter on a link or a form's control, waiting for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_an_owner_with_only_a_keyboard_logs_in_approves_revokes_enrols_and_logs_out(
    page: Any, base_url: str, harness: Harness
) -> None:
    """Tab and Enter alone do every action, each control showing a focus ring that stands out;
    revoking and removing REST access each ask first. The yellow ring alone was 1.6:1 on the
    white page."""

    with ServerThread(an_apps_own_page()) as app_url:
        redirect = f"{app_url}/callback"
        with_rest_client(harness, "dash", redirect)
        keyboard_only(page, base_url, harness, redirect)


def keyboard_only(page: Any, base_url: str, harness: Harness, redirect: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login")
    # The password field takes the focus itself (autofocus, applied as the page first renders).
    expect(page.get_by_label("Owner password")).to_be_focused()
    page.keyboard.type(OWNER_PASSWORD)
    press_enter(page)
    expect(page.get_by_role("heading", name="Connected apps")).to_be_visible()
    tab_to(page, "Skip to content")

    page.goto(consent_url(base_url, "dash", redirect))
    tab_to(page, "Allow")
    press_enter(page)
    page.wait_for_url(lambda url: url.startswith(f"{redirect}?code="))

    page.goto(f"{base_url}/apps/dash")
    tab_to(page, "Remove REST access…")
    press_enter(page)
    expect(
        page.get_by_role("heading", name="Remove REST access for dash?", exact=True)
    ).to_be_visible()
    assert harness.app.state.ctx.oauth.client_of("dash") is not None  # only asked so far
    tab_to(page, "Yes, remove REST access for dash")
    press_enter(page)
    expect(page.get_by_role("status")).to_contain_text("REST access removed for dash")
    tab_to(page, "Revoke dash…")
    press_enter(page)
    tab_to(page, "Yes, revoke dash")
    press_enter(page)
    expect(page.get_by_role("status")).to_contain_text("Revoked dash")

    page.goto(f"{base_url}/security")
    tab_to(page, "stepup-password")
    page.keyboard.type(OWNER_PASSWORD)
    press_enter(page)
    secret = page.locator("code.secret").inner_text()
    tab_to(page, "stepup-code")
    page.keyboard.type(_totp(secret, harness))
    press_enter(page)
    expect(page.get_by_role("status")).to_be_visible()
    assert harness.stepup.enrolled()

    tab_to(page, "Log out")
    press_enter(page)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def _totp(secret: str, harness: Harness) -> str:
    import pyotp

    return pyotp.TOTP(secret).at(harness.clock())


def test_header_links_ticks_and_audit_rows_suit_a_phone(
    browser: Any, base_url: str, harness: Harness
) -> None:
    """At 375px the header's links and Log out were 19-24px tall and the scope ticks 13px, hard
    to hit with a thumb; an audit record stood 160px tall, its details squeezed to a few letters
    a line."""
    harness.audit.append("command.decision", app="garage", vehicle="family-car", decision="allowed")
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    log_in(page, base_url)
    targets = page.locator("header a:not(.skip), header button")
    assert targets.count() == 6
    for box in (targets.nth(i).bounding_box() for i in range(targets.count())):
        assert box["height"] >= 44, box
    ticks = page.locator("input[type=checkbox]")
    for box in (ticks.nth(i).bounding_box() for i in range(ticks.count())):
        assert min(box["width"], box["height"]) >= 20, box
    page.goto(f"{base_url}/audit")
    rows = page.locator("table.audit tbody tr")
    heights = [rows.nth(i).bounding_box()["height"] for i in range(rows.count())]
    assert heights and max(heights) < 100, heights
    context.close()
