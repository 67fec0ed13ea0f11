"""The Connected Apps page: list, add, change scopes and limits, enable REST access, disable or
enable, revoke.

Every change goes through the registry's own functions (the ones `ownerlink apps` calls), so the
rules, audit records and alerts are the same whichever surface the owner uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.access import validation
from bridge.errors import AccessError
from bridge.model import App, Scope
from bridge.web.context import WebContext, ctx
from bridge.web.guards import checked_form
from bridge.web.pagerouter import PageRouter
from bridge.web.render import page
from bridge.web.scopes_ui import parse_scopes
from bridge.web.sessions import Session

router = PageRouter()

# Written to the registry's audit records: the change came from the owner page, not the CLI.
ACTOR = "web"
NO_SCOPES = "tick at least one scope: an app with none can do nothing"


async def _newest_by_app(
    context: WebContext, limit: int, apps: Iterable[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """The newest `limit` audit records of each of `apps` (newest first)."""
    wanted = set(apps)
    return await run_in_threadpool(
        lambda: newest_by_app(context.audit_reader.newest_first(), limit, wanted)
    )


def newest_by_app(
    newest_first: Iterable[Mapping[str, Any]], limit: int, apps: set[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """Read from the end of the log only as far back as it takes to find `limit` records of
    each app: the whole log, read on every view of the page, cost memory and time that grew
    with every month the bridge ran (a log of 30 MB held 185 MB while the page was built)."""
    out: dict[str, list[Mapping[str, Any]]] = {app: [] for app in apps}
    missing = set(apps)
    records = iter(newest_first) if missing else iter(())
    for record in records:
        app = record.get("app")
        if not isinstance(app, str) or app not in missing:
            continue
        out[app].append(record)
        if len(out[app]) >= limit:
            missing.discard(app)
            if not missing:
                break
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
async def list_apps(request: Request, session: Session) -> Response:
    return await _apps_page(request, form={})


async def _apps_page(
    request: Request, *, form: Mapping[str, Any], error: str | None = None
) -> Response:
    context = ctx(request)
    apps = context.registry.list()
    activity = await _newest_by_app(context, 3, [app.id for app in apps])
    rows = [
        {
            "app": app,
            "rest": context.oauth.client_of(app.id) is not None,
            "activity": activity.get(app.id, []),
        }
        for app in apps
    ]
    status = 400 if error else 200
    return page(
        request, "apps.html", status, apps=rows, form=form, error=error, flash=_take_flash(request)
    )


@router.post("/apps")
async def add_app(request: Request, session: Session) -> Response:
    """Register an app through the registry; its password goes to the one-time box."""
    form = await checked_form(request, session)
    app_id = str(form.get("app_id", "")).strip()
    name = str(form.get("name", "")).strip() or app_id
    scopes = parse_scopes([str(v) for v in form.getlist("scope")])
    if not scopes:
        # An app with nothing granted can do nothing: an empty form is a slip, not a wish.
        echo = {"app_id": app_id, "name": name, "scopes": []}
        return await _apps_page(request, form=echo, error=NO_SCOPES)
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
        if _unshown_password(request, session.id_hash, app_id):
            # The same form sent twice (a double click on a slow box): the browser shows only
            # the second answer, which would say "already taken" and hide the password the
            # first one made. This browser made the app a moment ago: show it that password.
            return _see_other(f"/apps/{app_id}/created")
        echo = {"app_id": app_id, "name": name, "scopes": sorted(scopes)}
        return await _apps_page(request, form=echo, error=str(exc))
    ctx(request).once.put(session.id_hash, f"password:{added.app.id}", added.password)
    return _see_other(f"/apps/{added.app.id}/created")


def _unshown_password(request: Request, session_hash: str, app_id: str) -> bool:
    """Whether this session made `app_id` and has not yet been shown its password."""
    once, key = ctx(request).once, f"password:{app_id}"
    password = once.take(session_hash, key)
    if password is None:
        return False
    once.put(session_hash, key, password)
    return True


@router.get("/apps/{app_id}/created")
async def app_created(request: Request, app_id: str, session: Session) -> Response:
    """The broker password, once: a reload finds the box empty."""
    secret = ctx(request).once.take(session.id_hash, f"password:{app_id}")
    if secret is None:
        # Not "App nope added" for any id typed into the address bar.
        _app_or_404(ctx(request), app_id)
    return page(
        request,
        "secret_once.html",
        heading=f"App {app_id} added",
        intro="Configure the app with these MQTT credentials.",
        pairs=[("Username", app_id)],
        value_label="Password",
        secret=secret,
        back=f"/apps/{app_id}",
        broker_login=True,
    )


@router.get("/apps/{app_id}")
async def app_detail(request: Request, app_id: str, session: Session) -> Response:
    """One app: status, scopes, limits, REST access, activity, revoke link."""
    return await _app_page(request, _app_or_404(ctx(request), app_id))


class FormProblem(Exception):
    """What the owner typed into one field cannot be accepted; the page is shown again with the
    message next to that field and the typed values kept."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


async def _app_page(
    request: Request,
    app: App,
    *,
    typed: Mapping[str, str] | None = None,
    problem: FormProblem | None = None,
) -> Response:
    """The app's page; after a refused form, with `typed` echoed and the problem at its field."""
    context = ctx(request)
    activity = await _newest_by_app(context, 20, [app.id])
    fields = {**_current_fields(app), **(typed or {})}
    return page(
        request,
        "app_detail.html",
        400 if problem else 200,
        app=app,
        client=context.oauth.client_of(app.id),
        grants=context.oauth.active_grants(app.id),
        activity=activity.get(app.id, []),
        flash=_take_flash(request),
        default_rate=context.settings.commands.rate_limit_per_minute,
        fields=fields,
        problems={problem.field: str(problem)} if problem else {},
        error=f"Not saved: {problem}" if problem else None,
        error_field=problem.field if problem else None,
    )


def _current_fields(app: App) -> dict[str, str]:
    """The forms' fields as the app stands, for a page that was not just refused."""
    return {
        "allow_cidrs": " ".join(app.allow_cidrs),
        "rate_limit": str(app.rate_limit_per_minute or ""),
        "kind": "confidential",
        "redirect_uris": "",
    }


@router.post("/apps/{app_id}/scopes")
async def change_scopes(request: Request, app_id: str, session: Session) -> Response:
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
async def confirm_revoke(request: Request, app_id: str, session: Session) -> Response:
    return page(request, "app_revoke.html", app=_app_or_404(ctx(request), app_id))


@router.post("/apps/{app_id}/revoke")
async def revoke(request: Request, app_id: str, session: Session) -> Response:
    await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    await _change(context.registry.revoke, app.id)
    context.oauth.remove_client(app.id)
    _flash(request, f"Revoked {app.name} ({app.id}).")
    return _see_other("/apps")


@router.post("/apps/{app_id}/limits")
async def change_limits(request: Request, app_id: str, session: Session) -> Response:
    """The app's IP allowlist (for REST calls) and command rate limit, as `apps allowlist` and
    `apps rate-limit` set them. Both fields are checked before either is saved: a form refused
    for one field must not have changed the other."""
    form = await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    typed = {key: str(form.get(key, "")) for key in ("allow_cidrs", "rate_limit")}
    try:
        cidrs, rate = _cidrs_from(typed["allow_cidrs"]), _rate_from(typed["rate_limit"])
    except FormProblem as problem:
        return await _app_page(request, app, typed=typed, problem=problem)
    if cidrs != app.allow_cidrs:
        await _change(context.registry.set_allowlist, app.id, list(cidrs))
    if rate != app.rate_limit_per_minute:
        await _change(context.registry.set_rate_limit, app.id, rate)
    _flash(request, "Limits saved.")
    return _see_other(f"/apps/{app.id}")


def _cidrs_from(text: str) -> tuple[str, ...]:
    """The allowlist field as the registry will store it (the registry's own check)."""
    try:
        return validation.normalise_cidrs(text.replace(",", " ").split())
    except AccessError as exc:
        raise FormProblem("allow_cidrs", str(exc)) from None


def _rate_from(text: str) -> int | None:
    """The rate field: empty for the default, else a whole number the registry accepts."""
    text = text.strip()
    if not text:
        return None
    # isascii: str.isdigit also accepts other scripts' digits, which int() would then read.
    # The length cap: int() refuses digit strings past 4,300 (a ValueError, so a 500 page).
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(validation.MAX_RATE_LIMIT)):
        raise FormProblem(
            "rate_limit",
            f"invalid rate limit {text!r}: give a whole number of commands per minute "
            f"(1-{validation.MAX_RATE_LIMIT}), or leave it empty for the default",
        )
    try:
        return validation.check_rate_limit(int(text))
    except AccessError as exc:
        raise FormProblem("rate_limit", str(exc)) from None


@router.post("/apps/{app_id}/oauth")
async def enable_rest(request: Request, app_id: str, session: Session) -> Response:
    """Make the app an OAuth client; a client secret is shown once."""
    form = await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    typed = {key: str(form.get(key, "")) for key in ("kind", "redirect_uris")}
    try:
        secret = _register_client(context, app, typed)
    except FormProblem as problem:
        return await _app_page(request, app, typed=typed, problem=problem)
    context.once.put(session.id_hash, f"client:{app.id}", secret or "")
    return _see_other(f"/apps/{app.id}/oauth/created")


def _register_client(context: WebContext, app: App, typed: Mapping[str, str]) -> str | None:
    """Register the client from the typed form; its secret (None for a public client)."""
    if not app.enabled:
        # The page does not offer it; a stale page or a hand-made form must not do it either.
        raise FormProblem("redirect_uris", f"app {app.id!r} is disabled: enable it first")
    uris = [line.strip() for line in typed["redirect_uris"].splitlines()]
    try:
        return context.oauth.register_client(
            app.id, kind=typed["kind"], uris=[u for u in uris if u]
        )
    except AccessError as exc:
        raise FormProblem("redirect_uris", str(exc)) from None


@router.get("/apps/{app_id}/oauth/created")
async def rest_enabled(request: Request, app_id: str, session: Session) -> Response:
    """The new client secret, once (public clients have none)."""
    secret = ctx(request).once.take(session.id_hash, f"client:{app_id}")
    if secret == "":
        _flash(request, f"REST access enabled for public client {app_id} (no secret; PKCE).")
        return _see_other(f"/apps/{app_id}")
    if secret is None:
        _app_or_404(ctx(request), app_id)
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


@router.get("/apps/{app_id}/oauth/remove")
async def confirm_disable_rest(request: Request, app_id: str, session: Session) -> Response:
    """Asks before removing REST access: it ends every token and the client secret cannot be
    shown again, so one stray tap or Enter on the app's page must not do it."""
    context = ctx(request)
    app = _app_or_404(context, app_id)
    if context.oauth.client_of(app.id) is None:
        return _see_other(f"/apps/{app.id}")
    grants = context.oauth.active_grants(app.id)
    return page(request, "app_rest_remove.html", app=app, grants=grants)


@router.post("/apps/{app_id}/oauth/remove")
async def disable_rest(request: Request, app_id: str, session: Session) -> Response:
    await checked_form(request, session)
    ctx(request).oauth.remove_client(app_id)
    _flash(request, f"REST access removed for {app_id}; its tokens no longer work.")
    return _see_other(f"/apps/{app_id}")


@router.post("/apps/{app_id}/disable")
async def disable_app(request: Request, app_id: str, session: Session) -> Response:
    """Pause the app without deleting it, as `ownerlink apps disable` does."""
    return await _set_enabled(request, app_id, session, enabled=False)


@router.post("/apps/{app_id}/enable")
async def enable_app(request: Request, app_id: str, session: Session) -> Response:
    """Let a disabled app in again, as `ownerlink apps enable` does."""
    return await _set_enabled(request, app_id, session, enabled=True)


async def _set_enabled(
    request: Request, app_id: str, session: Session, *, enabled: bool
) -> Response:
    await checked_form(request, session)
    context = ctx(request)
    app = _app_or_404(context, app_id)
    # The registry writes the audit record (app.enabled / app.disabled) and updates the broker.
    await _change(context.registry.set_enabled, app.id, enabled)
    if enabled:
        _flash(request, f"Enabled {app.name} ({app.id}).")
    else:
        _flash(request, f"Disabled {app.name} ({app.id}): its commands and REST calls are refused.")
    return _see_other(f"/apps/{app.id}")
