"""Admin ground truth under `/sim/` (only with `admin=True`, only for loopback clients).

Tests and benchmarks use it to see the car's TRUE state next to what the API served, to prove a
refused command never reached the car, and to steer the clock, faults and tokens.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.faults import Meter
from bridge.simulator.fleet import Vehicle
from bridge.simulator.guard import Endpoint
from bridge.simulator.state import (
    WHEELS,
    CarState,
    charge_display,
    engine_running,
    mode_of,
    remote_start_seconds_left,
)
from bridge.simulator.world import Simulator


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def truth_document(v: Vehicle, s: CarState) -> dict[str, Any]:
    """The car's real state, in plain units (admin only; the VIN appears here and in Query)."""
    level = "soc_pct" if v.spec.electric else "fuel_pct"
    return {
        "time": s.time.isoformat(),
        "mode": mode_of(s).value,
        "latitude": s.position.lat,
        "longitude": s.position.lon,
        "heading_deg": s.heading,
        "speed_kmh": s.speed,
        "odometer_km": s.odometer,
        level: s.energy,
        "range_km": s.range_km,
        "battery_12v_pct": s.battery_12v,
        "tyres_kpa": dict(zip(WHEELS, s.tyres, strict=True)),
        "oil_life_pct": s.oil_life,
        "doors_open": sorted(s.doors_open),
        "window_open_pct": s.window_open,
        "locked": s.locked,
        "ignition": s.ignition,
        "plugged": s.plugged,
        "charging": s.charging,
        "charge_display": charge_display(s, v.spec),
        "minutes_to_full": s.minutes_to_full,
        "engine_running": engine_running(s),
        "remote_start_seconds_left": remote_start_seconds_left(s),
        "remote_starts_left": s.remote_starts_left,
    }


def vehicle_document(v: Vehicle, now: datetime) -> dict[str, Any]:
    truth = v.car.truth(now)
    upload = v.car.last_upload(now)
    return {
        "vehicle_id": v.vehicle_id,
        "query_vehicle_id": v.query_id,
        "vin": v.vin,
        "profile": v.spec.profile.value,
        "model": v.spec.model_name,
        "electric": v.spec.electric,
        "mode": mode_of(truth).value,
        "truth": truth_document(v, truth),
        "last_upload": {"time": upload.time.isoformat(), "reason": upload.reason},
        "executed": [
            {
                "command": e.command,
                "at": e.at.isoformat(),
                "command_id": e.command_id,
                "account_id": e.account_id,
                "outcome": e.outcome,
            }
            for e in v.executed
        ],
    }


def _meter_document(m: Meter, now: datetime) -> dict[str, Any]:
    suspended = m.suspended_until is not None and now < m.suspended_until
    return {
        "calls": m.calls,
        "accepted": m.accepted,
        "throttled": m.throttled,
        "refused_suspended": m.refused_suspended,
        "calls_today": m.day_calls,
        "suspended": suspended,
        "suspended_until": m.suspended_until.isoformat()
        if suspended and m.suspended_until
        else None,
    }


def _time_document(sim: Simulator) -> dict[str, Any]:
    now = sim.now()
    return {"now": now.isoformat(), "epoch": now.timestamp(), "speed": sim.clock.speed}


async def vehicles(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    with sim.lock:
        now = sim.now()
        docs = [vehicle_document(v, now) for v in sim.vehicles]
    return JSONResponse({"now": now.isoformat(), "vehicles": docs})


async def accounts(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    with sim.lock:
        now = sim.now()
        docs = [
            {
                "account_id": a.account_id,
                "login_hint": a.login_hint,
                "vehicle_ids": list(a.vehicle_ids),
                **_meter_document(sim.limiter.meters.get(a.account_id, Meter()), now),
            }
            for a in sim.auth.accounts.values()
        ]
    return JSONResponse({"accounts": docs})


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _faults_document(sim: Simulator) -> dict[str, Any]:
    return {
        "rates": {k.value: v for k, v in sim.faults.rates.items()},
        "served": {k.value: n for k, n in sim.faults.served.items() if n},
    }


async def get_faults(request: Request) -> Response:
    return JSONResponse(_faults_document(request.app.state.sim))


async def set_faults(request: Request) -> Response:
    """Body: `{"spec": "5xx=0.1,drop=0.02"}` (an empty spec clears every fault)."""
    sim: Simulator = request.app.state.sim
    body = await _json_body(request)
    spec = body.get("spec") if body is not None else None
    if not isinstance(spec, str):
        return _bad('expected {"spec": "KIND=RATE,..."}')
    try:
        sim.set_faults(spec)
    except ValueError as exc:
        return _bad(str(exc))
    return JSONResponse(_faults_document(sim))


async def set_clock(request: Request) -> Response:
    """Body: `{"advance": seconds}` or `{"to": "ISO-8601"}`; time only moves forward."""
    sim: Simulator = request.app.state.sim
    body = await _json_body(request) or {}
    try:
        seconds = _jump_seconds(sim, body)
        with sim.lock:
            sim.clock.jump(seconds)
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))
    return JSONResponse(_time_document(sim))


def _jump_seconds(sim: Simulator, body: dict[str, Any]) -> float:
    if "advance" in body:
        return float(body["advance"])
    if "to" in body:
        target = datetime.fromisoformat(str(body["to"]))
        return (target - sim.now()).total_seconds()
    raise ValueError('expected {"advance": seconds} or {"to": "ISO-8601 time"}')


async def expire_tokens(request: Request) -> Response:
    return JSONResponse({"expired": request.app.state.sim.expire_tokens()})


async def get_time(request: Request) -> Response:
    return JSONResponse(_time_document(request.app.state.sim))


def _loopback_only(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        if not _loopback(request):
            return _bad("admin endpoints answer loopback clients only", 403)
        return await endpoint(request)

    return guarded


def routes() -> list[BaseRoute]:
    table = [
        ("/sim/vehicles", vehicles, "GET"),
        ("/sim/accounts", accounts, "GET"),
        ("/sim/faults", get_faults, "GET"),
        ("/sim/faults", set_faults, "POST"),
        ("/sim/clock", set_clock, "POST"),
        ("/sim/tokens/expire", expire_tokens, "POST"),
        ("/sim/time", get_time, "GET"),
    ]
    return [Route(path, _loopback_only(fn), methods=[method]) for path, fn, method in table]
