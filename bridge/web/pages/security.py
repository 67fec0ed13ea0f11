"""The Security page: step-up (TOTP) enrolment, the alert webhook, the owner password.

Replacing the second factor or the password needs the current password again: a stolen session
cookie alone must not be enough to take over the admin plane.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.commands import stepup as totp
from bridge.errors import AccessError, StateError
from bridge.web.context import ctx
from bridge.web.guards import checked_form, owner_ip, set_session_cookie
from bridge.web.pagerouter import PageRouter
from bridge.web.passwords import owner_password_hash, set_owner_password, verify_password
from bridge.web.render import page
from bridge.web.sessions import Session

router = PageRouter()


def masked_webhook(url: str | None) -> str | None:
    """Scheme and host only: the path of a webhook URL is often its secret (Home Assistant's
    webhook id is), and so is what comes before the host (`user:password@`)."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/…" if host else "(set)"


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
async def security(request: Request, session: Session) -> Response:
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
async def enrol_stepup(request: Request, session: Session) -> Response:
    """A new TOTP secret, after the password is given again. It is only proposed: the current
    one stays in force until a code from the new one is typed (`confirm_stepup`), so a page
    closed or reloaded before the scan never leaves the owner without a working authenticator."""
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
    context.once.put(session.id_hash, PENDING, context.stepup.propose())
    return RedirectResponse("/security/stepup/new", status_code=303)


PENDING = "stepup"


def _pending(request: Request, session_hash: str) -> str | None:
    """The proposed secret of this session, left in place: it is not in force, so showing it
    again (a reload) costs nothing, and it is forgotten when the session ends or it is confirmed."""
    once = ctx(request).once
    secret = once.take(session_hash, PENDING)
    if secret is not None:
        once.put(session_hash, PENDING, secret)
    return secret


def _new_stepup_page(
    request: Request, secret: str | None, *, error: str | None = None, status: int = 200
) -> Response:
    if secret is None:
        return page(request, "stepup_new.html", status, qr=None, secret=None, error=error)
    # qrcode (with xml.etree) is loaded only here: a QR code is drawn once per enrolment, and the
    # pages an owner opens every day should not carry it (about 1 MB).
    from bridge.web.qr import qr_svg

    uri = totp.provisioning_uri(secret)
    qr = Markup(qr_svg(uri, title="Step-up authenticator QR code"))  # noqa: S704  # our own SVG
    return page(
        request,
        "stepup_new.html",
        status,
        qr=qr,
        secret=secret,
        error=error,
        error_field="stepup-code" if error else None,
        replacing=_stepup_status(request) != "not_enrolled",
    )


@router.get("/security/stepup/new")
async def new_stepup(request: Request, session: Session) -> Response:
    """The QR code of the proposed secret and the form that puts it in force."""
    return _new_stepup_page(request, _pending(request, session.id_hash))


@router.post("/security/stepup/new")
async def confirm_stepup(request: Request, session: Session) -> Response:
    """Put the proposed secret in force once a code from it shows the authenticator has it."""
    form = await checked_form(request, session)
    context = ctx(request)
    secret = _pending(request, session.id_hash)
    if secret is None:
        return _new_stepup_page(request, None, status=409)
    replaced = _stepup_status(request) != "not_enrolled"
    if not context.stepup.install(secret, str(form.get("code", ""))):
        context.audit.append(
            "owner.stepup_enrol_refused", reason="wrong_code", ip=owner_ip(request)
        )
        wrong = "Wrong code for the new secret; step-up unchanged. Scan the code and try again."
        return _new_stepup_page(request, secret, error=wrong, status=400)
    context.once.take(session.id_hash, PENDING)
    # The same kind as `ownerlink stepup enroll` writes: one question ("when was the second
    # factor changed?") has one answer, whichever way it was changed.
    context.audit.append(
        "stepup.enrolled", replaced=replaced, actor="owner", via="web", ip=owner_ip(request)
    )
    done = "New authenticator in force" + (
        "; codes from the old one no longer work." if replaced else "."
    )
    context.once.put(session.id_hash, "flash", done)
    return RedirectResponse("/security", status_code=303)


@router.post("/security/password")
async def change_password(request: Request, session: Session) -> Response:
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
