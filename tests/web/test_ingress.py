"""The owner page through Home Assistant's Ingress: prefix, cookie path, framing, and whom to trust.

The Supervisor connects from its own address, strips `/api/hassio_ingress/<token>` from the path
and names it in `X-Ingress-Path`; these tests play the Supervisor with httpx in-process.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.responses import RedirectResponse
from starlette.types import Receive, Scope, Send

from bridge import logs
from bridge.web.ingress import Ingress, prefixed_location
from tests.web.support import BASE_URL, OWNER_PASSWORD, Harness, build_harness, csrf_of

SUPERVISOR = "172.30.32.2"
PREFIX = "/api/hassio_ingress/Xy_9-tokEn"
HA_HOST = "myhome.ui.example.com"  # Home Assistant's own public name, forwarded as the Host

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = build_harness(
        tmp_path / "state",
        allow_cidrs=["127.0.0.0/8", f"{SUPERVISOR}/32", "192.168.1.0/24"],
        ingress_from=[f"{SUPERVISOR}/32"],
    )
    yield h
    h.store.close()


@pytest.fixture
async def client_for(harness: Harness) -> AsyncIterator[Client]:
    clients: list[httpx.AsyncClient] = []

    def make(ip: str = SUPERVISOR, prefix: str | None = PREFIX) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=harness.app, client=(ip, 40000))
        headers = {"host": HA_HOST} if ip == SUPERVISOR else {}
        if prefix is not None:
            headers["x-ingress-path"] = prefix
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def log_in(client: httpx.AsyncClient) -> httpx.Response:
    """Log in as a browser would through the Supervisor: the browser keeps the cookie for the
    prefixed path and sends it back; the Supervisor passes it on to the stripped path."""
    form = await client.get("/login")
    carry(client, form)
    data = {"password": OWNER_PASSWORD, "csrf": csrf_of(form.text), "next": "/apps"}
    response = await client.post("/login", data=data)
    carry(client, response)
    return response


def carry(client: httpx.AsyncClient, response: httpx.Response) -> None:
    """What the browser sends back on the next request under the prefix (a response that sets
    no cookie leaves the browser's as they were)."""
    if not response.cookies:
        return
    client.cookies.clear()
    for name, value in response.cookies.items():
        client.cookies.set(name, value)


async def test_links_forms_and_assets_carry_the_prefix(client_for: Client) -> None:
    """Every URL on the page starts with the prefix the Supervisor named; none escapes it."""
    page = (await client_for().get("/login")).text
    urls = re.findall(r'(?:href|action|src)="([^"#]+)"', page)
    assert urls, page
    assert all(url.startswith(f"{PREFIX}/") for url in urls), urls
    assert f'href="{PREFIX}/static/style.css"' in page


async def test_login_redirects_and_cookie_stay_under_the_prefix(client_for: Client) -> None:
    """The session cookie is kept to the page's own prefix (Home Assistant's origin is shared
    with every add-on), and each redirect leads back under the prefix."""
    supervisor = client_for()
    assert (await supervisor.get("/apps")).headers["location"] == f"{PREFIX}/login?next=%2Fapps"
    response = await log_in(supervisor)
    assert response.status_code == 303
    assert response.headers["location"] == f"{PREFIX}/apps"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("ownerlink_ingress=")
    assert f"Path={PREFIX}" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = await supervisor.get("/apps")
    assert page.status_code == 200
    assert "Connected apps" in page.text


async def test_adding_an_app_through_ingress_works_end_to_end(
    client_for: Client, harness: Harness
) -> None:
    """The whole form round trip: add an app, land on its one-time password page, go back."""
    supervisor = client_for()
    await log_in(supervisor)
    form = (await supervisor.get("/apps")).text
    data = {"csrf": csrf_of(form), "app_id": "nodered", "name": "Node-RED", "scope": "read:status"}
    added = await supervisor.post("/apps", data=data)
    assert added.headers["location"] == f"{PREFIX}/apps/nodered/created"
    created = await supervisor.get("/apps/nodered/created")
    assert f'href="{PREFIX}/apps/nodered"' in created.text
    assert harness.registry.require("nodered").name == "Node-RED"


async def test_the_page_may_be_framed_by_home_assistant_only_through_ingress(
    client_for: Client,
) -> None:
    """Home Assistant shows Ingress pages in a frame of its own (same-origin) page; outside
    Ingress the page is never framed."""
    through = await client_for().get("/login")
    assert "frame-ancestors 'self'" in through.headers["content-security-policy"]
    assert through.headers["x-frame-options"] == "SAMEORIGIN"
    direct = await client_for("127.0.0.1", prefix=None).get("/login")
    assert "frame-ancestors 'none'" in direct.headers["content-security-policy"]
    assert direct.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [
        ("192.168.1.7", PREFIX),  # a client on the LAN sending the header itself
        (SUPERVISOR, "/elsewhere"),  # not the Supervisor's form
        (SUPERVISOR, PREFIX + "/../../x"),
        (SUPERVISOR, PREFIX + '"><script>'),
    ],
)
async def test_the_header_is_believed_only_from_the_supervisor_in_its_form(
    client_for: Client, ip: str, prefix: str
) -> None:
    """Anyone else could otherwise move the page's links, cookie path and framing rules."""
    client = client_for(ip, prefix=prefix)
    client.headers["host"] = "127.0.0.1:8088"
    response = await client.get("/login")
    assert response.status_code == 200
    assert 'href="/static/style.css"' in response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert "Path=/;" in response.headers["set-cookie"]


async def test_without_ingress_configured_the_header_means_nothing(tmp_path: Path) -> None:
    """web.ingress_from is empty unless the add-on sets it: the header is then ignored, and the
    Host check applies to the Supervisor's address like any other."""
    harness = build_harness(tmp_path / "state", allow_cidrs=[f"{SUPERVISOR}/32"])
    transport = httpx.ASGITransport(app=harness.app, client=(SUPERVISOR, 40000))
    headers = {"x-ingress-path": PREFIX, "host": "172.30.33.5:8088"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as c:
        page = await c.get("/login")
        assert 'href="/static/style.css"' in page.text
        assert page.headers["x-frame-options"] == "DENY"
        assert (await c.get("/login", headers={"host": HA_HOST})).status_code == 400
    harness.store.close()


def forget_password(harness: Harness) -> None:
    """A fresh add-on: nobody has chosen the owner password yet."""
    with harness.store.transaction() as conn:
        conn.execute("DELETE FROM web_owner")


async def test_the_first_owner_password_is_chosen_on_the_page_with_the_logged_setup_code(
    client_for: Client, harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """An add-on user has no shell: through Ingress the page offers to choose the owner password,
    but only with the setup code the daemon wrote to its log (any HA user can open an Ingress
    URL; only administrators read add-on logs). Wrong codes are refused and counted; policy and
    confirmation are checked; the owner is then logged in, and from then on the page asks for
    the password like anywhere else; it cannot be chosen a second time this way."""
    forget_password(harness)
    supervisor = client_for()
    form = await supervisor.get("/login")
    carry(supervisor, form)
    assert "Choose the owner password" in form.text
    code = harness.app.state.ctx.setup.value
    logged = capsys.readouterr()
    assert code is not None and code in logged.out + logged.err  # the add-on's log
    assert code not in form.text
    token = csrf_of(form.text)
    choose = "/login/first-password"
    first = "a fine first password"
    wrong = {"csrf": token, "setup_code": "00000-00000", "new_password": first}
    refused = await supervisor.post(choose, data={**wrong, "confirm_password": first})
    assert refused.status_code == 401 and "Wrong setup code." in refused.text
    assert harness.audit.items[-1]["reason"] == "wrong_setup_code"
    for new, confirm, error in (
        ("long enough 1", "long enough 2", "The passwords differ."),
        ("short", "short", "at least 10 characters"),
    ):
        data = {"csrf": token, "setup_code": code, "new_password": new, "confirm_password": confirm}
        refused = await supervisor.post(choose, data=data)
        assert refused.status_code == 400 and error in refused.text
    assert harness.store.query("SELECT COUNT(*) AS n FROM web_owner")[0]["n"] == 0
    data = {"csrf": token, "setup_code": f" {code.upper()} ", "new_password": first}
    chosen = await supervisor.post(choose, data={**data, "confirm_password": first})
    assert chosen.status_code == 303 and chosen.headers["location"] == f"{PREFIX}/apps"
    carry(supervisor, chosen)
    assert "Connected apps" in (await supervisor.get("/apps")).text
    assert harness.audit.items[-2]["kind"] == "owner.password_changed"
    assert harness.audit.items[-2]["via"] == "ingress"
    assert first not in str(harness.audit.items) and code not in str(harness.audit.items)
    assert harness.app.state.ctx.setup.value is None  # used up

    again = client_for()
    second = await again.get("/login")
    carry(again, second)
    assert "Choose the owner password" not in second.text
    data = {"csrf": csrf_of(second.text), "setup_code": code}
    data["new_password"] = data["confirm_password"] = "x" * 12
    assert (await again.post(choose, data=data)).status_code == 403
    data = {"csrf": csrf_of(second.text), "password": first, "next": "/apps"}
    assert (await again.post("/login", data=data)).status_code == 303


async def test_guessing_the_setup_code_is_throttled_like_a_password(
    client_for: Client, harness: Harness
) -> None:
    """Five wrong setup codes and even the right one gets 429: 40 random bits and five tries a
    quarter of an hour leave nothing to guess."""
    forget_password(harness)
    supervisor = client_for()
    form = await supervisor.get("/login")
    carry(supervisor, form)
    code = harness.app.state.ctx.setup.value
    data = {"csrf": csrf_of(form.text), "new_password": "x" * 12, "confirm_password": "x" * 12}
    for n in range(5):
        wrong = await supervisor.post("/login/first-password", data={**data, "setup_code": str(n)})
        assert wrong.status_code == 401
    right = await supervisor.post("/login/first-password", data={**data, "setup_code": code})
    assert right.status_code == 429
    assert harness.store.query("SELECT COUNT(*) AS n FROM web_owner")[0]["n"] == 0


async def test_the_setup_code_is_logged_at_any_log_level_and_odd_input_is_just_wrong(
    client_for: Client, harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """The add-on's `log_level: error` must not hide the one line the owner needs; a code typed
    with non-ASCII characters is a wrong code, not a server error."""
    logs.configure("error")
    try:
        forget_password(harness)
        supervisor = client_for()
        form = await supervisor.get("/login")
        carry(supervisor, form)
        logged = capsys.readouterr()
        code = harness.app.state.ctx.setup.value
        assert code is not None and code in logged.out + logged.err
        data = {"csrf": csrf_of(form.text), "new_password": "x" * 12, "confirm_password": "x" * 12}
        odd = await supervisor.post("/login/first-password", data={**data, "setup_code": "é"})
        assert odd.status_code == 401
    finally:
        logs.configure("info")


async def test_typos_in_the_new_password_after_the_right_code_are_not_guesses(
    client_for: Client, harness: Harness
) -> None:
    """Once the setup code is right, mismatched or short passwords do not use up the allowance
    that guards the code."""
    forget_password(harness)
    supervisor = client_for()
    form = await supervisor.get("/login")
    carry(supervisor, form)
    data = {"csrf": csrf_of(form.text), "setup_code": harness.app.state.ctx.setup.value}
    for n in range(6):
        typo = {**data, "new_password": f"first pass {n}", "confirm_password": "other one"}
        assert (await supervisor.post("/login/first-password", data=typo)).status_code == 400
    good = {**data, "new_password": "a fine first password", "confirm_password": ""}
    good["confirm_password"] = good["new_password"]
    assert (await supervisor.post("/login/first-password", data=good)).status_code == 303


async def test_one_home_assistant_users_wrong_guesses_do_not_lock_out_another(
    client_for: Client,
) -> None:
    """Every Ingress request comes from the Supervisor's address; the login limit counts per Home
    Assistant user the Supervisor names (X-Remote-User-Id), so another HA user cannot lock the
    owner out of the page by guessing."""
    guesser = client_for()
    guesser.headers["x-remote-user-id"] = "a" * 32
    for _ in range(5):
        form = await guesser.get("/login")
        carry(guesser, form)
        data = {"csrf": csrf_of(form.text), "password": "wrong password", "next": "/apps"}
        assert (await guesser.post("/login", data=data)).status_code == 401
    form = await guesser.get("/login")
    carry(guesser, form)
    data = {"csrf": csrf_of(form.text), "password": OWNER_PASSWORD, "next": "/apps"}
    assert (await guesser.post("/login", data=data)).status_code == 429
    owner = client_for()
    owner.headers["x-remote-user-id"] = "b" * 32
    assert (await log_in(owner)).status_code == 303


async def test_a_cookie_from_the_mapped_port_does_not_confuse_the_ingress_login(
    client_for: Client,
) -> None:
    """Browsers send a Path=/ cookie set on the mapped port to every port of the host, Home
    Assistant's included. Through Ingress the page's cookie has a name of its own, so a stale
    cookie from the port cannot shadow it."""
    supervisor = client_for()
    form = await supervisor.get("/login")
    assert form.headers["set-cookie"].startswith("ownerlink_ingress=")
    carry(supervisor, form)
    supervisor.cookies.set("ownerlink_session", "stale-session-from-port-8088")
    data = {"csrf": csrf_of(form.text), "password": OWNER_PASSWORD, "next": "/apps"}
    assert (await supervisor.post("/login", data=data)).status_code == 303


async def test_a_trailing_slash_redirect_stays_under_the_prefix(client_for: Client) -> None:
    """Starlette answers `/apps/` with an absolute URL on the request's own host; through Ingress
    that must lead back under the prefix, not to Home Assistant's own `/apps`."""
    supervisor = client_for()
    await log_in(supervisor)
    moved = await supervisor.get("/apps/")
    assert moved.status_code in (307, 308)
    assert moved.headers["location"] == f"{PREFIX}/apps"


async def test_outside_ingress_the_first_password_still_takes_the_cli(
    client_for: Client, harness: Harness
) -> None:
    """Anywhere else, whoever reached the page first would choose the password: not offered,
    and refused if posted anyway."""
    forget_password(harness)
    direct = client_for("192.168.1.7", prefix=None)
    direct.headers["host"] = "192.168.1.2:8088"
    form = await direct.get("/login")
    assert "Choose the owner password" not in form.text
    assert "ownerlink owner set-password" in form.text
    data = {"csrf": csrf_of(form.text), "new_password": "x" * 12, "confirm_password": "x" * 12}
    data["setup_code"] = "00000-00000"
    assert (await direct.post("/login/first-password", data=data)).status_code == 403
    assert harness.store.query("SELECT COUNT(*) AS n FROM web_owner")[0]["n"] == 0


@pytest.mark.parametrize(
    ("location", "slash_of", "expected"),
    [
        (b"/apps", b"", PREFIX.encode() + b"/apps"),
        (b"/login?next=%2Fapps", b"", PREFIX.encode() + b"/login?next=%2Fapps"),
        (b"https://app.example/cb?code=x", b"", b"https://app.example/cb?code=x"),
        (b"com.example.app:/cb?code=x", b"", b"com.example.app:/cb?code=x"),
        (b"//elsewhere.example/", b"", b"//elsewhere.example/"),
        # Starlette's trailing-slash redirects: absolute, on the request's own host.
        (f"http://{HA_HOST}/apps?x=1".encode(), b"/apps/", PREFIX.encode() + b"/apps?x=1"),
        (f"https://{HA_HOST}/apps/".encode(), b"/apps", PREFIX.encode() + b"/apps/"),
        # An OAuth client's callback on Home Assistant's own host is the client's, not ours.
        (f"https://{HA_HOST}/auth/external/callback?code=x".encode(), b"", None),
        (f"https://{HA_HOST}/auth/external/callback".encode(), b"/oauth/authorize", None),
    ],
)
def test_only_our_own_paths_are_moved_under_the_prefix(
    location: bytes, slash_of: bytes, expected: bytes | None
) -> None:
    """Relative paths and slash redirects are ours; every other absolute URL is left alone."""
    assert prefixed_location(location, PREFIX.encode(), slash_of) == (expected or location)


async def test_a_redirect_to_an_oauth_callback_on_home_assistants_host_is_left_alone() -> None:
    """The consent page's 303 to a client on Home Assistant's host (the Host the Supervisor
    passes on) must reach that client, not be pulled under the add-on's prefix."""
    callback = f"https://{HA_HOST}/auth/external/callback?code=abc&state=s"

    async def consent(scope: Scope, receive: Receive, send: Send) -> None:
        await RedirectResponse(callback, status_code=303)(scope, receive, send)

    app = Ingress(consent, trusted=[f"{SUPERVISOR}/32"])
    transport = httpx.ASGITransport(app=app, client=(SUPERVISOR, 40000))
    headers = {"host": HA_HOST, "x-ingress-path": PREFIX}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as c:
        answer = await c.post("/oauth/authorize")
    assert answer.headers["location"] == callback
