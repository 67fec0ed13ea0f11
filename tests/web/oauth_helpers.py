"""Helpers that walk the OAuth flow the way an app and the owner's browser would."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.web.support import csrf_of, page_csrf

REDIRECT = "http://127.0.0.1:9999/callback"
QUERY_FIELD = re.compile(r'name="query" value="([^"]*)"')
SECRET = re.compile(r'data-testid="secret">([^<]+)<')


def pkce() -> tuple[str, str]:
    """A (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class RestClient:
    client_id: str
    secret: str | None

    def auth(self) -> dict[str, str]:
        """Client authentication in the body (client_secret_post, or `none` for public ones)."""
        out = {"client_id": self.client_id}
        if self.secret:
            out["client_secret"] = self.secret
        return out


async def add_rest_app(
    owner: httpx.AsyncClient,
    app_id: str,
    scopes: list[str],
    *,
    kind: str = "confidential",
    uris: str = REDIRECT,
) -> RestClient:
    """Register an app and enable REST access for it, through the owner pages."""
    form = {
        "csrf": await page_csrf(owner),
        "app_id": app_id,
        "name": app_id.title(),
        "scope": scopes,
    }
    assert (await owner.post("/apps", data=form)).status_code == 303
    return await enable_rest(owner, app_id, kind=kind, uris=uris)


async def enable_rest(
    owner: httpx.AsyncClient, app_id: str, *, kind: str = "confidential", uris: str = REDIRECT
) -> RestClient:
    """Turn on REST access for a registered app, through its page."""
    form = {"csrf": await page_csrf(owner, f"/apps/{app_id}"), "kind": kind, "redirect_uris": uris}
    response = await owner.post(f"/apps/{app_id}/oauth", data=form)
    assert response.status_code == 303, response.text
    page = await owner.get(response.headers["location"])
    match = SECRET.search(page.text)
    return RestClient(app_id, html.unescape(match.group(1)) if match else None)


def authorize_query(
    client_id: str,
    challenge: str | None,
    scopes: str,
    *,
    redirect_uri: str = REDIRECT,
    state: str = "st4te",
    **extra: str,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scopes,
        "state": state,
        **extra,
    }
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    return urlencode(params)


async def consent(
    owner: httpx.AsyncClient,
    query: str,
    *,
    ticked: list[str] | None = None,
    decision: str = "allow",
) -> httpx.Response:
    """Open the consent page for `query` and submit it; `ticked` None keeps the pre-ticked set."""
    page = await owner.get(f"/oauth/authorize?{query}")
    assert page.status_code == 200, page.text
    hidden = html.unescape(QUERY_FIELD.search(page.text).group(1))  # type: ignore[union-attr]
    if ticked is None:
        ticked = re.findall(r'name="scope" value="([^"]+)"\s+checked', page.text)
    form = {"csrf": csrf_of(page.text), "query": hidden, "scope": ticked, "decision": decision}
    return await owner.post("/oauth/authorize", data=form)


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    params = parse_qs(urlsplit(response.headers["location"]).query)
    assert "code" in params, response.headers["location"]
    return params["code"][0]


async def get_code(
    owner: httpx.AsyncClient,
    client: RestClient,
    challenge: str,
    scopes: str = "read:status",
    **extra: str,
) -> str:
    """Ask for `scopes` and let the owner tick exactly those (location included)."""
    query = authorize_query(client.client_id, challenge, scopes, **extra)
    return code_from(await consent(owner, query, ticked=scopes.split()))


async def exchange(
    http: httpx.AsyncClient,
    client: RestClient,
    code: str,
    verifier: str | None,
    redirect_uri: str = REDIRECT,
) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        **client.auth(),
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    return await http.post("/oauth/token", data=data)


async def refresh(http: httpx.AsyncClient, client: RestClient, token: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, **client.auth()}
    return await http.post("/oauth/token", data=data)


async def tokens_for(
    owner: httpx.AsyncClient,
    http: httpx.AsyncClient,
    client: RestClient,
    scopes: str = "read:status",
) -> dict[str, Any]:
    """The whole flow: consent, code, exchange; returns the token response."""
    verifier, challenge = pkce()
    code = await get_code(owner, client, challenge, scopes)
    response = await exchange(http, client, code, verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
