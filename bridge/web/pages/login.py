"""Owner login and logout: scrypt-checked password, optional TOTP, throttled and audited."""

from __future__ import annotations

import hmac
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.errors import AccessError
from bridge.logs import get_logger
from bridge.web.context import WebContext, ctx
from bridge.web.guards import (
    checked_form,
    clear_session_cookie,
    current_session,
    owner_ip,
    safe_next,
    set_session_cookie,
)
from bridge.web.ingress import prefix_of
from bridge.web.pagerouter import PageRouter
from bridge.web.passwords import owner_password_hash, set_first_owner_password, verify_password
from bridge.web.render import page
from bridge.web.sessions import Session

router = PageRouter()
log = get_logger(__name__)


def _needs_code(context: WebContext) -> bool:
    return context.settings.web.login_totp and context.stepup.enrolled()


@router.get("/login", public=True)
async def login_form(request: Request) -> Response:
    """The login form, with an anonymous session carrying its CSRF token."""
    context = ctx(request)
    target = request.query_params.get("next", "/apps")
    session = current_session(request)
    if session is not None and session.owner:
        return RedirectResponse(safe_next(target), status_code=303)
    raw = None
    if session is None:
        # An anonymous session exists only to carry the login form's CSRF token.
        raw, session = context.sessions.create(owner=False)
    request.state.session = session
    ended = request.query_params.get("ended") == "1"
    response = _login_page(request, target=target, ended=ended)
    if raw is not None:
        set_session_cookie(response, request, raw)
    return response


def _login_page(
    request: Request,
    *,
    target: str,
    error: str | None = None,
    status: int = 200,
    ended: bool = False,
) -> Response:
    context = ctx(request)
    no_password = owner_password_hash(context.store) is None
    first_run = no_password and _through_ingress(request)  # see _may_choose_first_password
    if first_run:
        _setup_code(context)
    return page(
        request,
        "login.html",
        status,
        next=safe_next(target),
        error=error,
        # Said so the owner knows why the page changed under them, and that a form just sent
        # was not saved (it is not kept across the login).
        flash="Your session has ended: log in again. A form you just sent was not saved."
        if ended and error is None
        else None,
        need_code=_needs_code(context),
        no_password=no_password,
        first_run=first_run,
    )


def _through_ingress(request: Request) -> bool:
    return bool(prefix_of(request.scope))


def _may_choose_first_password(request: Request) -> bool:
    """The first owner password may be chosen on the page only through Home Assistant's Ingress;
    anywhere else whoever reached the page first would own the car's permissions, so it takes
    the CLI there. Ingress alone is not enough either: any Home Assistant user may open an
    add-on's Ingress URL, administrator or not (`panel_admin` only hides the sidebar entry). So
    the form also asks for the setup code the daemon writes to its log, which in Home Assistant
    only administrators can read."""
    return _through_ingress(request) and owner_password_hash(ctx(request).store) is None


def _setup_code(context: WebContext) -> str:
    if context.setup.value is None:
        raw = secrets.token_hex(5)
        context.setup.value = f"{raw[:5]}-{raw[5:]}"
        # Deliberately in the log, whose readers (Home Assistant's administrators) are the ones
        # meant to choose the password; worthless once it is chosen or the daemon stops. At
        # error level, so that no logging.level setting hides the one line the owner needs.
        log.error(
            "owner page: no owner password yet; enter this setup code on the page opened from "
            "Home Assistant's sidebar to choose it",
            setup=context.setup.value,
        )
    return context.setup.value


def _setup_code_ok(context: WebContext, typed: str) -> bool:
    expected = context.setup.value
    cleaned = typed.strip().lower()
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500 on "é").
    return expected is not None and hmac.compare_digest(cleaned.encode(), expected.encode())


async def _posted(request: Request) -> tuple[Session, FormData]:
    """The form of a login-page POST, once its CSRF token matched the browser's session."""
    session = current_session(request)
    form = await checked_form(request, session)
    assert session is not None  # checked_form refuses a missing session
    request.state.session = session
    return session, form


def _too_many(request: Request, target: str, wait: float) -> Response:
    response = _login_page(
        request, target=target, status=429, error="Too many failed attempts. Try again later."
    )
    response.headers["Retry-After"] = str(int(wait))
    return response


def _check_setup_code(request: Request, ip: str, typed: str) -> Response | None:
    """None when the setup code is right; else the page to answer with. A wrong code counts
    against the same allowance as a wrong password."""
    context = ctx(request)
    wait = context.limiter.attempt(ip)
    if wait is not None:
        return _too_many(request, "/apps", wait)
    if not _setup_code_ok(context, typed):
        context.audit.append(
            "owner.password_change_refused", reason="wrong_setup_code", via="ingress", ip=ip
        )
        return _login_page(request, target="/apps", status=401, error="Wrong setup code.")
    # The right code: typos in the new password that follow are not guesses at anything.
    context.limiter.clear(ip)
    return None


@router.post("/login/first-password", public=True)
async def first_password(request: Request) -> Response:
    """Set the first owner password (through Ingress only) and log in with it."""
    context = ctx(request)
    session, form = await _posted(request)
    if not _may_choose_first_password(request):
        return page(
            request,
            "message.html",
            403,
            heading="The owner password cannot be chosen here",
            message="It is set already, or this page was not opened from Home Assistant.",
            link="/login",
            link_label="Log in",
        )
    ip = owner_ip(request)
    refused = _check_setup_code(request, ip, str(form.get("setup_code", "")))
    if refused is not None:
        return refused
    new, confirm = str(form.get("new_password", "")), str(form.get("confirm_password", ""))
    if new != confirm:
        return _login_page(request, target="/apps", status=400, error="The passwords differ.")
    try:
        chosen = await run_in_threadpool(
            set_first_owner_password, context.store, new, now=context.clock()
        )
    except AccessError as exc:
        return _login_page(request, target="/apps", status=400, error=str(exc))
    if not chosen:  # another browser or the CLI was first: log in with that password instead
        return _login_page(request, target="/apps", status=409, error="A password was just set.")
    context.setup.value = None
    context.audit.append("owner.password_changed", via="ingress", first=True, ip=ip)
    return _start_owner_session(request, session, ip, "/apps")


@router.post("/login", public=True)
async def login(request: Request) -> Response:
    """Check CSRF, throttle, password (and code); start a fresh owner session."""
    context = ctx(request)
    session, form = await _posted(request)
    ip, target = owner_ip(request), str(form.get("next", "/apps"))
    wait = context.limiter.attempt(ip)  # counts as a failure until the check says otherwise
    if wait is not None:
        context.audit.append("owner.login", outcome="rate_limited", ip=ip)
        return _too_many(request, target, wait)
    problem = await _check_credentials(
        context, str(form.get("password", "")), str(form.get("code", ""))
    )
    if problem is not None:
        context.audit.append("owner.login", outcome="failure", reason=problem, ip=ip)
        return _login_page(request, target=target, status=401, error="Wrong password or code.")
    return _start_owner_session(request, session, ip, target)


async def _check_credentials(context: WebContext, password: str, code: str) -> str | None:
    """None when the login is good, else the reason for the audit record."""
    encoded = owner_password_hash(context.store)
    if encoded is None:
        return "no_password_set"
    # scrypt takes ~0.1 s of CPU by design; keep it off the event loop.
    if not await run_in_threadpool(verify_password, password, encoded):
        return "wrong_password"
    if _needs_code(context) and not context.stepup.verify(code.strip()):
        return "wrong_code"
    return None


def _start_owner_session(request: Request, old: Session, ip: str, target: str) -> Response:
    """A fresh session id on login, so an id planted before login is worthless after it."""
    context = ctx(request)
    context.limiter.clear(ip)
    context.sessions.end(old)
    raw, _session = context.sessions.create(owner=True)
    context.audit.append("owner.login", outcome="success", ip=ip)
    response = RedirectResponse(safe_next(target), status_code=303)
    set_session_cookie(response, request, raw)
    return response


@router.post("/logout", public=True)
async def logout(request: Request) -> Response:
    """End the session and clear the cookie."""
    context = ctx(request)
    session = current_session(request)
    await checked_form(request, session)
    assert session is not None
    context.sessions.end(session)
    if session.owner:
        context.audit.append("owner.logout", ip=owner_ip(request))
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, request)
    return response
