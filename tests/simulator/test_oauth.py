"""OAuth 2.0 against the simulator: consent, codes, PKCE, rotation and client authentication."""

from __future__ import annotations

import base64

import httpx

from bridge.simulator import Simulator, create_app
from tests.simulator.support import (
    CLIENT,
    REDIRECT,
    V1,
    FakeMonotonic,
    authorize_params,
    exchange,
    get_code,
    login,
    redirect_params,
    refresh,
    v1_headers,
)

TOKEN_FIELDS = {
    "access_token",
    "token_type",
    "expires_in",
    "expires_on",
    "refresh_token",
    "refresh_token_expires_in",
    "id_token",
    "scope",
}


async def test_consent_page_shows_an_approve_form(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """Without auto-consent, authorise shows an HTML page with Approve and Deny buttons."""
    sim.auto_consent = False
    response = await client.get("/oauth/authorize", params=authorize_params())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'value="approve"' in response.text and 'method="post"' in response.text


async def test_approving_the_form_redirects_with_code_and_state(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """POSTing the consent form with approve redirects to redirect_uri with code and state."""
    sim.auto_consent = False
    form = {**authorize_params(), "decision": "approve", "vehicle": sim.vehicles[1].vehicle_id}
    params = redirect_params(await client.post("/oauth/authorize", data=form))
    assert params["state"] == "st-1" and params["code"]
    token = (await exchange(client, params["code"])).json()["access_token"]
    listing = (await client.get(V1, headers=v1_headers(token))).json()["vehicles"]
    assert [v["vehicleId"] for v in listing] == [sim.vehicles[1].vehicle_id]


async def test_denying_consent_redirects_with_access_denied(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """The Deny button sends the owner back with error=access_denied and no code."""
    sim.auto_consent = False
    form = {**authorize_params(), "decision": "deny"}
    params = redirect_params(await client.post("/oauth/authorize", data=form))
    assert params == {"error": "access_denied", "state": "st-1"}


async def test_auto_consent_redirects_at_once(client: httpx.AsyncClient) -> None:
    """With auto_consent the authorise URL redirects straight back with a code."""
    response = await client.get("/oauth/authorize", params=authorize_params())
    assert redirect_params(response)["state"] == "st-1"


async def test_unknown_client_gets_an_error_page_not_a_redirect(client: httpx.AsyncClient) -> None:
    """An unregistered client_id is refused on the page, never redirected (RFC 6749 §4.1.2.1)."""
    response = await client.get("/oauth/authorize", params=authorize_params(client_id="evil"))
    assert response.status_code == 400 and "location" not in response.headers


async def test_wrong_response_type_redirects_with_error(client: httpx.AsyncClient) -> None:
    """response_type other than `code` comes back as unsupported_response_type."""
    response = await client.get("/oauth/authorize", params=authorize_params(response_type="token"))
    assert redirect_params(response)["error"] == "unsupported_response_type"


async def test_plain_pkce_is_refused(client: httpx.AsyncClient) -> None:
    """Only the S256 PKCE method is accepted."""
    params = authorize_params(code_challenge_method="plain")
    assert redirect_params(await client.get("/oauth/authorize", params=params))["error"] == (
        "invalid_request"
    )


async def test_unknown_vehicle_on_authorise_is_invalid_request(client: httpx.AsyncClient) -> None:
    """Asking to consent to a vehicle that does not exist redirects with invalid_request."""
    params = authorize_params(vehicle="f" * 32)
    assert redirect_params(await client.get("/oauth/authorize", params=params))["error"] == (
        "invalid_request"
    )


async def test_token_response_has_every_field(client: httpx.AsyncClient) -> None:
    """The code exchange answers every field Ford's token endpoint does, with default lifetimes."""
    body = await login(client)
    assert set(body) == TOKEN_FIELDS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1200 and body["refresh_token_expires_in"] == 90 * 86400


async def test_pkce_with_the_wrong_verifier_is_invalid_grant(client: httpx.AsyncClient) -> None:
    """A code_verifier that does not hash to the challenge is refused with invalid_grant."""
    response = await exchange(client, await get_code(client), code_verifier="x" * 50)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_non_ascii_credentials_and_verifiers_are_refused_not_errors(
    client: httpx.AsyncClient,
) -> None:
    """A client id, secret or verifier outside ASCII is just wrong: 400 or 401, never a 500."""
    verifier = await exchange(client, await get_code(client), code_verifier="\u00e9" * 50)
    assert verifier.status_code == 400 and verifier.json()["error"] == "invalid_grant"
    secret = await exchange(client, await get_code(client), client_secret="s\u00e9cret")
    assert secret.status_code == 401 and secret.json()["error"] == "invalid_client"
    client_id = await exchange(client, await get_code(client), client_id="\u2603")
    assert client_id.status_code == 401 and client_id.json()["error"] == "invalid_client"
    page = await client.get("/oauth/authorize", params=authorize_params(client_id="\u2603"))
    assert page.status_code == 400


async def test_pkce_without_a_verifier_is_invalid_grant(client: httpx.AsyncClient) -> None:
    """A code issued with a challenge cannot be redeemed without a verifier."""
    code = await get_code(client)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **CLIENT}
    response = await client.post("/oauth/token", data=form)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_code_without_pkce_needs_no_verifier(client: httpx.AsyncClient) -> None:
    """PKCE is optional: a code issued without a challenge is redeemed without a verifier."""
    response = await client.get(
        "/oauth/authorize",
        params={k: v for k, v in authorize_params().items() if not k.startswith("code_challenge")},
    )
    code = redirect_params(response)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **CLIENT}
    assert (await client.post("/oauth/token", data=form)).status_code == 200


async def test_a_code_is_single_use(client: httpx.AsyncClient) -> None:
    """Redeeming the same code twice fails the second time with invalid_grant."""
    code = await get_code(client)
    assert (await exchange(client, code)).status_code == 200
    second = await exchange(client, code)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"


async def test_an_expired_code_is_invalid_grant(
    client: httpx.AsyncClient, mono: FakeMonotonic
) -> None:
    """Codes live 60 real seconds."""
    code = await get_code(client)
    mono.advance(61)
    response = await exchange(client, code)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_redirect_uri_must_match(client: httpx.AsyncClient) -> None:
    """The token request's redirect_uri must be the one the code was issued for."""
    response = await exchange(client, await get_code(client), redirect_uri="http://elsewhere/cb")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_wrong_client_secret_is_invalid_client(client: httpx.AsyncClient) -> None:
    """A wrong client secret gets 401 invalid_client."""
    response = await exchange(client, await get_code(client), client_secret="nope")
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_client_credentials_may_come_as_basic_auth(client: httpx.AsyncClient) -> None:
    """HTTP Basic client authentication works as well as form fields."""
    code = await get_code(client)
    basic = base64.b64encode(b"ownerlink-sim:sim-secret").decode()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": "a-verifier-long-enough-for-rfc-7636-0123456789abcdef",
    }
    response = await client.post(
        "/oauth/token", data=form, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200


async def test_unknown_grant_type_is_refused(client: httpx.AsyncClient) -> None:
    """grant_type=password (or anything else unsupported) gets unsupported_grant_type."""
    response = await client.post("/oauth/token", data={"grant_type": "password", **CLIENT})
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


async def test_refresh_rotates_the_refresh_token(client: httpx.AsyncClient) -> None:
    """Each refresh returns a new refresh token and a working access token."""
    first = await login(client)
    second = (await refresh(client, first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    listing = await client.get(V1, headers=v1_headers(second["access_token"]))
    assert listing.status_code == 200


async def test_an_old_refresh_token_is_invalid_grant(client: httpx.AsyncClient) -> None:
    """After rotation the previous refresh token stops working."""
    first = await login(client)
    assert (await refresh(client, first["refresh_token"])).status_code == 200
    reused = await refresh(client, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


async def test_refresh_tokens_expire_after_ninety_days(client: httpx.AsyncClient, clock) -> None:
    """A refresh token unused for 90 simulated days is dead."""
    first = await login(client)
    clock.advance(90 * 86400 + 1)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_access_tokens_expire_in_simulated_time(client: httpx.AsyncClient, clock) -> None:
    """An access token dies after its lifetime (20 simulated minutes by default)."""
    token = (await login(client))["access_token"]
    clock.advance(1199)
    assert (await client.get(V1, headers=v1_headers(token))).status_code == 200
    clock.advance(2)
    response = await client.get(V1, headers=v1_headers(token))
    assert response.status_code == 401 and response.json() == {"error": "invalid_token"}


async def test_login_hint_returns_to_the_same_account(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """Two consents with the same login_hint share one account (and its rate limits)."""
    await login(client, login_hint="owner@example.com")
    await login(client, login_hint="owner@example.com", vehicle=sim.vehicles[2].vehicle_id)
    await login(client)
    accounts = list(sim.auth.accounts.values())
    assert len(accounts) == 2
    assert accounts[0].vehicle_ids == [sim.vehicles[0].vehicle_id, sim.vehicles[2].vehicle_id]


async def test_token_lifetime_is_configurable() -> None:
    """Simulator(token_lifetime=...) sets expires_in."""
    sim = Simulator(vehicles=1, auto_consent=True, token_lifetime=300)
    transport = httpx.ASGITransport(create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as c:
        assert (await login(c))["expires_in"] == 300
