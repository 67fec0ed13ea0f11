"""Page rendering: the Jinja2 environment (autoescaping on), its filters, and the page helper."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from bridge.web.context import ctx
from bridge.web.ingress import prefix_of
from bridge.web.scopes_ui import SCOPE_GROUPS, SCOPE_INFO

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def make_templates() -> Jinja2Templates:
    """Templates with autoescaping for .html (Starlette's default) and our filters."""
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters["when"] = when
    templates.env.filters["readable"] = readable
    templates.env.globals["scope_groups"] = SCOPE_GROUPS
    templates.env.globals["scope_info"] = SCOPE_INFO
    return templates


def when(value: Any) -> str:
    """A timestamp (datetime, ISO text or epoch seconds) as `YYYY-MM-DD HH:MM UTC`; '—' if none."""
    if value is None or value == "":
        return "—"
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if moment is None:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def readable(value: Any) -> str:
    """A state value in words: booleans as yes/no, a mapping such as the doors as
    `front driver: closed, …`, a list comma-separated; Python's repr is not for the owner."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{_words(key)}: {readable(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(readable(item) for item in value)
    if isinstance(value, str):
        return _words(value)  # states such as `not_plugged` are words to the owner
    return str(value)


def _words(key: Any) -> str:
    return str(key).replace("_", " ")


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the session's CSRF token and the current section for the nav."""
    session = getattr(request.state, "session", None)
    context.setdefault("csrf", session.csrf if session else "")
    context.setdefault("logged_in", bool(session and session.owner))
    context.setdefault("section", request.url.path.strip("/").split("/")[0])
    # Every link, form and asset starts with it: "" normally, the Ingress prefix through HA.
    context.setdefault("base", prefix_of(request.scope))
    # What the broker does with an app's login decides what the page may promise about it.
    context.setdefault("enforcement", ctx(request).settings.mqtt.enforcement)
    return ctx(request).templates.TemplateResponse(request, name, context, status_code=status)
