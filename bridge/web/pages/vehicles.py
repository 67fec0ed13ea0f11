"""The Vehicles page: latest state, availability, next poll, and today's API budget use.

Location stays hidden until the owner asks for one vehicle's, and each reveal is audited: the page
may be left open on a shared screen, and location is the most sensitive thing Ownerlink knows.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from bridge.model import to_document
from bridge.web.charts import budget_svg, usage_ratio
from bridge.web.context import ctx
from bridge.web.guards import owner_ip
from bridge.web.pagerouter import PageRouter
from bridge.web.ports import VehicleView
from bridge.web.render import page
from bridge.web.sessions import Session

router = PageRouter()


@router.get("/vehicles")
async def vehicles(request: Request, session: Session) -> Response:
    """Every vehicle, the budget chart, and one location when asked for (`?reveal=<vehicle>`)."""
    context = ctx(request)
    reveal = request.query_params.get("reveal", "")
    views = context.vehicles.vehicles()
    revealed = next((v for v in views if v.slug == reveal), None)
    if revealed is not None:
        context.audit.append("owner.location_viewed", vehicle=revealed.slug, ip=owner_ip(request))
    budget = context.vehicles.budget()
    chart = budget_svg(
        budget.per_hour,
        used=budget.used_today,
        limit=budget.calls_per_day,
        hourly_cap=budget.calls_per_hour,
    )
    rows = [
        {
            "view": view,
            "status": to_document(view.state.status) if view.state else None,
            "health": to_document(view.state.health) if view.state else None,
            "location": _location(view) if view is revealed else None,
        }
        for view in views
    ]
    return page(
        request,
        "vehicles.html",
        rows=rows,
        budget=budget,
        ratio=usage_ratio(budget.used_today, budget.calls_per_day),
        chart=Markup(chart),  # noqa: S704  # built from numbers by charts.budget_svg
    )


def _location(view: VehicleView) -> dict[str, Any]:
    """The revealed location document; empty when the car has not reported one."""
    place = view.state.location if view.state else None
    return to_document(place) if place is not None else {}
