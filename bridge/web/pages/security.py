"""The Security page: step-up (TOTP) enrolment, the alert webhook, the owner password.

Replacing the second factor or the password needs the current password again: a stolen session
cookie alone must not be enough to take over the admin plane.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.errors import AccessError, StateError
from bridge.web.context import ctx
from bridge.web.guards import OwnerSession, checked_form, owner_ip, set_session_cookie
from bridge.web.passwords import owner_password_hash, set_owner_password, verify_password
from bridge.web.qr import qr_svg
from bridge.web.render import page

router = APIRouter(include_in_schema=False)


def masked_webhook(url: str | None) -> str | None:
    """Scheme and host only: the path of a webhook URL is often its secret (Home Assistant's
    webhook id is)."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "(set)"


def _security_page(
    request: Request, *, error: str | None = None, status: int = 200, flash: str | None = None
) -> Response:
    context = ctx(request)
    return page(
        request,
        "security.html",
        status,
        error=error,
        flash=flash,
        stepup=_stepup_status(request),
        login_totp=context.settings.web.login_totp,
        webhook=masked_webhook(context.settings.alerts.webhook_url),
    )


def _stepup_status(request: Request) -> str:
    """enrolled, not_enrolled, or damaged: a secret file that cannot be read is still one the
    owner must be able to replace here (through Ingress this page is their only tool)."""
    try:
        return "enrolled" if ctx(request).stepup.enrolled() else "not_enrolled"
    except StateError:
        return "damaged"


@router.get("/security")
async def security(request: Request, session: OwnerSession) -> Response:
    return _security_page(request, flash=ctx(request).once.take(session.id_hash, "flash"))


async def _recheck_password(
    request: Request, password: str, *, wrong: str, refused_kind: str
) -> Response | None:
    """The current password, checked against the same per-address allowance as the login form,
    so a stolen session cookie does not buy unlimited guesses. None when it is right; else the
    page to answer with, the refusal already audited as `refused_kind`."""
    context, ip = ctx(request), owner_ip(request)
    wait = context.limiter.attempt(ip)
    if wait is not None:
        reason = "rate_limited"
        response = _security_page(
            request, error="Too many wrong passwords. Try again later.", status=429
        )
        response.headers["Retry-After"] = str(int(wait))
    else:
        encoded = owner_password_hash(context.store)
        if encoded is not None and await run_in_threadpool(verify_password, password, encoded):
            context.limiter.clear(ip)
            return None
        reason, response = "wrong_password", _security_page(request, error=wrong, status=403)
    context.audit.append(refused_kind, reason=reason, ip=ip)
    return response


@router.post("/security/stepup")
async def enrol_stepup(request: Request, session: OwnerSession) -> Response:
    """A new TOTP secret, after the password is given again."""
    form = await checked_form(request, session)
    context = ctx(request)
    refused = await _recheck_password(
        request,
        str(form.get("password", "")),
        wrong="Wrong password; step-up unchanged.",
        refused_kind="owner.stepup_enrol_refused",
    )
    if refused is not None:
        return refused
    replaced = _stepup_status(request) != "not_enrolled"
    uri = context.stepup.enroll()
    # The same kind as `ownerlink stepup enroll` writes: one question ("when was the second
    # factor changed?") has one answer, whichever way it was changed.
    context.audit.append(
        "stepup.enrolled", replaced=replaced, actor="owner", via="web", ip=owner_ip(request)
    )
    context.once.put(session.id_hash, "stepup", uri)
    return RedirectResponse("/security/stepup/new", status_code=303)


@router.get("/security/stepup/new")
async def new_stepup(request: Request, session: OwnerSession) -> Response:
    """The QR code of the new secret, shown once."""
    uri = ctx(request).once.take(session.id_hash, "stepup")
    if uri is None:
        return page(request, "stepup_new.html", qr=None, secret=None)
    qr = Markup(qr_svg(uri, title="Step-up authenticator QR code"))  # noqa: S704  # our own SVG
    secret = parse_qs(urlsplit(uri).query).get("secret", [""])[0]
    return page(request, "stepup_new.html", qr=qr, secret=secret)


@router.post("/security/password")
async def change_password(request: Request, session: OwnerSession) -> Response:
    """Check the current password, store the new one, log out other sessions."""
    form = await checked_form(request, session)
    context = ctx(request)
    new, confirm = str(form.get("new_password", "")), str(form.get("confirm_password", ""))
    refused = await _recheck_password(
        request,
        str(form.get("current_password", "")),
        wrong="The current password is wrong.",
        refused_kind="owner.password_change_refused",
    )
    if refused is not None:
        return refused
    if new != confirm:
        return _security_page(request, error="The new passwords differ.", status=400)
    try:
        await run_in_threadpool(set_owner_password, context.store, new, now=context.clock())
    except AccessError as exc:
        return _security_page(request, error=str(exc), status=400)
    context.audit.append("owner.password_changed", via="web", ip=owner_ip(request))
    # Every session (this one too) ended with the old password; continue in a fresh one.
    raw, fresh = context.sessions.create(owner=True)
    # Redirect after success, so that reloading the page does not send the passwords again.
    context.once.put(fresh.id_hash, "flash", "Password changed; other sessions were logged out.")
    response = RedirectResponse("/security", status_code=303)
    set_session_cookie(response, request, raw)
    return response
