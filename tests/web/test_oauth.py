"""The OAuth 2.0 authorisation server end to end: consent, PKCE, codes, rotation, revocation."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest

from bridge.web.oauth.endpoints import TOKENS_PER_MINUTE
from tests.web.conftest import ClientFactory
from tests.web.oauth_helpers import (
    REDIRECT,
    RestClient,
    add_rest_app,
    authorize_query,
    bearer,
    code_from,
    consent,
    enable_rest,
    exchange,
    get_code,
    pkce,
    refresh,
    tokens_for,
)
from tests.web.support import Harness, csrf_of, login, page_csrf

SCOPES = ["read:status", "read:health", "read:location", "command:lock", "command:unlock"]


@pytest.fixture
async def rest(owner: httpx.AsyncClient) -> RestClient:
    """A confidential REST client linked to the registry app `dash`."""
    return await add_rest_app(owner, "dash", SCOPES)


async def test_code_flow_with_s256_pkce_issues_short_lived_tokens(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Consent, code, exchange with the verifier: a 10-minute bearer token and a refresh token."""
    tokens = await tokens_for(owner, client, rest, "read:status command:lock")
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 600
    assert tokens["refresh_token"]
    assert tokens["scope"] == "command:lock read:status"
    me = await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert me.json() == {"app": "dash", "name": "Dash", "scopes": ["command:lock", "read:status"]}


async def test_tokens_codes_and_secrets_are_stored_only_as_hashes(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """No raw token or client secret appears anywhere in the state database."""
    tokens = await tokens_for(owner, client, rest)
    dump = "\n".join(harness.store.conn.iterdump())
    for secret in (tokens["access_token"], tokens["refresh_token"], rest.secret):
        assert secret and secret not in dump


async def test_authorization_without_pkce_is_refused(
    owner: httpx.AsyncClient, rest: RestClient
) -> None:
    """PKCE is required of every client: no code_challenge, no code."""
    page = await owner.get(f"/oauth/authorize?{authorize_query('dash', None, 'read:status')}")
    assert page.status_code == 303
    error = parse_qs(urlsplit(page.headers["location"]).query)
    assert error["error"] == ["invalid_request"]
    assert error["state"] == ["st4te"]


async def test_plain_pkce_method_is_refused(owner: httpx.AsyncClient, rest: RestClient) -> None:
    """Only S256 is accepted; `plain` is bounced back to the app as invalid_request."""
    query = authorize_query(
        "dash", None, "read:status", code_challenge="x" * 43, code_challenge_method="plain"
    )
    page = await owner.get(f"/oauth/authorize?{query}")
    assert parse_qs(urlsplit(page.headers["location"]).query)["error"] == ["invalid_request"]


@pytest.mark.parametrize("challenge", ["short", "x" * 44, "+" * 43, "a=" * 21 + "a"])
async def test_a_challenge_no_s256_digest_could_be_is_refused(
    owner: httpx.AsyncClient, rest: RestClient, challenge: str
) -> None:
    """RFC 7636 §4.2: an S256 challenge is 43 base64url characters; anything else is bounced
    back as invalid_request before the owner is asked to consent."""
    query = authorize_query(
        "dash", None, "read:status", code_challenge=challenge, code_challenge_method="S256"
    )
    page = await owner.get(f"/oauth/authorize?{query}")
    assert page.status_code == 303
    assert parse_qs(urlsplit(page.headers["location"]).query)["error"] == ["invalid_request"]


async def test_missing_or_wrong_verifier_is_refused(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """The code is useless without the verifier that matches its challenge."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    missing = await exchange(client, rest, code, None)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    wrong = await exchange(client, rest, code, pkce()[0])
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    short = await exchange(client, rest, code, "tooshort")
    assert short.json()["error"] == "invalid_request"
    assert (await exchange(client, rest, code, verifier)).status_code == 200


async def test_unregistered_redirect_uri_is_shown_never_followed(
    owner: httpx.AsyncClient, rest: RestClient
) -> None:
    """A redirect URI that does not match exactly gets an error page, not a redirect."""
    _, challenge = pkce()
    for uri in ("http://127.0.0.1:9999/callback/evil", "http://127.0.0.1:9999/callback?x=1"):
        query = authorize_query("dash", challenge, "read:status", redirect_uri=uri)
        page = await owner.get(f"/oauth/authorize?{query}")
        assert page.status_code == 400
        assert "location" not in page.headers


async def test_token_request_with_another_redirect_uri_is_refused(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """The code is bound to the redirect URI it was issued for."""
    uris = f"{REDIRECT}\nhttp://127.0.0.1:9999/other"
    rest = await add_rest_app(owner, "two", ["read:status"], uris=uris)
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    response = await exchange(client, rest, code, verifier, "http://127.0.0.1:9999/other")
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_request", "invalid_grant"}


async def test_a_code_asked_for_with_a_redirect_uri_needs_it_again_at_the_token_endpoint(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """RFC 6749 §4.1.3: redirect_uri is required in the token request when the authorisation
    request carried it. Left out, oauthlib filled in the app's only registered URI and the code
    was exchanged. A request that named none at either step still works."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    unnamed = await client.post("/oauth/token", data={**data, **rest.auth()})
    assert unnamed.status_code == 400
    assert unnamed.json()["error"] == "invalid_request"
    assert (await exchange(client, rest, code, verifier)).status_code == 200
    query = authorize_query(rest.client_id, challenge, "read:status").replace(
        f"&redirect_uri={quote(REDIRECT, safe='')}", ""
    )
    assert "redirect_uri" not in query
    code = code_from(await consent(owner, query, ticked=["read:status"]))
    data["code"] = code
    assert (await client.post("/oauth/token", data={**data, **rest.auth()})).status_code == 200


async def test_reused_code_is_refused_and_revokes_what_it_produced(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """A second exchange of one code fails and the first exchange's tokens die (RFC 6749 §4.1.2)."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    first = (await exchange(client, rest, code, verifier)).json()
    again = await exchange(client, rest, code, verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert (
        await client.get("/api/v1/me", headers=bearer(first["access_token"]))
    ).status_code == 401
    assert "oauth.code_reused" in harness.audit.kinds()


async def test_malformed_requests_get_a_400_not_a_server_error(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """A bad percent-escape in the authorisation request, on the page or in the consent form, and
    a query string on the token endpoint (credentials must not travel in URLs) are the client's
    error: each gets a 400 with an OAuth error, and the server raises nothing."""
    _, challenge = pkce()
    query = authorize_query(rest.client_id, challenge, "read:status") + "&x=%ZZ"
    shown = await owner.get(f"/oauth/authorize?{query}")
    assert shown.status_code == 400
    assert "invalid_request" in shown.text
    good = authorize_query(rest.client_id, challenge, "read:status")
    form = (await owner.get(f"/oauth/authorize?{good}")).text
    posted = await owner.post(
        "/oauth/authorize",
        data={"csrf": csrf_of(form), "query": query, "scope": "read:status", "decision": "allow"},
    )
    assert posted.status_code == 400
    assert "invalid_request" in posted.text
    body = {"grant_type": "refresh_token", "refresh_token": "x", **rest.auth()}
    token = await client.post("/oauth/token?x=1", data=body)
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_request"


async def test_every_back_channel_refusal_names_its_error_and_describes_it(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """RFC 6749 §5.2's shape, `error` with `error_description`: oauthlib left the description
    out of invalid_grant, invalid_client, unsupported_grant_type and invalid_scope, and a body
    that was not UTF-8 got a bare `{"error": "invalid_request"}`."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    tokens = (await exchange(client, rest, code, verifier)).json()
    wrong = RestClient(rest.client_id, "not-the-secret")
    form = {"content-type": "application/x-www-form-urlencoded"}
    wider = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refusals = {
        "invalid_scope": await client.post(
            "/oauth/token", data={**wider, "scope": "read:status read:health", **rest.auth()}
        ),
        "invalid_grant": await exchange(client, rest, code, verifier),
        "invalid_client": await refresh(client, wrong, tokens["refresh_token"]),
        "unsupported_grant_type": await client.post(
            "/oauth/token", data={"grant_type": "password", **rest.auth()}
        ),
        "invalid_request": await client.post("/oauth/token", content=b"\xff\xfe", headers=form),
    }
    for error, response in refusals.items():
        assert response.status_code in (400, 401), error
        assert response.json()["error"] == error
        assert response.json()["error_description"], error
    for path in ("/oauth/revoke", "/oauth/introspect"):
        response = await client.post(path, data={"token": "x", **wrong.auth()})
        assert response.json()["error_description"], path


async def test_a_code_dies_with_the_rest_access_it_was_issued_under(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Removing REST access (the app looks compromised) and turning it on again within the code's
    minute must not revive a code issued before the removal."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    removal = await owner.post(
        "/apps/dash/oauth/remove", data={"csrf": await page_csrf(owner, "/apps/dash")}
    )
    assert removal.status_code == 303
    again = await enable_rest(owner, "dash")
    assert (await exchange(client, again, code, verifier)).json()["error"] == "invalid_grant"


async def test_removing_rest_access_asks_for_confirmation_first(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """The app's page only links to a confirmation page; a single press of a button on the
    app's page ended every token and the client secret, which cannot be shown again."""
    app_page = (await owner.get("/apps/dash")).text
    assert 'action="/apps/dash/oauth/remove"' not in app_page
    assert 'href="/apps/dash/oauth/remove"' in app_page
    confirm = await owner.get("/apps/dash/oauth/remove")
    assert confirm.status_code == 200
    assert "Yes, remove REST access for Dash" in confirm.text
    assert harness.app.state.ctx.oauth.client_of("dash") is not None
    removal = await owner.post("/apps/dash/oauth/remove", data={"csrf": csrf_of(confirm.text)})
    assert removal.status_code == 303
    assert harness.app.state.ctx.oauth.client_of("dash") is None
    # With nothing left to remove, the address leads back to the app's page.
    assert (await owner.get("/apps/dash/oauth/remove")).headers["location"] == "/apps/dash"


async def test_codes_expire_after_a_minute(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """An authorisation code is only good for 60 seconds."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    harness.clock.advance(61)
    assert (await exchange(client, rest, code, verifier)).json()["error"] == "invalid_grant"


async def test_refresh_rotates_the_refresh_token(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Each refresh returns a new refresh token and a working access token with the same scopes."""
    tokens = await tokens_for(owner, client, rest, "read:status read:health")
    rotated = await refresh(client, rest, tokens["refresh_token"])
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["scope"] == "read:health read:status"
    me = await client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_a_withdrawn_scope_is_gone_from_introspection_and_refreshed_tokens(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """The owner withdraws a scope from the app: its tokens lose it at once, and introspection
    and a refresh say what they can do now, not what the grant once had."""
    tokens = await tokens_for(owner, client, rest, "read:status read:health")
    harness.registry.withdraw("dash", ["read:health"])
    data = {"token": tokens["access_token"], **rest.auth()}
    assert (await client.post("/oauth/introspect", data=data)).json()["scope"] == "read:status"
    rotated = (await refresh(client, rest, tokens["refresh_token"])).json()
    assert rotated["scope"] == "read:status"
    health = "/api/v1/vehicles/family-car/health"
    denied = await client.get(health, headers=bearer(rotated["access_token"]))
    assert denied.status_code == 403


async def test_with_every_consented_scope_withdrawn_a_refresh_is_refused(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """Nothing left of what the owner consented to: the grant ends (audited), no token for
    nothing, and the app must ask the owner again even if the scope comes back (invalid_grant)."""
    tokens = await tokens_for(owner, client, rest, "read:health")
    harness.registry.withdraw("dash", ["read:health"])
    refused = await refresh(client, rest, tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert harness.audit.items[-1]["kind"] == "oauth.revoked"
    assert harness.audit.items[-1]["reason"] == "scopes_withdrawn"
    # The grant is over: giving the scope back does not revive it without new consent.
    harness.registry.grant("dash", ["read:health"])
    again = await refresh(client, rest, tokens["refresh_token"])
    assert again.status_code == 400


async def test_a_scope_given_back_does_not_revive_a_grant_whose_app_was_idle(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """The grant ends when its last scope is withdrawn, not when the app next calls: after the
    owner gives the scope back, its refresh and access tokens stay dead until a new consent."""
    tokens = await tokens_for(owner, client, rest, "read:health")
    harness.registry.withdraw("dash", ["read:health"])
    harness.clock.advance(60)  # the app does not call meanwhile
    harness.registry.grant("dash", ["read:health"])
    page = await owner.get("/apps/dash")
    assert re.search(r"Active grants</dt>\s*<dd>0<", page.text), "the page still counts it"
    refused = await refresh(client, rest, tokens["refresh_token"])
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    me = await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    data = {"token": tokens["access_token"], **rest.auth()}
    assert (await client.post("/oauth/introspect", data=data)).json() == {"active": False}
    ended = [r for r in harness.audit.items if r["kind"] == "oauth.revoked"]
    assert [r["reason"] for r in ended] == ["scopes_withdrawn"]
    assert (await tokens_for(owner, client, rest, "read:health"))["scope"] == "read:health"


@pytest.mark.parametrize("given_back", [False, True], ids=["withdrawn", "given-back"])
async def test_a_code_is_refused_once_every_consented_scope_was_withdrawn(
    owner: httpx.AsyncClient,
    rest: RestClient,
    client: httpx.AsyncClient,
    harness: Harness,
    given_back: bool,
) -> None:
    """The owner withdrew everything the code was consented for before the app exchanged it:
    invalid_grant, whether or not the scope is back by then, and no token is issued."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge, "read:health")
    harness.registry.withdraw("dash", ["read:health"])
    if given_back:
        harness.registry.grant("dash", ["read:health"])
    refused = await exchange(client, rest, code, verifier)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert harness.store.query("SELECT COUNT(*) FROM oauth_tokens")[0][0] == 0


async def test_a_code_exchanged_after_a_partial_withdrawal_carries_only_what_is_held(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """Some of the consented scopes withdrawn before the exchange: the tokens, and the
    response's `scope`, carry only the ones the app still holds."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge, "read:status read:health")
    harness.registry.withdraw("dash", ["read:health"])
    response = await exchange(client, rest, code, verifier)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read:status"
    stored = harness.store.query("SELECT DISTINCT scopes FROM oauth_tokens")
    assert [row[0] for row in stored] == ["read:status"]


async def test_scopes_withdrawn_in_turn_but_never_all_at_once_keep_the_grant(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """A partial withdrawal only narrows: with one consented scope held at every moment, the
    grant lives on, and a refresh after both came back carries both."""
    tokens = await tokens_for(owner, client, rest, "read:status read:health")
    harness.registry.withdraw("dash", ["read:health"])
    harness.registry.grant("dash", ["read:health"])
    harness.registry.withdraw("dash", ["read:status"])
    harness.registry.grant("dash", ["read:status"])
    rotated = await refresh(client, rest, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["scope"] == "read:health read:status"


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_grant(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """Presenting an already-rotated refresh token kills every token of that grant."""
    tokens = await tokens_for(owner, client, rest)
    newer = (await refresh(client, rest, tokens["refresh_token"])).json()
    replay = await refresh(client, rest, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert (
        await client.get("/api/v1/me", headers=bearer(newer["access_token"]))
    ).status_code == 401
    assert (await refresh(client, rest, newer["refresh_token"])).status_code == 400
    assert "oauth.refresh_reused" in harness.audit.kinds()


async def test_an_app_refreshing_in_a_loop_gets_429_and_cannot_grow_the_database(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """Token responses are limited per client (each stores new rows), and expired tokens are
    swept as new ones are stored: the table holds what is live, not every token ever issued."""
    token = (await tokens_for(owner, client, rest))["refresh_token"]
    statuses = []
    for _ in range(TOKENS_PER_MINUTE + 2):
        response = await refresh(client, rest, token)
        statuses.append(response.status_code)
        token = response.json().get("refresh_token", token)
    assert statuses == [200] * (TOKENS_PER_MINUTE - 1) + [429] * 3  # the exchange was one
    assert (await refresh(client, rest, token)).headers["retry-after"] == "60"
    # Refused requests for a public client's id do not use up the client's allowance.
    public = await add_rest_app(owner, "pub", ["read:status"], kind="public")
    for _ in range(TOKENS_PER_MINUTE + 1):
        assert (await refresh(client, public, "stolen-nothing")).status_code == 400
    assert (await tokens_for(owner, client, public))["access_token"]
    harness.clock.advance(harness.settings.web.refresh_token_ttl_s + 1)
    await login(owner)
    fresh = await tokens_for(owner, client, rest)
    rows = harness.store.query("SELECT count(*) AS n FROM oauth_tokens")[0]["n"]
    assert rows == 2  # the newest access and refresh token, nothing expired
    assert (await refresh(client, rest, fresh["refresh_token"])).status_code == 200


async def test_a_narrower_refresh_narrows_the_access_token_not_the_grant(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """RFC 6749 section 6: asking for less on refresh gives an access token with less, and a
    refresh token with the old one's scopes; the next plain refresh has them all again."""
    tokens = await tokens_for(owner, client, rest, "read:status read:health")
    narrow = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "read:status",
            **rest.auth(),
        },
    )
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["scope"] == "read:status"
    me = await client.get("/api/v1/me", headers=bearer(narrow.json()["access_token"]))
    assert me.json()["scopes"] == ["read:status"]
    again = await refresh(client, rest, narrow.json()["refresh_token"])
    assert again.status_code == 200, again.text
    assert sorted(again.json()["scope"].split()) == ["read:health", "read:status"]


async def test_a_parameter_given_twice_is_refused_before_anything_reads_it(
    owner: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """RFC 6749 forbids repeating a parameter; the token limit read the first client_id and
    oauthlib the last, so `client_id=no-such&client_id=pub` escaped the limit. Now every such
    request is 400 invalid_request, at the token, revocation and introspection endpoints and at
    the consent page (which shows the error, redirecting nowhere), and nothing was issued."""
    public = await add_rest_app(owner, "pub", ["read:status"], kind="public")
    token = (await tokens_for(owner, client, public))["refresh_token"]
    twice = urlencode(
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", "no-such-client"),
            ("client_id", public.client_id),
        ]
    )
    form = {"content-type": "application/x-www-form-urlencoded"}
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        response = await client.post(path, content=twice, headers=form)
        assert response.status_code == 400, path
        assert response.json()["error"] == "invalid_request"
        assert "'client_id' is given more than once" in response.json()["error_description"]
    assert (await refresh(client, public, token)).status_code == 200  # neither used nor revoked
    _, challenge = pkce()
    query = authorize_query(public.client_id, challenge, "read:status") + "&state=other"
    page = await owner.get(f"/oauth/authorize?{query}")
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "given more than once" in page.text


async def test_revoking_a_refresh_token_ends_its_access_tokens(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """RFC 7009: 200, and the grant's access tokens stop working as well."""
    tokens = await tokens_for(owner, client, rest)
    data = {"token": tokens["refresh_token"], "token_type_hint": "refresh_token", **rest.auth()}
    assert (await client.post("/oauth/revoke", data=data)).status_code == 200
    assert (
        await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    assert (await refresh(client, rest, tokens["refresh_token"])).status_code == 400
    assert "oauth.revoked" in harness.audit.kinds()


async def test_revoking_an_access_token_keeps_the_refresh_token(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Revoking only the access token leaves the grant usable through its refresh token."""
    tokens = await tokens_for(owner, client, rest)
    data = {"token": tokens["access_token"], **rest.auth()}
    assert (await client.post("/oauth/revoke", data=data)).status_code == 200
    assert (
        await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    assert (await refresh(client, rest, tokens["refresh_token"])).status_code == 200


async def test_revocation_answers_200_for_unknown_and_foreign_tokens(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Unknown tokens get 200; another client's token gets 200 and is left alone."""
    other = await add_rest_app(owner, "other", ["read:status"])
    tokens = await tokens_for(owner, client, other)
    unknown = await client.post("/oauth/revoke", data={"token": "nonsense", **rest.auth()})
    assert unknown.status_code == 200
    foreign = {"token": tokens["access_token"], **rest.auth()}
    assert (await client.post("/oauth/revoke", data=foreign)).status_code == 200
    assert (
        await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 200


async def test_access_token_expires_after_ten_minutes(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """At 601 seconds the access token is refused; the refresh token still works."""
    tokens = await tokens_for(owner, client, rest)
    harness.clock.advance(599)
    assert (
        await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 200
    harness.clock.advance(2)
    expired = await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert (await refresh(client, rest, tokens["refresh_token"])).status_code == 200


async def test_introspection_reports_only_live_own_tokens(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """RFC 7662: active with scope and expiry for a live token, inactive once expired."""
    tokens = await tokens_for(owner, client, rest)
    data = {"token": tokens["access_token"], **rest.auth()}
    live = (await client.post("/oauth/introspect", data=data)).json()
    assert live["active"] is True
    assert live["scope"] == "read:status"
    assert live["client_id"] == "dash"
    harness.clock.advance(601)
    assert (await client.post("/oauth/introspect", data=data)).json() == {"active": False}


async def test_consent_leaves_location_unticked_and_owner_can_untick_more(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Location is never pre-ticked even when requested; the owner's choice narrows the grant."""
    verifier, challenge = pkce()
    query = authorize_query("dash", challenge, "read:status read:health read:location")
    page = await owner.get(f"/oauth/authorize?{query}")
    location = re.search(r'<input type="checkbox" id="scope-read:location"[^>]*>', page.text)
    assert location and "checked" not in location.group(0)
    health = re.search(r'<input type="checkbox" id="scope-read:health"[^>]*>', page.text)
    assert health and "checked" in health.group(0)
    assert "Dash" in page.text
    code = code_from(await consent(owner, query, ticked=["read:health"]))
    tokens = (await exchange(client, rest, code, verifier)).json()
    assert tokens["scope"] == "read:health"


async def test_denied_consent_sends_access_denied_back(
    owner: httpx.AsyncClient, rest: RestClient, harness: Harness
) -> None:
    """Deny redirects to the app with error=access_denied and its state; audited."""
    _, challenge = pkce()
    response = await consent(
        owner, authorize_query("dash", challenge, "read:status"), decision="deny"
    )
    params = parse_qs(urlsplit(response.headers["location"]).query)
    assert params == {"error": ["access_denied"], "state": ["st4te"]}
    assert harness.audit.items[-1]["decision"] == "denied"


async def test_consent_cannot_exceed_the_apps_registry_scopes(
    owner: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """A scope the app does not hold in the registry cannot be granted, even by a forged form."""
    rest = await add_rest_app(owner, "small", ["read:status"])
    verifier, challenge = pkce()
    query = authorize_query("small", challenge, "read:status command:unlock")
    page = await owner.get(f"/oauth/authorize?{query}")
    assert "not granted to this app" in page.text
    response = await consent(owner, query, ticked=["read:status", "command:unlock"])
    tokens = (await exchange(client, rest, code_from(response), verifier)).json()
    assert tokens["scope"] == "read:status"


async def test_consent_needs_the_owner_logged_in(
    client: httpx.AsyncClient, owner: httpx.AsyncClient, rest: RestClient, client_for: ClientFactory
) -> None:
    """Anonymous visitors go to login; a cross-site arrival gets a same-site continue link."""
    _, challenge = pkce()
    query = authorize_query("dash", challenge, "read:status")
    anonymous = client_for()
    response = await anonymous.get(f"/oauth/authorize?{query}")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=%2Foauth%2Fauthorize")
    arrival = await anonymous.get(
        f"/oauth/authorize?{query}", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert arrival.status_code == 200
    assert "Continue to Ownerlink" in arrival.text


async def test_public_client_uses_pkce_without_a_secret(
    owner: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """A public client authenticates with its id alone; PKCE protects its code."""
    rest = await add_rest_app(
        owner, "phone", ["read:status"], kind="public", uris="com.example.phone:/cb"
    )
    assert rest.secret is None
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge, redirect_uri="com.example.phone:/cb")
    response = await exchange(client, rest, code, verifier, "com.example.phone:/cb")
    assert response.status_code == 200
    assert response.json()["refresh_token"]


async def test_confidential_client_with_wrong_secret_is_refused(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Wrong client_secret (body or Basic) is invalid_client, 401."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    wrong = RestClient("dash", "not-the-secret")
    response = await exchange(client, wrong, code, verifier)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    # RFC 6749 §5.2: the challenge names the scheme a client authenticates with here.
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    basic = await client.post("/oauth/token", data=data, auth=("dash", rest.secret or ""))
    assert basic.status_code == 200


async def test_a_client_authenticating_two_ways_at_once_is_refused(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """RFC 6749 §2.3: one authentication method per request. With HTTP Basic right, a
    client_secret in the body went unchecked whatever it said, and the request was served."""
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    data |= {"redirect_uri": REDIRECT, "client_secret": "anything at all"}
    basic = ("dash", rest.secret or "")
    both = await client.post("/oauth/token", data=data, auth=basic)
    assert both.status_code == 401
    assert both.json()["error"] == "invalid_client"
    for path in ("/oauth/revoke", "/oauth/introspect"):
        refused = await client.post(path, data={"token": "x", "client_secret": "y"}, auth=basic)
        assert refused.status_code == 401, path
    del data["client_secret"]
    assert (await client.post("/oauth/token", data=data, auth=basic)).status_code == 200


async def test_token_endpoint_applies_the_apps_ip_allowlist(
    owner: httpx.AsyncClient, rest: RestClient, client_for: ClientFactory, harness: Harness
) -> None:
    """An app limited to one address cannot redeem its code from another."""
    from dataclasses import replace

    harness.registry.set(replace(harness.registry.require("dash"), allow_cidrs=("127.0.0.7/32",)))
    verifier, challenge = pkce()
    code = await get_code(owner, rest, challenge)
    elsewhere = await exchange(client_for("127.0.0.8"), rest, code, verifier)
    assert elsewhere.status_code == 401
    assert (await exchange(client_for("127.0.0.7"), rest, code, verifier)).status_code == 200


async def test_revoking_the_app_ends_its_tokens_and_client(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient
) -> None:
    """Revoking on the Connected Apps page makes its tokens fail on the very next call."""
    tokens = await tokens_for(owner, client, rest)
    confirm = await owner.get("/apps/dash/revoke")
    from tests.web.support import csrf_of

    await owner.post("/apps/dash/revoke", data={"csrf": csrf_of(confirm.text)})
    assert (
        await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    assert (await refresh(client, rest, tokens["refresh_token"])).status_code == 401


async def test_bad_redirect_uris_cannot_be_registered(owner: httpx.AsyncClient) -> None:
    """http to a non-loopback host, fragments and bare words are refused at registration."""
    from tests.web.support import page_csrf

    form = {"csrf": await page_csrf(owner), "app_id": "web", "scope": ["read:status"]}
    await owner.post("/apps", data=form)
    for uri in ("http://example.com/cb", "https://example.com/cb#x", "callback"):
        form = {
            "csrf": await page_csrf(owner, "/apps/web"),
            "kind": "confidential",
            "redirect_uris": uri,
        }
        assert (await owner.post("/apps/web/oauth", data=form)).status_code == 400


async def test_metadata_document_advertises_only_code_and_s256(client: httpx.AsyncClient) -> None:
    """RFC 8414 metadata: authorization code + refresh grants, S256 only."""
    meta = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint"].endswith("/oauth/token")


async def test_a_reused_app_id_does_not_inherit_old_tokens(
    owner: httpx.AsyncClient, rest: RestClient, client: httpx.AsyncClient, harness: Harness
) -> None:
    """Revoked outside the page and registered again, the id starts with no client or tokens."""
    tokens = await tokens_for(owner, client, rest)
    harness.registry.revoke("dash")  # as `ownerlink apps revoke` would
    harness.clock.advance(1)
    again = await add_rest_app(owner, "dash", SCOPES)
    assert (
        await client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    assert (await refresh(client, again, tokens["refresh_token"])).status_code == 400
    assert (await tokens_for(owner, client, again))["access_token"]


async def test_consent_for_a_disabled_app_says_it_is_disabled_and_never_redirects(
    owner: httpx.AsyncClient, rest: RestClient
) -> None:
    """A paused app's request once answered 'invalid_request: Invalid client_id parameter
    value', as if the app were gone or forged: the owner is told it is disabled and where to
    enable it, and the app gets nothing."""
    form = {"csrf": await page_csrf(owner, "/apps/dash")}
    assert (await owner.post("/apps/dash/disable", data=form)).status_code == 303
    _, challenge = pkce()
    page = await owner.get(f"/oauth/authorize?{authorize_query('dash', challenge, 'read:status')}")
    assert page.status_code == 409
    assert "location" not in page.headers
    assert "Dash is disabled" in page.text
    assert 'href="/apps/dash"' in page.text
    assert "Invalid client_id" not in page.text
