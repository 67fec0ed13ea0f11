"""`create_app(sim)`: the simulator's ASGI application (Starlette)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from bridge.simulator import routes_admin, routes_oauth, routes_query, routes_v1
from bridge.simulator.world import Simulator


def create_app(sim: Simulator) -> Starlette:
    """The HTTP face of `sim`. The `/sim/` admin routes exist only when `sim.admin` is set."""
    routes: list[BaseRoute] = [
        *routes_oauth.routes(),
        *routes_v1.routes(sim),
        *routes_query.routes(sim),
    ]
    if sim.admin:
        routes += routes_admin.routes()
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app
