"""The path every API request takes: fault draw, headers, bearer token, account limits, handler.

Faults drawn before the handler (5xx, 429, expire) mean the service never saw the call; faults
drawn after it (slow, timeout, drop, malformed) spoil the answer to work that was done.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.simulator.auth import Account
from bridge.simulator.faults import FaultKind
from bridge.simulator.world import Simulator

MALFORMED_BODY = b"<html><body><h1>Service Unavailable</h1>"
Endpoint = Callable[[Request], Awaitable[Response]]


class SimulatedDrop(ConnectionResetError):
    """Raised after a partial answer so the server drops the connection (a `drop` fault)."""


class DropResponse(Response):
    """Starts an answer, sends part of the body, then breaks the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"status":"SUCC', "more_body": True})
        raise SimulatedDrop("simulated dropped connection")


@dataclass(frozen=True, slots=True)
class Call:
    """An authenticated API call that passed the account's limits."""

    sim: Simulator
    request: Request
    account: Account
    now: datetime


Handler = Callable[[Call], Response]


@dataclass(frozen=True, slots=True)
class Surface:
    """How one API family checks headers and spells its errors."""

    faults: frozenset[FaultKind]
    error: Callable[[Request, Simulator, int, str], Response]
    invalid_token: Callable[[Request, Simulator], Response]
    check_headers: Callable[[Request, Simulator], Response | None]
    check_after_token: Callable[[Request, Simulator], Response | None]


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def guarded(sim: Simulator, surface: Surface, handler: Handler) -> Endpoint:
    """Wrap a handler in the request path shared by the v1 and Query APIs."""

    async def endpoint(request: Request) -> Response:
        with sim.lock:
            fault = sim.faults.roll(surface.faults)
            response = _before(sim, surface, request, fault) or _serve(
                sim, surface, request, handler
            )
        return await after(sim, fault, response)

    return endpoint


def _before(
    sim: Simulator, surface: Surface, request: Request, fault: FaultKind | None
) -> Response | None:
    if fault is FaultKind.SERVER_ERROR:
        return surface.error(request, sim, sim.faults.pick_status(), "simulated upstream failure")
    if fault is FaultKind.RATE_LIMIT:
        response = surface.error(request, sim, 429, "simulated burst of throttling")
        response.headers["Retry-After"] = str(sim.timings.fault_retry_after_s)
        return response
    if fault is FaultKind.EXPIRE:
        token = bearer(request)
        if token is not None:
            sim.auth.expire(token)
    return None


def _serve(sim: Simulator, surface: Surface, request: Request, handler: Handler) -> Response:
    now = sim.now()
    refusal = surface.check_headers(request, sim)
    if refusal is not None:
        return refusal
    token = bearer(request)
    grant = sim.auth.lookup(token, now) if token is not None else None
    if grant is None:
        return surface.invalid_token(request, sim)
    refusal = surface.check_after_token(request, sim)
    if refusal is not None:
        return refusal
    verdict = sim.limiter.check(grant.account_id, now)
    if verdict.kind == "suspended":
        return surface.error(request, sim, 403, "account suspended for excessive requests")
    if verdict.kind == "throttle":
        response = surface.error(request, sim, 429, "rate limit exceeded")
        response.headers["Retry-After"] = str(retry_after(sim, verdict.retry_after_s))
        return response
    return handler(Call(sim, request, sim.account(grant.account_id), now))


def retry_after(sim: Simulator, sim_seconds: float) -> int:
    """`Retry-After` in whole real seconds (at least 1) for a simulated wait."""
    return max(1, math.ceil(sim.real_seconds(sim_seconds)))


async def after(sim: Simulator, fault: FaultKind | None, response: Response) -> Response:
    """Apply a fault that strikes on the way back."""
    if fault is FaultKind.SLOW:
        await asyncio.sleep(sim.timings.slow_delay_s)
    elif fault is FaultKind.TIMEOUT:
        await asyncio.sleep(sim.timings.timeout_delay_s)
    elif fault is FaultKind.DROP:
        return DropResponse()
    elif fault is FaultKind.MALFORMED:
        return Response(MALFORMED_BODY, status_code=200, media_type="application/json")
    return response
