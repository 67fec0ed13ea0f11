"""FordConnect v1 routes under `/api/fordconnect/vehicles/v1`, plus the x-sim extension."""

from __future__ import annotations

import re
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.commands import COMMANDS, PENDING, CommandKind
from bridge.simulator.faults import ALL_FAULTS
from bridge.simulator.fleet import Vehicle
from bridge.simulator.guard import Call, Surface, guarded
from bridge.simulator.render_v1 import list_entry, location, refresh_status, v1_error, vehicle_info
from bridge.simulator.world import Simulator

PREFIX = "/api/fordconnect/vehicles/v1"
API_VERSION = "2020-06-01"
VEHICLE_ID = re.compile(r"[0-9a-fA-F]{32}")
HORN_LIGHTS = "hornLights"  # simulator extension: not part of Ford's v1 API
POLLABLE = frozenset().union(*(k.polled_as for k in COMMANDS.values()))


def _error(_: Request, __: Simulator, status: int, message: str) -> Response:
    return v1_error(status, status, message)


def _invalid_token(_: Request, __: Simulator) -> Response:
    return JSONResponse(
        {"error": "invalid_token"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _check_application_id(request: Request, sim: Simulator) -> Response | None:
    if request.headers.get("application-id") == sim.auth.client.application_id:
        return None
    body = {"statusCode": 401, "message": "Access denied due to missing subscription key."}
    return JSONResponse(body, status_code=401)


def _check_api_version(request: Request, _: Simulator) -> Response | None:
    if request.headers.get("api-version") == API_VERSION:
        return None
    return v1_error(400, 400, f"the api-version header must be {API_VERSION}")


V1 = Surface(
    faults=ALL_FAULTS,
    error=_error,
    invalid_token=_invalid_token,
    check_headers=_check_application_id,
    check_after_token=_check_api_version,
)


def _owned(call: Call) -> Vehicle | Response:
    """The path's vehicle if this account consented to it, else the v1 error for why not."""
    vehicle_id = call.request.path_params["vehicle_id"]
    if not VEHICLE_ID.fullmatch(vehicle_id):
        return v1_error(400, 4000, "malformed vehicle id")
    vehicle = call.sim.vehicle(vehicle_id)
    if vehicle is None:
        return v1_error(404, 4002, "vehicle not found")
    if vehicle.vehicle_id not in call.account.vehicle_ids:
        return v1_error(401, 3000, "vehicle not authorized for this account")
    if vehicle.vehicle_id in call.sim.forbidden:
        return v1_error(403, 403, "access to this vehicle is forbidden")
    return vehicle


def list_vehicles(call: Call) -> Response:
    vehicles = [v for v in map(call.sim.vehicle, call.account.vehicle_ids) if v is not None]
    return JSONResponse({"status": "SUCCESS", "vehicles": [list_entry(v) for v in vehicles]})


def get_vehicle(call: Call) -> Response:
    vehicle = _owned(call)
    if isinstance(vehicle, Response):
        return vehicle
    return JSONResponse(vehicle_info(vehicle, vehicle.car.served(call.now)))


def get_location(call: Call) -> Response:
    vehicle = _owned(call)
    if isinstance(vehicle, Response):
        return vehicle
    served = vehicle.car.served(call.now)
    return JSONResponse({"status": "SUCCESS", "vehicleLocation": location(served)})


def post_command(call: Call) -> Response:
    name = call.request.path_params["command"]
    kind = COMMANDS.get(name)
    if kind is None or name == HORN_LIGHTS:
        return v1_error(404, 4002, f"no such command {name!r}")
    return _issue(call, kind)


def post_horn_lights(call: Call) -> Response:
    return _issue(call, COMMANDS[HORN_LIGHTS])


def _issue(call: Call, kind: CommandKind) -> Response:
    vehicle = _owned(call)
    if isinstance(vehicle, Response):
        return vehicle
    refusal = _refusal(call, vehicle, kind)
    if refusal is not None:
        return refusal
    record = call.sim.deliver(vehicle, call.account.account_id, kind)
    body = {"status": "SUCCESS", "commandStatus": "COMPLETED", "commandId": record.command_id}
    return JSONResponse(body, status_code=202)


def _refusal(call: Call, vehicle: Vehicle, kind: CommandKind) -> Response | None:
    """Commands refused before they reach the car (so they never show up as executed)."""
    if kind.electric_only and not vehicle.spec.electric:
        return v1_error(406, 4006, f"{kind.name} is not supported by this vehicle")
    if kind.remote_start and not vehicle.car.can_remote_start(call.now):
        return v1_error(403, 403, "remote start limit reached: the vehicle must be driven first")
    return None


def poll_command(call: Call) -> Response:
    return _poll(call, call.request.path_params["command"])


def poll_horn_lights(call: Call) -> Response:
    return _poll(call, HORN_LIGHTS)


def _poll(call: Call, segment: str) -> Response:
    if segment not in POLLABLE:
        return v1_error(404, 4002, f"no such command {segment!r}")
    vehicle = _owned(call)
    if isinstance(vehicle, Response):
        return vehicle
    record = call.sim.commands.find(call.request.path_params["command_id"])
    if (
        record is None
        or record.vehicle_id != vehicle.vehicle_id
        or record.account_id != call.account.account_id
        or segment not in record.command.polled_as
    ):
        return v1_error(401, 3000, "unknown or expired command id")
    status = call.sim.commands.status(record)
    body: dict[str, object] = {
        "status": "FAILED" if status == "FAILED" else "SUCCESS",
        "commandStatus": status,
        "commandId": record.command_id,
    }
    if status == "COMPLETED" and record.command.name in {"status", "location"}:
        served = vehicle.car.served(call.now)
        body["vehiclestatus"] = refresh_status(served)
        body["vehicleLocation"] = location(served)
    return JSONResponse(body, status_code=202 if status == PENDING else 200)


def not_found(call: Call) -> Response:
    return v1_error(404, 4002, "no such resource")


def routes(sim: Simulator) -> list[BaseRoute]:
    g = partial(guarded, sim, V1)
    vehicle = PREFIX + "/{vehicle_id}"
    return [
        Route(PREFIX, g(list_vehicles), methods=["GET"]),
        Route(vehicle, g(get_vehicle), methods=["GET"]),
        Route(vehicle + "/location", g(get_location), methods=["GET"]),
        Route(vehicle + "/x-sim/hornLights", g(post_horn_lights), methods=["POST"]),
        Route(vehicle + "/x-sim/hornLights/{command_id}", g(poll_horn_lights), methods=["GET"]),
        Route(vehicle + "/{command}", g(post_command), methods=["POST"]),
        Route(vehicle + "/{command}/{command_id}", g(poll_command), methods=["GET"]),
        Route(PREFIX + "/{rest:path}", g(not_found)),
    ]
