"""OAuth 2.0 routes: the consent page `/oauth/authorize` and the token endpoint `/oauth/token`."""

from __future__ import annotations

import base64
import binascii
import html
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.auth import OAuthError
from bridge.simulator.faults import TRANSPORT_FAULTS, FaultKind
from bridge.simulator.guard import after
from bridge.simulator.world import Simulator

PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "vehicle",
    "login_hint",
)
DEFAULT_SCOPE = "access"


def _redirect(uri: str, params: Mapping[str, str | None]) -> RedirectResponse:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query) + [(k, v) for k, v in params.items() if v is not None]
    return RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), status_code=302)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status,
    )


def _problem(sim: Simulator, p: Mapping[str, str]) -> Response | None:
    """Refusals: unknown client or bad redirect_uri (no redirect), or an error redirect."""
    if not sim.auth.client_matches(p.get("client_id", "")):
        return _page("Unknown client", "<p>This application is not registered.</p>", 400)
    uri = p.get("redirect_uri", "")
    if urlsplit(uri).scheme not in {"http", "https"}:
        return _page("Bad redirect", "<p>redirect_uri must be an http(s) URL.</p>", 400)
    state = p.get("state")
    if p.get("response_type") != "code":
        return _redirect(uri, {"error": "unsupported_response_type", "state": state})
    if p.get("code_challenge") and p.get("code_challenge_method") != "S256":
        return _redirect(
            uri,
            {
                "error": "invalid_request",
                "state": state,
                "error_description": "code_challenge_method must be S256",
            },
        )
    try:
        sim.vehicle_ids_for(_requested_vehicles(p))
    except ValueError as exc:
        return _redirect(
            uri, {"error": "invalid_request", "state": state, "error_description": str(exc)}
        )
    return None


def _approve(sim: Simulator, p: Mapping[str, str]) -> Response:
    code = sim.consent(
        vehicle_ids=sim.vehicle_ids_for(_requested_vehicles(p)),
        login_hint=p.get("login_hint") or None,
        redirect_uri=p["redirect_uri"],
        challenge=p.get("code_challenge") or None,
        scope=p.get("scope") or DEFAULT_SCOPE,
    )
    return _redirect(p["redirect_uri"], {"code": code, "state": p.get("state")})


def _consent_page(sim: Simulator, p: Mapping[str, str]) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(p[k])}">'
        for k in PARAMS
        if k in p and k != "vehicle"
    )
    chosen = set(sim.vehicle_ids_for(_requested_vehicles(p)))
    boxes = "".join(
        f'<p><label><input type="checkbox" name="vehicle" value="{v.vehicle_id}"'
        f"{' checked' if v.vehicle_id in chosen else ''}> {html.escape(v.spec.nickname)} — "
        f"{html.escape(v.spec.model_name)}</label></p>"
        for v in sim.vehicles
    )
    form = (
        f'<form method="post">{hidden}<p>An application asks to access your vehicles.</p>'
        f'{boxes}<button name="decision" value="approve">Approve</button> '
        '<button name="decision" value="deny">Deny</button></form>'
    )
    return _page("Ownerlink simulator — consent", form)


async def authorize(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    params = dict(request.query_params)
    problem = _problem(sim, params)
    if problem is not None:
        return problem
    return _approve(sim, params) if sim.auto_consent else _consent_page(sim, params)


async def authorize_decision(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    data = await request.form()
    form = {k: v for k, v in data.items() if isinstance(v, str)}
    # Ticked vehicles arrive as repeated fields; none ticked means the default (the first).
    form["vehicle"] = ",".join(v for v in data.getlist("vehicle") if isinstance(v, str))
    problem = _problem(sim, form)
    if problem is not None:
        return problem
    if form.get("decision") != "approve":
        return _redirect(
            form["redirect_uri"], {"error": "access_denied", "state": form.get("state")}
        )
    return _approve(sim, form)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _oauth_error(exc: OAuthError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description}, status_code=exc.status
    )


def _grant(sim: Simulator, request: Request, form: dict[str, str]) -> JSONResponse:
    client_id, secret = _basic_credentials(request) or (
        form.get("client_id", ""),
        form.get("client_secret", ""),
    )
    with sim.lock:
        if not sim.auth.client_matches(client_id, secret):
            raise OAuthError(401, "invalid_client", "unknown client or wrong client secret")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            body = sim.auth.exchange_code(form, sim.now())
        elif grant_type == "refresh_token":
            body = sim.auth.refresh(form, sim.now())
        else:
            raise OAuthError(400, "unsupported_grant_type", f"grant_type {grant_type!r}")
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def token(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    with sim.lock:
        fault = sim.faults.roll(TRANSPORT_FAULTS)
        status = sim.faults.pick_status() if fault is FaultKind.SERVER_ERROR else 0
    if status:
        return JSONResponse(
            {"error": "server_error", "error_description": "simulated outage"}, status_code=status
        )
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    try:
        response: Response = _grant(sim, request, form)
    except OAuthError as exc:
        response = _oauth_error(exc)
    return await after(sim, fault, response)


def routes() -> list[BaseRoute]:
    return [
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/oauth/authorize", authorize_decision, methods=["POST"]),
        Route("/oauth/token", token, methods=["POST"]),
    ]


def _requested_vehicles(p: Mapping[str, str]) -> str | None:
    """A v1 consent (it names an application id) covers every vehicle unless the owner picks;
    a Query consent binds one vehicle, the first by default, as Ford's does."""
    return p.get("vehicle") or ("all" if p.get("application_id") else None)
