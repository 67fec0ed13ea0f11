"""The authorisation endpoint: the owner's consent page, where requested scopes can be unticked.

An invalid client or redirect URI is shown to the owner and never redirected to (RFC 6749
§4.1.2.1); other errors go back to the app. The consent form carries the original request in a
hidden field and is validated again on submit, so nothing the browser sends back is trusted
beyond the owner's choice of scopes, which can only narrow the request.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.model import App, Scope
from bridge.web.context import WebContext, ctx
from bridge.web.guards import checked_form, current_session
from bridge.web.oauth.server import AuthRequest, repeated_parameter
from bridge.web.pagerouter import PageRouter
from bridge.web.render import page

router = PageRouter()


def _not_logged_in(request: Request) -> Response:
    """SameSite=Strict cookies are withheld on a navigation from another site, so an owner who is
    logged in looks logged out on arrival. A click on our own page is same-site and carries the
    cookie, so offer one before falling back to the login form."""
    here = f"/oauth/authorize?{request.url.query}"
    if request.headers.get("sec-fetch-site") == "cross-site":
        return page(
            request,
            "message.html",
            heading="Authorise an app",
            message="An app is asking to access your car through Ownerlink.",
            link=here,
            link_label="Continue to Ownerlink",
        )
    return RedirectResponse("/login?" + urlencode({"next": here}), status_code=303)


def _validated(request: Request, query: str) -> AuthRequest | Response:
    """The request, or the response for an invalid one (an error page or a redirect). Call
    `oauth.ready()` first: oauthlib is loaded then, off the event loop."""
    from oauthlib.oauth2.rfc6749 import errors

    repeated = repeated_parameter(query)
    if repeated is not None:  # not redirected: which redirect_uri, which state?
        text = f"the parameter {repeated[:40]!r} is given more than once"
        return _invalid(request, f"invalid_request: {text}")
    uri = f"{request.url.scheme}://{request.url.netloc}/oauth/authorize?{query}"
    try:
        return ctx(request).oauth.check_authorization(uri, request.headers)
    except errors.FatalClientError as exc:
        disabled = _disabled_app(ctx(request), query)
        if disabled is not None:
            # The client is hidden while its app is paused; "Invalid client_id" read as if the
            # app had been deleted or the request forged, and said nothing of the remedy.
            return page(
                request,
                "message.html",
                409,
                heading=f"{disabled.name} is disabled",
                message=f"Enable {disabled.name} ({disabled.id}) on its page, then ask it to "
                "connect again.",
                link=f"/apps/{disabled.id}",
                link_label=f"Open {disabled.name}",
            )
        return _invalid(request, f"{exc.error}: {exc.description}")
    except errors.OAuth2Error as exc:
        return RedirectResponse(exc.in_uri(exc.redirect_uri), status_code=303)
    except ValueError as exc:  # oauthlib's answer to a query it cannot decode (`%ZZ`)
        return _invalid(request, f"invalid_request: {exc}")


def _invalid(request: Request, message: str) -> Response:
    """The error page for a request that cannot be answered by a redirect."""
    return page(
        request,
        "message.html",
        400,
        heading="This authorisation request is invalid",
        message=message,
    )


def _disabled_app(context: WebContext, query: str) -> App | None:
    """The registered, disabled app a refused request names as its client, if any."""
    client_id = parse_qs(query).get("client_id", [""])[0]
    app = context.registry.get(client_id) if client_id else None
    return app if app is not None and not app.enabled else None


def _allowed(context: WebContext, client_id: str) -> set[str]:
    """The scopes the app holds in the registry: the ceiling of what the owner can consent to."""
    app = context.registry.get(client_id)
    return {s.value for s in app.scopes} if app else set()


@router.get("/oauth/authorize", public=True)
async def authorize_form(request: Request) -> Response:
    """Show the consent page for a valid request from a logged-in owner."""
    session = current_session(request)
    if session is None or not session.owner:
        return _not_logged_in(request)
    request.state.session = session
    await ctx(request).oauth.ready()
    checked = _validated(request, request.url.query)
    if isinstance(checked, Response):
        return checked
    context = ctx(request)
    allowed = _allowed(context, checked.client_id)
    preticked = [s for s in checked.scopes if s in allowed and s != Scope.READ_LOCATION.value]
    return page(
        request,
        "consent.html",
        app=context.registry.get(checked.client_id),
        auth=checked,
        offered=sorted(allowed & set(checked.scopes)),
        preticked=preticked,
        query=request.url.query,
    )


@router.post("/oauth/authorize", public=True)
async def authorize(request: Request) -> Response:
    """Apply the owner's decision: a code for the ticked scopes, or access_denied."""
    session = current_session(request)
    form = await checked_form(request, session)
    if session is None or not session.owner:
        return RedirectResponse("/login", status_code=303)
    request.state.session = session
    query = str(form.get("query", ""))
    await ctx(request).oauth.ready()
    checked = _validated(request, query)
    if isinstance(checked, Response):
        return checked
    context = ctx(request)
    mark = context.registry.scope_mark()  # before the app's scopes are read (see authorize)
    allowed = _allowed(context, checked.client_id)
    chosen = sorted({str(s) for s in form.getlist("scope")} & allowed & set(checked.scopes))
    if form.get("decision") != "allow" or not chosen:
        context.audit.append("oauth.consent", app=checked.client_id, decision="denied", scopes=[])
        return RedirectResponse(checked.denied(), status_code=303)
    uri = f"{request.url.scheme}://{request.url.netloc}/oauth/authorize?{query}"
    headers, _body, _status = context.oauth.authorize(uri, request.headers, chosen, scope_mark=mark)
    context.audit.append("oauth.consent", app=checked.client_id, decision="granted", scopes=chosen)
    return RedirectResponse(headers["Location"], status_code=303)
