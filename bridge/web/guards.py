"""Owner-page guards: who is logged in, and whether a form carries its session's CSRF token."""

from __future__ import annotations

import re

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from bridge.web.context import ctx
from bridge.web.ingress import prefix_of
from bridge.web.sessions import Session, cookie_name

INGRESS_COOKIE = "ownerlink_ingress"
# The Supervisor's X-Remote-User-Id: a Home Assistant user id (32 hex characters).
HA_USER_ID = re.compile(r"^[0-9a-f]{32}$")


class LoginRequired(Exception):
    """The page needs an owner session; the handler redirects to the login page."""

    def __init__(self, next_path: str, *, ended: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.ended = ended  # a session cookie came, or a form: the owner was logged in


# Fetch Metadata: a form posted from another origin. "same-site" too: SameSite cookies ignore
# ports, so any other web app on this host (or a page on a sibling name) is the same site, and
# with the token stolen or leaked its post must still be refused. Old browsers send nothing.
_OTHER_ORIGINS = frozenset({"cross-site", "same-site"})


class CsrfRejected(Exception):
    """A form arrived without its session's CSRF token (or without a session at all)."""


def current_session(request: Request) -> Session | None:
    context = ctx(request)
    return context.sessions.load(request.cookies.get(_cookie(request)[0]))


def _cookie(request: Request) -> tuple[str, str, bool]:
    """The session cookie's name, path and Secure flag.

    Through Ingress the page shares Home Assistant's origin with HA itself and every other
    add-on, so the cookie is kept to the page's own prefix; `__Host-` (which demands Path=/)
    and Secure (the Supervisor speaks plain HTTP to us; the browser's scheme is HA's) do not
    apply there.
    """
    secure = ctx(request).secure
    prefix = prefix_of(request.scope)
    if prefix:
        # Its own name too: a cookie from the mapped port (Path=/, any port of the host) would
        # otherwise arrive beside it under the same name, and Starlette keeps only one.
        return INGRESS_COOKIE, prefix, False
    return cookie_name(secure), "/", secure


async def require_owner(request: Request) -> Session:
    """The owner's session, or LoginRequired (`PageRouter` asks before every owner page)."""
    session = current_session(request)
    if session is None or not session.owner:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # A cookie that no longer names a session: it expired, or the daemon forgot it.
        stale = session is None and request.cookies.get(_cookie(request)[0]) is not None
        raise LoginRequired(target, ended=stale or request.method == "POST")
    request.state.session = session
    return session


async def checked_form(request: Request, session: Session | None) -> FormData:
    """The submitted form, once its `csrf` field matches the session's token, from a page of
    this origin where the browser says where it comes from."""
    if request.headers.get("sec-fetch-site") in _OTHER_ORIGINS:
        raise CsrfRejected()
    form = await request.form()
    token = form.get("csrf")
    if session is None or not isinstance(token, str) or not session.csrf_ok(token):
        raise CsrfRejected()
    return form


def set_session_cookie(response: Response, request: Request, raw_id: str) -> None:
    """HttpOnly (no script can read it), SameSite=Strict (never sent on cross-site requests),
    Secure under TLS, and expiring with the server-side session."""
    name, path, secure = _cookie(request)
    response.set_cookie(
        name,
        raw_id,
        max_age=ctx(request).sessions.max_age(),
        path=path,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    name, path, secure = _cookie(request)
    response.delete_cookie(name, path=path, httponly=True, samesite="strict", secure=secure)


def safe_next(target: str | None) -> str:
    """Only same-site paths: `next=https://evil.example` or `//evil.example` must not redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/apps"
    return target


def owner_ip(request: Request) -> str:
    """Who is asking, for the login limit and the audit: the peer address. Through Ingress every
    browser arrives from the Supervisor's address, so the Home Assistant user the Supervisor
    names is added: one user's wrong guesses must not lock out another (the owner)."""
    ip = request.client.host if request.client else "unknown"
    user = request.headers.get("x-remote-user-id", "") if prefix_of(request.scope) else ""
    return f"{ip} (Home Assistant user {user})" if HA_USER_ID.match(user) else ip
