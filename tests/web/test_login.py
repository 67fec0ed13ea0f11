"""Owner login: sessions, cookies, CSRF, throttling, TOTP, network allowlist, headers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bridge.web.loginlimit import GLOBAL_FACTOR
from bridge.web.middleware import MAX_BODY_BYTES
from bridge.web.sessions import MAX_ANONYMOUS
from tests.web.conftest import ClientFactory
from tests.web.support import (
    BASE_URL,
    OWNER_PASSWORD,
    Harness,
    build_harness,
    csrf_of,
    login,
    page_csrf,
)


async def test_login_sets_a_strict_httponly_expiring_cookie(client: httpx.AsyncClient) -> None:
    """A good password gives a cookie that scripts cannot read and other sites never send."""
    response = await login(client)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "max-age=3600" in cookie
    assert (await client.get("/apps")).status_code == 200


async def test_wrong_password_is_refused_and_audited(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """A wrong password answers 401, opens no page, and leaves an owner.login failure record."""
    response = await login(client, "not the password")
    assert response.status_code == 401
    assert (await client.get("/apps")).status_code == 303
    failures = [r for r in harness.audit.items if r["kind"] == "owner.login"]
    assert failures[-1]["outcome"] == "failure"
    assert failures[-1]["reason"] == "wrong_password"


async def test_successful_login_is_audited(owner: httpx.AsyncClient, harness: Harness) -> None:
    """A login writes an owner.login success record with the client address."""
    record = next(r for r in harness.audit.items if r["kind"] == "owner.login")
    assert record["outcome"] == "success"
    assert record["ip"] == "127.0.0.1"


async def test_five_failures_block_the_address_with_429(
    client_for: ClientFactory, harness: Harness
) -> None:
    """After five wrong passwords in 15 minutes even the right one gets 429 until it ends."""
    attacker = client_for("127.0.0.9")
    for _ in range(5):
        assert (await login(attacker, "wrong password")).status_code == 401
    blocked = await login(attacker)
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert harness.audit.items[-1]["outcome"] == "rate_limited"
    assert (await login(client_for("127.0.0.10"))).status_code == 303  # others are unaffected
    harness.clock.advance(15 * 60 + 1)
    assert (await login(attacker)).status_code == 303


async def test_an_ipv6_host_cannot_dodge_the_limit_by_changing_address(tmp_path: Path) -> None:
    """One IPv6 host usually holds a whole /64: its guesses count together, whichever address
    each came from; a neighbouring /64 keeps its own allowance."""
    harness = build_harness(tmp_path / "state", allow_cidrs=["127.0.0.0/8", "2001:db8::/32"])

    def from_ip(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=harness.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    for n in range(5):
        async with from_ip(f"2001:db8:0:1::{n + 1:x}") as guesser:
            assert (await login(guesser, "wrong password")).status_code == 401
    async with from_ip("2001:db8:0:1:ffff::9") as guesser:
        assert (await login(guesser)).status_code == 429
    async with from_ip("2001:db8:0:2::1") as neighbour:
        assert (await login(neighbour)).status_code == 303
    harness.store.close()


async def _spread_guesses(client_for: ClientFactory, addresses: int) -> list[int]:
    """Four wrong passwords from each of `addresses` addresses (one fewer than each may send)."""
    codes = []
    for n in range(addresses):
        guesser = client_for(f"127.0.1.{n + 1}")
        codes += [(await login(guesser, f"guess {n}-{k}")).status_code for k in range(4)]
    return codes


async def test_guesses_spread_over_many_addresses_are_bounded_together(
    client_for: ClientFactory, harness: Harness
) -> None:
    """A LAN attacker can claim many addresses and stay under each one's allowance: failures
    from all addresses together are bounded too (GLOBAL_FACTOR times the per-address figure),
    and past that an address the owner never logged in from gets 429 until the window moves."""
    allowed = GLOBAL_FACTOR * harness.settings.web.login_max_failures
    codes = await _spread_guesses(client_for, allowed // 4 + 2)
    assert codes.count(401) == allowed
    assert set(codes[allowed:]) == {429}
    fresh = await login(client_for("127.0.2.1"))
    assert fresh.status_code == 429
    assert int(fresh.headers["retry-after"]) > 0
    harness.clock.advance(15 * 60 + 1)
    assert (await login(client_for("127.0.2.1"))).status_code == 303


async def test_the_bound_on_all_addresses_never_shuts_out_an_address_the_owner_used(
    client_for: ClientFactory, harness: Harness
) -> None:
    """Anyone can fill the shared allowance, so it must not lock the owner out: an address
    that logged in before keeps its own allowance, and the owner gets in from it."""
    assert (await login(client_for("127.0.0.5"))).status_code == 303
    allowed = GLOBAL_FACTOR * harness.settings.web.login_max_failures
    await _spread_guesses(client_for, allowed // 4 + 1)
    assert (await login(client_for("127.0.3.1"))).status_code == 429
    assert (await login(client_for("127.0.0.5"))).status_code == 303


async def test_guesses_sent_in_parallel_get_no_more_than_the_allowance(
    client_for: ClientFactory, harness: Harness
) -> None:
    """Forty wrong passwords at once: the password check runs off the event loop, yet only the
    allowance is ever checked; the rest are 429 without a check."""
    attacker = client_for("127.0.0.9")
    csrf = csrf_of((await attacker.get("/login")).text)

    async def guess(number: int) -> int:
        form = {"csrf": csrf, "password": f"guess {number}", "next": "/apps"}
        return (await attacker.post("/login", data=form)).status_code

    codes = await asyncio.gather(*(guess(n) for n in range(40)))
    assert codes.count(401) == harness.settings.web.login_max_failures
    assert codes.count(429) == 40 - harness.settings.web.login_max_failures


async def test_form_without_csrf_token_is_refused(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """A state-changing form with no CSRF token is refused with 403 and changes nothing."""
    response = await owner.post("/apps", data={"app_id": "sneaky", "scope": ["read:status"]})
    assert response.status_code == 403
    assert harness.registry.get("sneaky") is None


async def test_a_form_posted_from_another_origin_is_refused_even_with_its_token(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """The browser's Sec-Fetch-Site says a page of another origin sent the form (another web
    app on this host is "same-site": cookies ignore ports): 403 however good the token. The
    page's own forms ("same-origin"), typed addresses ("none") and old browsers still work."""
    for site in ("cross-site", "same-site"):
        form = {"csrf": await page_csrf(owner), "app_id": "sneaky", "scope": ["read:status"]}
        refused = await owner.post("/apps", data=form, headers={"sec-fetch-site": site})
        assert refused.status_code == 403, site
    assert harness.registry.get("sneaky") is None
    for number, site in enumerate(("same-origin", "none", None)):
        form = {"csrf": await page_csrf(owner), "app_id": f"ok{number}", "scope": ["read:status"]}
        headers = {"sec-fetch-site": site} if site else {}
        response = await owner.post("/apps", data=form, headers=headers)
        assert response.status_code in (200, 303), (site, response.status_code)
        assert harness.registry.get(f"ok{number}") is not None


async def test_csrf_token_of_another_session_is_refused(
    client_for: ClientFactory, harness: Harness
) -> None:
    """A token is bound to its session: one copied from another browser does not work."""
    first, second = client_for(), client_for()
    await login(first)
    await login(second)
    stolen = await page_csrf(second)
    response = await first.post("/apps", data={"csrf": stolen, "app_id": "x1", "scope": []})
    assert response.status_code == 403
    assert harness.registry.get("x1") is None


@pytest.mark.parametrize(
    "token", ["\u00e9", "caf\u00e9-\u2603", "\U0001f600" * 43], ids=["accent", "mixed", "emoji"]
)
async def test_a_non_ascii_csrf_token_is_refused_not_an_error(
    owner: httpx.AsyncClient, harness: Harness, token: str
) -> None:
    """A token with characters outside ASCII is just a wrong token: 403, nothing changed."""
    response = await owner.post("/apps", data={"csrf": token, "app_id": "x2", "scope": []})
    assert response.status_code == 403
    assert harness.registry.get("x2") is None
    login_form = await owner.post("/login", data={"csrf": token, "password": OWNER_PASSWORD})
    assert login_form.status_code == 403


async def test_login_form_itself_needs_its_csrf_token(client: httpx.AsyncClient) -> None:
    """Posting a password without the login page's token is refused (login CSRF)."""
    response = await client.post("/login", data={"password": OWNER_PASSWORD})
    assert response.status_code == 403


async def test_pages_redirect_to_login_and_back(client: httpx.AsyncClient) -> None:
    """An anonymous visitor is sent to the login page, and returned to the page after login."""
    response = await client.get("/audit?kind=app")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Faudit%3Fkind%3Dapp"
    page = await client.get(response.headers["location"])
    form = {"csrf": csrf_of(page.text), "password": OWNER_PASSWORD, "next": "/audit"}
    assert (await client.post("/login", data=form)).headers["location"] == "/audit"


async def test_login_never_redirects_off_site(client: httpx.AsyncClient) -> None:
    """`next` pointing at another site is replaced by the apps page (no open redirect)."""
    page = await client.get("/login")
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        form = {"csrf": csrf_of(page.text), "password": "wrong", "next": target}
        await client.post("/login", data=form)
    page = await client.get("/login?next=//evil.example")
    form = {"csrf": csrf_of(page.text), "password": OWNER_PASSWORD, "next": "//evil.ex"}
    assert (await client.post("/login", data=form)).headers["location"] == "/apps"


async def test_session_expires_after_session_minutes(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """Sixty-one minutes after login (default 60) the session is gone."""
    harness.clock.advance(61 * 60)
    assert (await owner.get("/apps")).status_code == 303


async def test_session_ids_are_stored_hashed_and_rotated_at_login(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """The cookie value never appears in the database, and login issues a new id."""
    await client.get("/login")
    before = client.cookies["ownerlink_session"]
    await login(client)
    after = client.cookies["ownerlink_session"]
    assert before != after
    rows = harness.store.query("SELECT id_hash FROM web_sessions")
    assert all(after not in row["id_hash"] and before not in row["id_hash"] for row in rows)


async def test_cookie_less_visits_cannot_fill_the_session_table(
    owner: httpx.AsyncClient, client_for: ClientFactory, harness: Harness
) -> None:
    """Every cookie-less GET /login stores an anonymous session for its form's CSRF token; a
    loop of them keeps only the newest, and never touches the owner's session."""
    stranger = client_for()
    for _ in range(MAX_ANONYMOUS + 50):
        stranger.cookies.clear()
        assert (await stranger.get("/login")).status_code == 200
    anonymous = harness.store.query("SELECT count(*) AS n FROM web_sessions WHERE owner = 0")
    assert anonymous[0]["n"] == MAX_ANONYMOUS
    assert (await owner.get("/apps")).status_code == 200
    assert (await login(stranger)).status_code == 303  # the newest form still works


async def test_logout_ends_the_session(owner: httpx.AsyncClient, harness: Harness) -> None:
    """After logging out the old cookie opens nothing, and the logout is audited."""
    cookie = owner.cookies["ownerlink_session"]
    response = await owner.post("/logout", data={"csrf": await page_csrf(owner)})
    assert response.status_code == 303
    owner.cookies.set("ownerlink_session", cookie)
    assert (await owner.get("/apps")).status_code == 303
    assert "owner.logout" in harness.audit.kinds()


async def test_login_asks_for_the_totp_code_when_configured(tmp_path: Path) -> None:
    """With web.login_totp and step-up enrolled, the password alone is not enough."""
    harness = build_harness(tmp_path / "s", login_totp=True)
    harness.stepup.enroll()
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        assert (await login(client)).status_code == 401
        assert harness.audit.items[-1]["reason"] == "wrong_code"
        assert (await login(client, code=harness.stepup.code())).status_code == 303
    harness.store.close()


async def test_an_oversized_body_is_refused_before_it_is_read_whole(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """No login, token or API request needs more than a few kilobytes: a larger body is 413,
    whether it declares its length or comes in chunks without one, before any check runs."""
    big = b"x=" + b"a" * MAX_BODY_BYTES
    form = {"content-type": "application/x-www-form-urlencoded"}
    for path in ("/login", "/oauth/token", "/api/v1/vehicles/family-car/commands/lock"):
        declared = await client.post(path, content=big, headers=form)
        assert declared.status_code == 413, path

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 4096):
                yield big[start : start + 4096]

        streamed = await client.post(path, content=chunks(), headers=form)
        # A command without a token is refused before its body is read at all.
        expected = 401 if path.startswith("/api/") else 413
        assert streamed.status_code == expected, (path, streamed.text)
    assert "owner.login" not in harness.audit.kinds()
    assert (await login(client)).status_code == 303  # ordinary forms are well within it


async def test_addresses_outside_the_web_allowlist_get_403(client_for: ClientFactory) -> None:
    """web.allow_cidrs (loopback by default) guards every path, the API and OAuth included."""
    outsider = client_for("192.168.1.50")
    for path in ("/login", "/api/v1/vehicles", "/oauth/token", "/static/style.css"):
        assert (await outsider.get(path)).status_code == 403


async def test_a_page_asked_for_under_a_foreign_name_is_refused_before_anything_runs(
    client_for: ClientFactory, harness: Harness
) -> None:
    """A website that rebinds its own name to 127.0.0.1 makes the owner's browser call us from an
    allowed address: such requests are refused (400, naming web.allowed_hosts) before the login
    limiter or the session table see them, so the attacker can neither guess the password nor
    lock the owner out; the metadata never names the attacker's host as issuer."""
    rebound = client_for()
    rebound.headers["host"] = "rebind.attacker.example:8088"
    for path in ("/login", "/.well-known/oauth-authorization-server", "/api/v1/vehicles"):
        response = await rebound.get(path)
        assert response.status_code == 400
        assert "web.allowed_hosts" in response.text
    form = {"password": "wrong", "csrf": "x"}
    for _ in range(10):
        assert (await rebound.post("/login", data=form)).status_code == 400
    assert harness.store.query("SELECT COUNT(*) AS n FROM web_sessions")[0]["n"] == 0
    assert (await login(client_for())).status_code == 303


GUARDED = ("/login", "/oauth/token", "/api/v1/vehicles/family-car/commands/lock")


async def test_the_guards_refusals_carry_the_security_headers_and_speak_json_to_the_api(
    client_for: ClientFactory,
) -> None:
    """An address outside web.allow_cidrs (403), a foreign Host (400) and an oversized body
    (413) are refused before any route runs. Those refusals went out as bare text without the
    security headers or no-store, and an OAuth or API client got no `{error,
    error_description}` (RFC 6749 §5.2, RFC 6750 §3) to read."""
    rebound = client_for()
    rebound.headers["host"] = "rebind.attacker.example"
    big = {"content": b"x=" + b"a" * MAX_BODY_BYTES}
    senders = ((client_for("192.168.1.50"), {}, 403), (rebound, {}, 400), (client_for(), big, 413))
    for sender, extra, status in senders:
        for path in GUARDED:
            response = await sender.post(path, **extra)
            assert response.status_code == status, path
            assert response.headers["cache-control"] == "no-store", path
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
            if path == "/login":
                assert response.headers["content-type"].startswith("text/plain")
                continue
            assert set(response.json()) == {"error", "error_description"}, path


async def test_listed_host_names_are_served(tmp_path: Path) -> None:
    """web.allowed_hosts and the host of web.public_url are answered like an address; the
    issuer is then the public URL, whatever name the request used."""
    harness = build_harness(
        tmp_path / "state", allowed_hosts=["car.example.net"], public_url="https://car.example.org"
    )
    transport = httpx.ASGITransport(app=harness.app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for host, status in (("car.example.net", 200), ("car.example.org", 200), ("x.io", 400)):
            response = await client.get("/login", headers={"host": host})
            assert response.status_code == status, host
        meta = await client.get(
            "/.well-known/oauth-authorization-server", headers={"host": "car.example.net"}
        )
        assert meta.json()["issuer"] == "https://car.example.org"
    harness.store.close()


async def test_ipv4_mapped_loopback_is_allowed(client_for: ClientFactory) -> None:
    """A dual-stack listener reports ::ffff:127.0.0.1; it is still loopback."""
    assert (await client_for("::ffff:127.0.0.1").get("/login")).status_code == 200


async def test_pages_name_their_icon_and_it_is_served(client: httpx.AsyncClient) -> None:
    """Browsers otherwise ask for /favicon.ico on every visit and log a 404 each time."""
    page = (await client.get("/login")).text
    assert '<link rel="icon" href="/static/favicon.svg"' in page
    icon = await client.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")


async def test_pages_forbid_framing_caching_and_scripts(client: httpx.AsyncClient) -> None:
    """Every page is uncacheable, unframeable, and allows no script."""
    response = await client.get("/login")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "<script" not in response.text


async def test_missing_owner_password_is_explained(tmp_path: Path) -> None:
    """Before `ownerlink owner set-password` the login page says what to run, and logins fail."""
    harness = build_harness(tmp_path / "s")
    harness.store.conn.execute("DELETE FROM web_owner")
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        page = await client.get("/login")
        assert "ownerlink owner set-password" in page.text
        assert (await login(client)).status_code == 401
    harness.store.close()


async def test_a_form_sent_after_the_session_ended_says_so_on_the_login_page(
    owner: httpx.AsyncClient, harness: Harness
) -> None:
    """A session that expired while a form was being filled in sent the owner to a bare login
    page: the app was not added, and nothing said why. Now the login page says the session
    ended and the form was not saved; a first visit (no session before) says nothing of it."""
    csrf = csrf_of((await owner.get("/apps")).text)
    harness.clock.advance(61 * 60)
    form = {"csrf": csrf, "app_id": "late", "name": "late", "scope": "read:status"}
    sent = await owner.post("/apps", data=form)
    assert sent.status_code == 303
    page = await owner.get(sent.headers["location"])
    assert "Your session has ended" in page.text and "was not saved" in page.text
    assert harness.registry.get("late") is None
    owner.cookies.clear()
    fresh = await owner.get((await owner.get("/apps")).headers["location"])
    assert "session has ended" not in fresh.text


async def test_the_login_code_field_admits_the_code_as_authenticators_show_it(
    tmp_path: Path,
) -> None:
    """Authenticators show '123 456'; the field's pattern ([0-9]{6,8}) made the browser refuse
    it with 'match the requested format', though the daemon takes the spaces out itself."""
    harness = build_harness(tmp_path / "s", login_totp=True)
    harness.stepup.enroll()
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        page = (await client.get("/login")).text
    harness.store.close()
    field = re.search(r'<input[^>]* id="code"[^>]*>', page)
    assert field
    pattern = re.search(r'pattern="([^"]+)"', field.group(0))
    assert pattern
    for typed in ("123456", "123 456", "12345678"):
        assert re.fullmatch(pattern.group(1), typed), typed
