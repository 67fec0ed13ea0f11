"""FordConnect Query routes under `/fcon-query/v1`: the token is the vehicle (no id in the path)."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.faults import ALL_FAULTS
from bridge.simulator.fleet import Vehicle
from bridge.simulator.guard import Call, Surface, guarded
from bridge.simulator.render_query import garage, health_alerts, query_error, telemetry
from bridge.simulator.world import Simulator

PREFIX = "/fcon-query/v1"
MESSAGES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def error(request: Request, sim: Simulator, status: int, detail: str) -> Response:
    message = f"{MESSAGES.get(status, 'Error')}: {detail}"
    body = query_error(status, message, request.url.path, sim.now(), next(sim.traces))
    return JSONResponse(body, status_code=status)


def _invalid_token(request: Request, sim: Simulator) -> Response:
    response = error(request, sim, 401, "the access token is missing, invalid or expired")
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _no_check(_: Request, __: Simulator) -> Response | None:
    return None


QUERY = Surface(
    faults=ALL_FAULTS,
    error=error,
    invalid_token=_invalid_token,
    check_headers=_no_check,
    check_after_token=_no_check,
)


def _bound(call: Call) -> Vehicle | Response:
    """The one vehicle this consent covers (the first, if a v1-style consent named several)."""
    vehicle = next(filter(None, map(call.sim.vehicle, call.account.vehicle_ids)), None)
    if vehicle is None:
        return error(call.request, call.sim, 404, "no vehicle is bound to this token")
    return vehicle


def get_telemetry(call: Call) -> Response:
    vehicle = _bound(call)
    if isinstance(vehicle, Response):
        return vehicle
    return JSONResponse(telemetry(vehicle, vehicle.car.served(call.now)))


def get_garage(call: Call) -> Response:
    vehicle = _bound(call)
    return vehicle if isinstance(vehicle, Response) else JSONResponse(garage(vehicle))


def get_alerts(call: Call) -> Response:
    vehicle = _bound(call)
    if isinstance(vehicle, Response):
        return vehicle
    return JSONResponse(health_alerts(vehicle, vehicle.car.served(call.now)))


def not_found(call: Call) -> Response:
    return error(call.request, call.sim, 404, "no such resource")


def routes(sim: Simulator) -> list[BaseRoute]:
    g = partial(guarded, sim, QUERY)
    return [
        Route(PREFIX + "/telemetry", g(get_telemetry), methods=["GET"]),
        Route(PREFIX + "/garage", g(get_garage), methods=["GET"]),
        Route(PREFIX + "/vehicle-health/alerts", g(get_alerts), methods=["GET"]),
        Route(PREFIX + "/{rest:path}", g(not_found)),
    ]
