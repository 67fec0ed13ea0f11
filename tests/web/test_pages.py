"""The owner pages: Connected Apps, Audit, Vehicles and Security, over HTTP on fakes."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import httpx
import pyotp
import pytest

from bridge.model import ChargingState, Health, OpenState, Scope, Status
from tests.web.conftest import ClientFactory
from tests.web.support import BASE_URL, OWNER_PASSWORD, Harness, csrf_of, login, page_csrf

SECRET = re.compile(r'data-testid="secret">([^<]+)<')
NEW_SECRET = re.compile(r'<code class="secret">([A-Z2-7]+)</code>')


async def add_app(owner: httpx.AsyncClient, app_id: str, scopes: list[str]) -> httpx.Response:
    form = {"csrf": await page_csrf(owner), "app_id": app_id, "name": app_id, "scope": scopes}
    return await owner.post("/apps", data=form)


async def test_added_app_password_is_shown_once(owner: httpx.AsyncClient, harness: Harness) -> None:
    """The broker password appears on the page after adding, and not when the page is reloaded."""
    response = await add_app(owner, "node-red", ["read:status", "command:lock"])
    assert response.headers["location"] == "/apps/node-red/created"
    first = await owner.get("/apps/node-red/created")
    assert SECRET.search(first.text)
    again = await owner.get("/apps/node-red/created")
    assert not SECRET.search(again.text)
    assert "already been shown" in again.text
    assert harness.registry.require("node-red").scopes == {Scope.READ_STATUS, Scope.COMMAND_LOCK}


async def test_add_form_offers_location_unticked_and_marks_sensitive_scopes(
    owner: httpx.AsyncClient,
) -> None:
    """Location is labelled opt-in and not ticked; unlock and remote start are marked sensitive."""
    page = (await owner.get("/apps")).text
    location = re.search(r'<input type="checkbox" id="scope-read:location"[^>]*>', page)
    assert location and "checked" not in location.group(0)
    assert "opt-in" in page
    for scope in ("command:unlock", "command:remote_start", "read:location"):
        block = page[page.index(f'id="scope-{scope}"') :][:600]
        assert "sensitive" in block


async def test_invalid_app_id_is_refused_with_the_registry_message(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """The registry's validation (same as the CLI's) is shown, and nothing is added."""
    response = await add_app(owner, "bad/id", ["read:status"])
    assert response.status_code == 400
    assert "invalid app id" in response.text
    assert harness.registry.list() == []


async def test_an_app_with_no_scope_ticked_is_refused_with_the_form_kept(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Forgetting to tick a scope is a slip: the form says so, keeps the typing, adds nothing."""
    response = await add_app(owner, "node-red", [])
    assert response.status_code == 400
    assert "tick at least one scope" in response.text
    assert 'value="node-red"' in response.text
    assert harness.registry.list() == []


async def test_changing_scopes_grants_and_withdraws_through_the_registry(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Unticking and ticking boxes calls withdraw and grant; each is audited by the registry."""
    await add_app(owner, "ha", ["read:status", "command:lock"])
    form = {"csrf": await page_csrf(owner, "/apps/ha"), "scope": ["read:status", "read:health"]}
    response = await owner.post("/apps/ha/scopes", data=form)
    assert response.status_code == 303
    assert harness.registry.require("ha").scopes == {Scope.READ_STATUS, Scope.READ_HEALTH}
    changes = [r for r in harness.audit.items if r["kind"].startswith("app.scopes_")]
    assert (changes[0]["kind"], changes[0]["scopes"]) == ("app.scopes_withdrawn", ["command:lock"])
    assert (changes[1]["kind"], changes[1]["scopes"]) == ("app.scopes_granted", ["read:health"])
    assert changes[0]["actor"] == "web"
    assert "granted read:health" in (await owner.get("/apps/ha")).text


async def test_revoking_asks_for_confirmation_first(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """The revoke link opens a confirmation page; only its form revokes the app."""
    await add_app(owner, "script", ["read:status"])
    confirm = await owner.get("/apps/script/revoke")
    assert "Yes, revoke" in confirm.text
    assert harness.registry.get("script") is not None
    response = await owner.post("/apps/script/revoke", data={"csrf": csrf_of(confirm.text)})
    assert response.status_code == 303
    assert harness.registry.get("script") is None
    assert "app.revoked" in harness.audit.kinds()
    assert "Revoked script" in (await owner.get("/apps")).text


TITLE = re.compile(r"<title>([^<]*)</title>")


async def test_a_forms_outcome_is_in_the_title_a_screen_reader_reads_first(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """The page after a form announces how it went in its title, "Error: " first when refused:
    the message on the page, shown as it loads, is not announced as a live region."""
    refused = await login(client, "definitely wrong")
    assert TITLE.search(refused.text).group(1) == "Error: Log in · Ownerlink"  # type: ignore[union-attr]
    assert 'aria-invalid="true" aria-describedby="page-error"' in refused.text
    assert 'id="page-error" role="alert"' in refused.text
    await login(client)
    await add_app(client, "script", ["read:status"])
    confirm = await client.get("/apps/script/revoke")
    await client.post("/apps/script/revoke", data={"csrf": csrf_of(confirm.text)})
    titles = [TITLE.search((await client.get("/apps")).text) for _ in range(2)]
    assert [t.group(1) for t in titles if t] == [
        "Revoked script (script). · Connected apps · Ownerlink",
        "Connected apps · Ownerlink",  # the message is shown once
    ]


async def test_unknown_app_page_is_404(owner: httpx.AsyncClient) -> None:
    """An app that does not exist has no page."""
    assert (await owner.get("/apps/nope")).status_code == 404


async def test_apps_page_lists_scopes_and_recent_activity(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Each app row shows its scopes and its latest audit records."""
    await add_app(owner, "ha", ["read:status"])
    harness.audit.append("command.decision", app="ha", vehicle="family-car", decision="refused")
    page = (await owner.get("/apps")).text
    assert "read:status" in page
    assert "command.decision" in page


async def test_apps_page_reads_the_log_back_only_as_far_as_its_activity_needs(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Each app's three newest records come from the end of the log; the page stops reading
    there instead of loading a log that grows for as long as the bridge runs."""
    await add_app(owner, "ha", ["read:status"])
    await add_app(owner, "nr", ["read:status"])
    for n in range(300):
        harness.audit.append("command.decision", app="ha" if n % 2 else "nr", decision="allowed")
    for app in ("ha", "nr"):
        harness.audit.append("command.decision", app=app, decision=f"newest-{app}")
    harness.audit.read_back = 0
    page = (await owner.get("/apps")).text
    assert "newest-ha" in page and "newest-nr" in page
    assert 0 < harness.audit.read_back <= 6


async def test_audit_page_filters_newest_first_and_shows_chain(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Filters by app and kind prefix keep matching rows, newest first, with chain status."""
    await add_app(owner, "a1", ["read:status"])
    await add_app(owner, "a2", ["read:status"])
    harness.audit.append("command.decision", app="a1", vehicle="family-car", decision="allowed")
    page = (await owner.get("/audit?app=a1")).text
    assert "Chain verified" in page
    rows = re.findall(r"<td><code>([a-z_.]+)</code></td>", page)
    assert rows == ["command.decision", "app.added"]
    page = (await owner.get("/audit?kind=app&decision=")).text
    assert re.findall(r"<td><code>([a-z_.]+)</code></td>", page) == ["app.added", "app.added"]
    page = (await owner.get("/audit?decision=allowed")).text
    assert re.findall(r"<td><code>([a-z_.]+)</code></td>", page) == ["command.decision"]


async def test_audit_page_shows_a_failed_chain_loudly(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """A chain that fails verification is reported on the page, as an alert (not a status)."""
    assert 'role="status" data-testid="chain"' in (await owner.get("/audit")).text
    harness.audit.broken = True
    page = (await owner.get("/audit")).text
    assert "Chain verification FAILED" in page
    assert 'role="alert" data-testid="chain"' in page


async def test_audit_kind_filter_stays_selected_even_as_a_prefix(
    owner: httpx.AsyncClient,
) -> None:
    """`kind=app` is no kind in the log, but the drop-down must show it rather than "any"."""
    await add_app(owner, "a1", ["read:status"])
    page = (await owner.get("/audit?kind=app")).text
    assert '<option value="app" selected>app</option>' in page
    page = (await owner.get("/audit?kind=app.added")).text
    assert '<option value="app.added" selected>' in page
    assert '<option value="app"' not in page


async def test_audit_time_column_does_not_wrap(owner: httpx.AsyncClient) -> None:
    """The time cells carry the class the style sheet keeps on one line."""
    await add_app(owner, "a1", ["read:status"])
    page = (await owner.get("/audit")).text
    assert '<td class="time">2025-06-01 12:00 UTC</td>' in page


async def test_audit_export_is_complete_json_lines_oldest_first(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """The export holds the matching records, whole and in chain order."""
    await add_app(owner, "a1", ["read:status"])
    response = await owner.get("/audit/export?app=a1")
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [r["kind"] for r in lines] == ["app.added"]
    full = [json.loads(x) for x in (await owner.get("/audit/export")).text.splitlines()]
    assert [r["seq"] for r in full] == sorted(r["seq"] for r in full)


async def test_location_is_hidden_until_revealed_and_each_reveal_is_audited(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """The vehicles page shows status but no coordinates until the owner asks."""
    page = (await owner.get("/vehicles")).text
    assert "Family car" in page
    assert "51.501" not in page
    assert "Show location" in page
    revealed = (await owner.get("/vehicles?reveal=family-car")).text
    assert "51.501" in revealed
    assert harness.audit.items[-1]["kind"] == "owner.location_viewed"


async def test_a_head_request_reveals_no_location_and_records_no_view(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Pages answer GET only: HEAD, which would record a location view nobody saw, is sent to
    the page holding the link instead (405 from a page path redirects there)."""
    before = len(harness.audit.items)
    answer = await owner.head("/vehicles?reveal=family-car")
    assert answer.status_code == 303
    assert not [r for r in harness.audit.items[before:] if r["kind"] == "owner.location_viewed"]


async def test_vehicles_page_charts_budget_as_inline_svg(owner: httpx.AsyncClient) -> None:
    """Budget use today is drawn as an inline SVG bar chart, with the next poll shown."""
    page = (await owner.get("/vehicles")).text
    assert '<svg class="chart"' in page
    assert "15 of 250 provider calls used today" in page
    assert "Next poll" in page


async def test_stepup_enrolment_needs_the_password_and_a_code_from_the_new_secret(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Enrolling asks for the password again, shows the QR code (inline SVG), and puts the new
    secret in force only once a code from it is typed."""
    csrf = await page_csrf(owner, "/security")
    refused = await owner.post("/security/stepup", data={"csrf": csrf, "password": "nope"})
    assert refused.status_code == 403
    assert not harness.stepup.enrolled()
    response = await owner.post("/security/stepup", data={"csrf": csrf, "password": OWNER_PASSWORD})
    assert response.headers["location"] == "/security/stepup/new"
    first = (await owner.get("/security/stepup/new")).text
    assert '<svg role="img"' in first
    assert not harness.stepup.enrolled()
    secret = NEW_SECRET.search(first)
    assert secret
    code = pyotp.TOTP(secret.group(1)).at(harness.clock())
    confirmed = await owner.post("/security/stepup/new", data={"csrf": csrf, "code": code})
    assert confirmed.headers["location"] == "/security"
    assert harness.stepup.secret == secret.group(1)
    assert "stepup.enrolled" in harness.audit.kinds()
    gone = (await owner.get("/security/stepup/new")).text
    assert "<svg" not in gone and secret.group(1) not in gone


async def test_replacing_stepup_keeps_the_old_secret_until_the_new_one_is_confirmed(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Replacing the secret once took effect the moment the password was typed: a reload before
    the scan showed 'already shown', the old authenticator was dead and the new secret lost, so
    unlock (and a login asking for the code) were out of reach. Now the old one stays in force
    through a reload and a wrong code, and only a right code switches."""
    harness.stepup.enroll()
    old = harness.stepup.secret
    csrf = await page_csrf(owner, "/security")
    await owner.post("/security/stepup", data={"csrf": csrf, "password": OWNER_PASSWORD})
    first = (await owner.get("/security/stepup/new")).text
    again = (await owner.get("/security/stepup/new")).text  # a reload before the scan
    match = NEW_SECRET.search(again)
    assert match and match.group(1) in first
    new = match.group(1)
    assert harness.stepup.secret == old
    wrong = await owner.post("/security/stepup/new", data={"csrf": csrf, "code": "000000"})
    assert wrong.status_code == 400 and 'aria-invalid="true"' in wrong.text
    assert harness.stepup.secret == old
    assert "owner.stepup_enrol_refused" in harness.audit.kinds()
    code = pyotp.TOTP(new).at(harness.clock())
    assert (
        await owner.post("/security/stepup/new", data={"csrf": csrf, "code": code})
    ).status_code == 303
    assert harness.stepup.secret == new
    assert "codes from the old one no longer work" in (await owner.get("/security")).text


async def test_password_change_needs_the_current_one_and_logs_out_others(
    client_for: ClientFactory, harness: Harness
) -> None:
    """Changing the password checks the old one, keeps this browser in, logs others out."""
    this, other = client_for(), client_for()
    await login(this)
    await login(other)
    csrf = await page_csrf(this, "/security")
    new = "a brand new owner password"
    wrong = {"csrf": csrf, "current_password": "bad", "new_password": new, "confirm_password": new}
    assert (await this.post("/security/password", data=wrong)).status_code == 403
    good = {**wrong, "current_password": OWNER_PASSWORD}
    changed = await this.post("/security/password", data=good)
    # Redirected, so that a reload of the page after it does not send the passwords again.
    assert (changed.status_code, changed.headers["location"]) == (303, "/security")
    assert "Password changed" in (await this.get("/security")).text
    assert "Password changed" not in (await this.get("/security")).text
    assert (await this.get("/apps")).status_code == 200
    assert (await other.get("/apps")).status_code == 303
    assert harness.audit.items[-1]["kind"] == "owner.password_changed"
    assert (await login(client_for(), new)).status_code == 303


@pytest.mark.parametrize(
    ("path", "field", "kind"),
    [
        ("/security/password", "current_password", "owner.password_change_refused"),
        ("/security/stepup", "password", "owner.stepup_enrol_refused"),
    ],
)
async def test_password_rechecks_share_the_login_allowance(
    owner: httpx.AsyncClient, harness: Harness, path: str, field: str, kind: str
) -> None:
    """A stolen session cookie does not buy unlimited guesses at the current password: the
    Security page's re-checks count against the address like failed logins, and are audited."""
    csrf = await page_csrf(owner, "/security")
    new = "a brand new owner password"
    form = {"csrf": csrf, "new_password": new, "confirm_password": new}
    for _ in range(harness.settings.web.login_max_failures):
        assert (await owner.post(path, data={**form, field: "guess"})).status_code == 403
    blocked = await owner.post(path, data={**form, field: OWNER_PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    refusals = [r for r in harness.audit.items if r["kind"] == kind]
    assert [r["reason"] for r in refusals][-2:] == ["wrong_password", "rate_limited"]
    assert not harness.stepup.enrolled()
    harness.clock.advance(harness.settings.web.login_failure_window_s + 1)
    assert (await owner.post(path, data={**form, field: OWNER_PASSWORD})).status_code in {200, 303}


async def test_webhook_url_is_shown_masked(owner: httpx.AsyncClient) -> None:
    """Without a webhook the page says so; config-file-based settings are shown read-only."""
    page = (await owner.get("/security")).text
    assert "No webhook is configured" in page
    assert "alerts.webhook_url" in page


async def test_vehicle_state_is_shown_in_words_not_python_values(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Doors read `front driver: closed`, booleans yes/no, states `not plugged` (it read
    `not_plugged`); no dict or True/False reprs."""
    view = harness.vehicles.views[0]
    assert view.state is not None
    status = Status(
        doors={"front_driver": OpenState.CLOSED, "rear_left": OpenState.OPEN},
        plugged_in=True,
        charging=ChargingState.NOT_PLUGGED,
    )
    health = Health(tyre_pressure_warning=False, alerts=("low washer fluid", "service due"))
    state = replace(view.state, status=status, health=health)
    harness.vehicles.views[0] = replace(view, state=state)
    page = (await owner.get("/vehicles")).text
    assert "<dd>front driver: closed, rear left: open</dd>" in page
    assert "<dt>plugged in</dt><dd>yes</dd>" in page
    assert "<dt>charging</dt><dd>not plugged</dd>" in page
    assert "<dt>tyre pressure warning</dt><dd>no</dd>" in page
    assert "<dd>low washer fluid, service due</dd>" in page
    for python in ("{&#39;", "True", "False", "[&#39;"):
        assert python not in page


async def test_hsts_is_sent_over_tls_only(harness: Harness) -> None:
    """Strict-Transport-Security means something only on an https response."""
    for scheme, expected in (("https", "max-age=31536000"), ("http", None)):
        transport = httpx.ASGITransport(app=harness.app)
        base = BASE_URL.replace("http", scheme, 1)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            response = await client.get("/login")
        assert response.status_code == 200
        assert response.headers.get("strict-transport-security") == expected


async def test_the_add_form_sent_twice_adds_one_app_and_still_shows_its_password(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """A double click sends the form twice and the browser shows only the second answer: it
    said "app id 'garage' is already taken", and the password the first one made was never
    shown. The second answer now leads to the same one-time page; another browser, or the
    same one once the password was shown, still gets "already taken"."""
    first = await add_app(owner, "garage", ["read:status"])
    second = await add_app(owner, "garage", ["read:status"])
    assert second.status_code == 303
    assert second.headers["location"] == first.headers["location"] == "/apps/garage/created"
    shown = await owner.get("/apps/garage/created")
    assert SECRET.search(shown.text)
    assert harness.audit.kinds().count("app.added") == 1
    third = await add_app(owner, "garage", ["read:status"])
    assert third.status_code == 400 and "already taken" in third.text


@pytest.mark.parametrize("path", ["/apps/nope/created", "/apps/nope/oauth/created"])
async def test_a_one_time_page_for_an_app_that_does_not_exist_is_a_404(
    owner: httpx.AsyncClient, path: str
) -> None:
    """Any id typed into the address bar got '200 App nope added' (or 'REST access for nope')."""
    response = await owner.get(path)
    assert response.status_code == 404
    assert "added" not in response.text and "REST access for" not in response.text


@pytest.mark.parametrize(
    ("path", "parent"),
    [("/security/stepup", "/security"), ("/apps/dash/limits", "/apps/dash"), ("/logout", "/")],
)
async def test_a_form_address_opened_with_get_leads_to_its_page(
    owner: httpx.AsyncClient, path: str, parent: str
) -> None:
    """A refused form is shown at its POST address; Enter in the address bar there answered
    '405 Not possible: Method Not Allowed'."""
    response = await owner.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == parent


async def test_the_api_still_answers_405_in_json(owner: httpx.AsyncClient) -> None:
    response = await owner.get("/oauth/token")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/oauth/token", "POST"),
        ("TRACE", "/api/v1/vehicles/family-car/status", "GET"),
        ("PUT", "/api/v1/me", "GET"),
        ("DELETE", "/.well-known/oauth-authorization-server", "GET"),
        ("PATCH", "/apps", "GET, POST"),
    ],
)
async def test_a_405_names_the_methods_the_path_takes(
    owner: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    """RFC 9110 §15.5.6: a 405 must carry `Allow`. The error handler dropped the header Starlette
    had put on the exception, and the OAuth metadata, a JSON document, answered with a page."""
    response = await owner.request(method, path)
    assert response.status_code == 405
    assert sorted(response.headers["allow"].split(", ")) == sorted(allowed.split(", "))
    if path != "/apps":
        assert response.json()["error"] == "method_not_allowed"
