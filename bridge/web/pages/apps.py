"""The Connected Apps page: list, add, change scopes, enable REST access, revoke.

Every change goes through the registry's own functions (the ones `ownerlink apps` calls), so the
rules, audit records and alerts are the same whichever surface the owner uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.errors import AccessError
from bridge.model import App, Scope
from bridge.web.context import WebContext, ctx
from bridge.web.guards import OwnerSession, checked_form
from bridge.web.render import page
from bridge.web.scopes_ui import parse_scopes

router = APIRouter(include_in_schema=False)

# Written to the registry's audit records: the change came from the owner page, not the CLI.
ACTOR = "web"


async def _newest_by_app(context: WebContext, limit: int) -> dict[str, list[Mapping[str, Any]]]:
    """Each app's newest audit records (newest first), from one pass over the log."""
    records = await run_in_threadpool(lambda: list(context.audit_reader.records()))
    out: dict[str, list[Mapping[str, Any]]] = {}
    for record in reversed(records):
        app = record.get("app")
        if isinstance(app, str) and len(out.setdefault(app, [])) < limit:
            out[app].append(record)
    return out


async def _change(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a registry change in a worker thread: it may wait on the broker, and the event loop
    (which also carries the MQTT replies it waits for) must stay free meanwhile."""
    return await run_in_threadpool(call, *args, actor=ACTOR, **kwargs)


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _flash(request: Request, message: str) -> None:
    context, session = ctx(request), request.state.session
    context.once.put(session.id_hash, "flash", message)


def _take_flash(request: Request) -> str | None:
    return ctx(request).once.take(request.state.session.id_hash, "flash")


def _app_or_404(context: WebContext, app_id: str) -> App:
    app = context.registry.get(app_id)
    if app is None:
        raise HTTPException(404, f"There is no app {app_id!r}.")
    return app


@router.get("/apps")
async def list_apps(request: Request, session: OwnerSession) -> Response:
    return await _apps_page(request, form={})


async def _apps_page(
    request: Request, *, form: Mapping[str, Any], error: str | None = None
) -> Response:
    context = ctx(request)
    activity = await _newest_by_app(context, 3)
    rows = [
        {
            "app": app,
            "rest": context.oauth.client_of(app.id) is not None,
            "activity": activity.get(app.id, []),
        }
        for app in context.registry.list()
    ]
    status = 400 if error else 200
    return page(
        request, "apps.html", status, apps=rows, form=form, error=error, flash=_take_flash(request)
    )


@router.post("/apps")
async def add_app(request: Request, session: OwnerSession) -> Response:
    """Register an app through the registry; its password goes to the one-time box."""
    form = await checked_form(request, session)
    app_id = str(form.get("app_id", "")).strip()
    name = str(form.get("name", "")).strip() or app_id
    scopes = parse_scopes([str(v) for v in form.getlist("scope")])
    try:
        # Ticking the location box on this form is the owner's explicit opt-in.
        added = await _change(
            ctx(request).registry.add,
            app_id,
            name=name,
            scopes=scopes,
            allow_location=Scope.READ_LOCATION in scopes,
        )
    except AccessError as exc:
        echo = {"app_id": app_id, "name": name, "scopes": sorted(scopes)}
        return await _apps_page(request, form=echo, error=str(exc))
    ctx(request).once.put(session.id_hash, f"password:{added.app.id}", added.password)
    return _see_other(f"/apps/{added.app.id}/created")


@router.get("/apps/{app_id}/created")
async def app_created(request: Request, app_id: str, session: OwnerSession) -> Response:
    """The broker password, once: a reload finds the box empty."""
    secret = ctx(request).once.take(session.id_hash, f"password:{app_id}")
    return page(
        request,
        "secret_once.html",
        heading=f"App {app_id} added",
        intro="Configure the app with these MQTT credentials.",
        pairs=[("Username", app_id)],
        value_label="Password",
        secret=secret,
        back=f"/apps/{app_id}",
    )


@router.get("/apps/{app_id}")
async def app_detail(request: Request, app_id: str, session: OwnerSession) -> Response:
    """One app: scopes, limits, REST access, activity, revoke link."""
    context = ctx(request)
    app = _app_or_404(context, app_id)
    client = context.oauth.client_of(app.id)
    grants = context.oauth.store.active_grants(app.id, now=context.clock().timestamp())
    activity = await _newest_by_app(context, 20)
    return page(
        request,
        "app_detail.html",
        app=app,
        client=client,
        grants=grants,
        activity=activity.get(app.id, []),
        flash=_take_flash(request),
        default_rate=context.settings.commands.rate_limit_per_minute,
    )


@router.post("/apps/{app_id}/scopes")
async def change_scopes(request: Request, app_id: str, session: OwnerSession) -> Response:
    """Grant the newly ticked scopes and withdraw the unticked ones."""
    form = await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    wanted = parse_scopes([str(v) for v in form.getlist("scope")])
    added, removed = wanted - app.scopes, app.scopes - wanted
    # Withdraw first: if granting then fails, the app has lost access rather than gained it.
    if removed:
        await _change(context.registry.withdraw, app.id, removed)
    if added:
        await _change(
            context.registry.grant, app.id, added, allow_location=Scope.READ_LOCATION in added
        )
    _flash(request, _describe_change(added, removed))
    return _see_other(f"/apps/{app.id}")


def _describe_change(added: Iterable[Any], removed: Iterable[Any]) -> str:
    parts = []
    if added:
        parts.append("granted " + ", ".join(sorted(map(str, added))))
    if removed:
        parts.append("withdrew " + ", ".join(sorted(map(str, removed))))
    return ("Scopes changed: " + "; ".join(parts)) if parts else "Scopes unchanged."


@router.get("/apps/{app_id}/revoke")
async def confirm_revoke(request: Request, app_id: str, session: OwnerSession) -> Response:
    return page(request, "app_revoke.html", app=_app_or_404(ctx(request), app_id))


@router.post("/apps/{app_id}/revoke")
async def revoke(request: Request, app_id: str, session: OwnerSession) -> Response:
    await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    await _change(context.registry.revoke, app.id)
    context.oauth.remove_client(app.id)
    _flash(request, f"Revoked {app.name} ({app.id}).")
    return _see_other("/apps")


@router.post("/apps/{app_id}/limits")
async def change_limits(request: Request, app_id: str, session: OwnerSession) -> Response:
    """The app's IP allowlist (for REST calls) and command rate limit, as `apps allowlist` and
    `apps rate-limit` set them."""
    form = await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    cidrs = [c for c in str(form.get("allow_cidrs", "")).replace(",", " ").split() if c]
    rate = str(form.get("rate_limit", "")).strip()
    if tuple(cidrs) != app.allow_cidrs:
        await _change(context.registry.set_allowlist, app.id, cidrs)
    if rate != str(app.rate_limit_per_minute or ""):
        if rate and not rate.isdigit():
            raise AccessError("the rate limit must be a whole number of commands per minute")
        await _change(context.registry.set_rate_limit, app.id, int(rate) if rate else None)
    _flash(request, "Limits saved.")
    return _see_other(f"/apps/{app.id}")


@router.post("/apps/{app_id}/oauth")
async def enable_rest(request: Request, app_id: str, session: OwnerSession) -> Response:
    """Make the app an OAuth client; a client secret is shown once."""
    form = await checked_form(request, session)
    context = ctx(request)
    uris = [line.strip() for line in str(form.get("redirect_uris", "")).splitlines()]
    secret = context.oauth.register_client(
        app_id, kind=str(form.get("kind", "")), uris=[u for u in uris if u]
    )
    context.once.put(session.id_hash, f"client:{app_id}", secret or "")
    return _see_other(f"/apps/{app_id}/oauth/created")


@router.get("/apps/{app_id}/oauth/created")
async def rest_enabled(request: Request, app_id: str, session: OwnerSession) -> Response:
    """The new client secret, once (public clients have none)."""
    secret = ctx(request).once.take(session.id_hash, f"client:{app_id}")
    if secret == "":
        _flash(request, f"REST access enabled for public client {app_id} (no secret; PKCE).")
        return _see_other(f"/apps/{app_id}")
    return page(
        request,
        "secret_once.html",
        heading=f"REST access for {app_id}",
        intro="Configure the app's OAuth 2.0 client with these values.",
        pairs=[("Client id", app_id)],
        value_label="Client secret",
        secret=secret,
        back=f"/apps/{app_id}",
    )


@router.post("/apps/{app_id}/oauth/remove")
async def disable_rest(request: Request, app_id: str, session: OwnerSession) -> Response:
    await checked_form(request, session)
    ctx(request).oauth.remove_client(app_id)
    _flash(request, f"REST access removed for {app_id}; its tokens no longer work.")
    return _see_other(f"/apps/{app_id}")
