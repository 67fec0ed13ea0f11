"""The OAuth client: authorise URLs for both surfaces, PKCE, state checks, the token endpoint."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bridge.errors import AuthUnavailable, LoginError
from bridge.providers.oauth import (
    QUERY_AUTHORIZE_URL,
    QUERY_TOKEN_URL,
    V1_AUTHORIZE_URL,
    V1_TOKEN_URL,
    build_authorize_url,
    parse_redirect,
    pkce_challenge,
    start_login,
    token_endpoint,
)
from tests.providers.support import AUTHORIZE_URL, account_config, form_of, ok, rig


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_pkce_challenge_matches_the_rfc_7636_example() -> None:
    """S256 of RFC 7636 appendix B's verifier gives the RFC's challenge."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_v1_authorize_url_has_fords_parameters_and_pkce() -> None:
    """v1: make=F, application_id, client_id, code, state, redirect_uri, scope=access, S256."""
    login = start_login(account_config("fordconnect"), now=0)
    params = _query(login.url)
    assert login.url.startswith(AUTHORIZE_URL + "?")
    assert params["make"] == "F"
    assert params["application_id"] == "app-id-123"
    assert params["client_id"] == "client-abc"
    assert params["response_type"] == "code"
    assert params["scope"] == "access"
    assert params["state"] == login.state
    assert params["redirect_uri"] == "http://127.0.0.1:8742/callback"
    assert login.code_verifier is not None
    assert params["code_challenge"] == pkce_challenge(login.code_verifier)
    assert params["code_challenge_method"] == "S256"


def test_query_authorize_url_keeps_state_within_16_bytes() -> None:
    """Query: a random state of at most 16 bytes, and no v1-only parameters."""
    states = {start_login(account_config("fordconnect-query"), now=0).state for _ in range(50)}
    assert len(states) == 50  # random, never reused
    assert all(len(s.encode()) <= 16 for s in states)
    params = _query(start_login(account_config("fordconnect-query"), now=0).url)
    assert "make" not in params and "application_id" not in params


def test_query_refuses_a_state_longer_than_16_bytes() -> None:
    """Building a Query authorise URL with a 17-byte state is a programming error, caught early."""
    with pytest.raises(ValueError, match="16 bytes"):
        build_authorize_url(account_config("fordconnect-query"), state="x" * 17, code_verifier=None)


def test_without_pkce_no_challenge_is_sent() -> None:
    """use_pkce: false sends no code_challenge and keeps no verifier."""
    login = start_login(account_config("fordconnect", use_pkce=False), now=0)
    assert login.code_verifier is None
    assert "code_challenge" not in _query(login.url)


def test_fords_urls_are_the_defaults() -> None:
    """Without configured URLs the account uses Ford's authorise and token endpoints."""
    v1 = account_config("fordconnect", authorize_url=None, token_url=None)
    query = account_config("fordconnect-query", authorize_url=None, token_url=None)
    assert start_login(v1, now=0).url.startswith(V1_AUTHORIZE_URL + "?")
    assert start_login(query, now=0).url.startswith(QUERY_AUTHORIZE_URL + "?")
    assert token_endpoint(v1) == V1_TOKEN_URL
    assert token_endpoint(query) == QUERY_TOKEN_URL


def test_parse_redirect_returns_the_code_when_state_matches() -> None:
    """The code comes back when the redirect's state is the one we sent."""
    url = "http://127.0.0.1:8742/callback?code=abc123&state=s1"
    assert parse_redirect(url, expected_state="s1") == "abc123"


def test_parse_redirect_refuses_a_state_mismatch() -> None:
    """A redirect with another login's state raises LoginError (CSRF or a stale URL)."""
    with pytest.raises(LoginError, match="state does not match"):
        parse_redirect("http://h/cb?code=abc&state=other", expected_state="mine")


def test_parse_redirect_reports_a_denied_consent() -> None:
    """`error=access_denied` on the redirect raises LoginError saying access was not granted."""
    with pytest.raises(LoginError, match="did not grant"):
        parse_redirect("http://h/cb?error=access_denied&state=s", expected_state="s")


def test_parse_redirect_needs_a_code() -> None:
    """A redirect without a code raises LoginError."""
    with pytest.raises(LoginError, match="no authorisation code"):
        parse_redirect("http://h/cb?state=s", expected_state="s")


async def test_exchange_code_sends_the_verifier_and_client_credentials(tmp_path: Path) -> None:
    """The code grant posts code, redirect_uri, code_verifier, client_id and client_secret."""
    r = rig(tmp_path, logged_in=False)
    tokens = await r.parts.oauth.exchange_code("the-code", code_verifier="v" * 64)
    form = form_of(r.ford.token_requests()[0])
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "http://127.0.0.1:8742/callback",
        "code_verifier": "v" * 64,
        "client_id": "client-abc",
        "client_secret": "client-secret-xyz",
    }
    assert tokens.refresh_token == "refresh-0001-secretish"
    assert tokens.expires_at == r.clock.now + 1200
    await r.parts.api.aclose()


@pytest.mark.parametrize("expires_in", ["NaN", "Infinity", "1e400", -30, 0])
async def test_an_unusable_token_lifetime_counts_as_ford_s_20_minutes(
    tmp_path: Path, expires_in: float | str
) -> None:
    """A stated lifetime that is not a finite positive number is taken as the documented 20 min."""
    r = rig(tmp_path, logged_in=False)
    r.ford.expires_in = expires_in
    tokens = await r.parts.oauth.exchange_code("the-code", code_verifier=None)
    assert tokens.expires_at == r.clock.now + 20 * 60
    await r.parts.api.aclose()


async def test_query_token_requests_ask_for_offline_access(tmp_path: Path) -> None:
    """Query token requests carry `scope=<client_id> offline_access openid`."""
    r = rig(tmp_path, "fordconnect-query", logged_in=False)
    await r.parts.oauth.exchange_code("c", code_verifier=None)
    assert form_of(r.ford.token_requests()[0])["scope"] == "client-abc offline_access openid"
    await r.parts.api.aclose()


async def test_a_dead_code_is_a_login_error(tmp_path: Path) -> None:
    """invalid_grant on the code exchange raises LoginError (wrong, used or expired code)."""
    r = rig(tmp_path, logged_in=False)
    r.ford.token_error = ok({"error": "invalid_grant", "error_description": "code expired"}, 400)
    with pytest.raises(LoginError, match="refused the authorisation code"):
        await r.parts.oauth.exchange_code("stale", code_verifier=None)
    await r.parts.api.aclose()


async def test_refresh_keeps_the_old_refresh_token_when_none_is_rotated_in(tmp_path: Path) -> None:
    """A refresh answer without a refresh_token keeps using the one we have."""
    r = rig(tmp_path, logged_in=False)
    r.ford.rotate = False
    tokens = await r.parts.oauth.refresh("refresh-old-secretish")
    assert tokens.refresh_token == "refresh-old-secretish"
    await r.parts.api.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        ok({"error": "temporarily_unavailable"}, 503),
        ok({"error": "invalid_request"}, 400),  # not the refresh token's fault: no relogin
        ok({"token_type": "Bearer"}),  # no access token in it
    ],
)
async def test_a_failing_token_endpoint_is_an_authentication_outage(
    tmp_path: Path, answer: httpx.Response
) -> None:
    """A refresh the token endpoint fails (other than invalid_grant) is AuthUnavailable: never
    NotFound (which the poller would take for one car missing from the consent), so the account's
    cars are shown unavailable and the breaker backs off."""
    r = rig(tmp_path, logged_in=False)
    r.ford.token_error = answer
    with pytest.raises(AuthUnavailable, match="token endpoint"):
        await r.parts.oauth.refresh("refresh-old-secretish")
    await r.parts.api.aclose()
