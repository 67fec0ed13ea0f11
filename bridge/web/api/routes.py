"""/api/v1 resource routes: vehicle documents by scope, and commands through the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge.commands.parse import action_word, strict_json
from bridge.commands.reasons import Reason
from bridge.model import OPERATIONS, Command, CommandStatus, Scope, VehicleState
from bridge.mqtt.publisher import health_document, location_document, status_document
from bridge.web.api.auth import ApiError, Caller, insufficient_scope
from bridge.web.context import ctx
from bridge.web.ports import VehicleView

router = APIRouter(prefix="/api/v1", tags=["vehicles"])

VehicleSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", max_length=32)]


class ErrorBody(BaseModel):
    error: str
    error_description: str


class VehicleSummary(BaseModel):
    vehicle: str = Field(description="the owner's slug for the vehicle; never the VIN")
    name: str | None
    available: bool
    updated_at: str | None


class VehicleList(BaseModel):
    vehicles: list[VehicleSummary]


class Me(BaseModel):
    app: str
    name: str
    scopes: list[str]


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(max_length=16, description="LOCK, UNLOCK, START, STOP or PRESS")
    code: str | None = Field(default=None, max_length=16, description="step-up TOTP code")
    id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")


# The command body is read by `command_body`, not by FastAPI, so the document declares it here.
COMMAND_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": CommandRequest.model_json_schema()}},
    }
}


async def command_body(request: Request, caller: Caller) -> CommandRequest:
    """The command's JSON body, read once the caller is known (FastAPI would parse it first,
    answering a caller without a token about the body), and read as MQTT payloads are: a key
    given twice is refused, not settled by whichever one a parser keeps."""
    try:
        value = strict_json(await request.body())
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"body: bad JSON: {exc}"[:500]) from exc
    try:
        return CommandRequest.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


CommandBody = Annotated[CommandRequest, Depends(command_body)]


class CommandResult(BaseModel):
    id: str
    command: str
    action: str | None
    status: str = Field(description="rejected, accepted, succeeded, failed or timed_out")
    reason: str
    ts: str
    detail: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 422, 429, 503)
}


# A refused command answers with its result document; token and scope problems with an error.
_RESULT_OR_ERROR: dict[str, Any] = {"model": CommandResult | ErrorBody}
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": CommandResult, "description": "accepted by the car, or timed out waiting"},
    400: {**_RESULT_OR_ERROR, "description": "refused: malformed body or unknown action"},
    401: {"model": ErrorBody},
    403: {
        **_RESULT_OR_ERROR,
        "description": "refused: step-up code; or the scope (the result with error "
        "insufficient_scope)",
    },
    404: {**_RESULT_OR_ERROR, "description": "unknown vehicle"},
    409: {"model": CommandResult, "description": "refused: command id already used"},
    422: {"model": ErrorBody},
    429: {**_RESULT_OR_ERROR, "description": "refused: rate limit, budget, step-up lockout"},
    503: {"model": CommandResult, "description": "the bridge cannot take commands now"},
}


@router.get("/me", response_model=Me, responses=ERRORS, summary="The calling app and its scopes")
async def me(caller: Caller) -> Me:
    scopes = sorted(s.value for s in caller.scopes)
    return Me(app=caller.app.id, name=caller.app.name, scopes=scopes)


@router.get("/vehicles", response_model=VehicleList, responses=ERRORS, summary="List vehicles")
async def vehicles(request: Request, caller: Caller) -> VehicleList:
    views = ctx(request).vehicles.vehicles()
    return VehicleList(vehicles=[_summary(v) for v in views])


@router.get("/vehicles/{vehicle}/status", responses=ERRORS, summary="Status (read:status)")
async def status(request: Request, vehicle: VehicleSlug, caller: Caller) -> dict[str, Any]:
    """The same document as the MQTT `<base>/<vehicle>/status` topic."""
    caller.require(Scope.READ_STATUS)
    return {"vehicle": vehicle, **status_document(_state(request, vehicle))}


@router.get("/vehicles/{vehicle}/health", responses=ERRORS, summary="Health (read:health)")
async def health(request: Request, vehicle: VehicleSlug, caller: Caller) -> dict[str, Any]:
    """The same document as the MQTT `<base>/<vehicle>/health` topic."""
    caller.require(Scope.READ_HEALTH)
    return {"vehicle": vehicle, **health_document(_state(request, vehicle))}


@router.get("/vehicles/{vehicle}/location", responses=ERRORS, summary="Location (read:location)")
async def location(request: Request, vehicle: VehicleSlug, caller: Caller) -> dict[str, Any]:
    """The same document as the MQTT `<base>/<vehicle>/location` topic."""
    caller.require(Scope.READ_LOCATION)
    state = _state(request, vehicle)
    if state.location is None:
        raise ApiError(404, "no_data", "the car has not reported a location")
    return {"vehicle": vehicle, **location_document(state.location, state.updated_at)}


@router.post(
    "/vehicles/{vehicle}/commands/{command}",
    response_model=CommandResult,
    responses=COMMAND_RESPONSES,
    summary="Send a command (needs its command:* scope; unlock and remote start need a code)",
    openapi_extra=COMMAND_BODY,
)
async def command(
    request: Request, vehicle: VehicleSlug, command: Command, body: CommandBody, caller: Caller
) -> JSONResponse:
    """Run a command through the pipeline, which decides on the scopes of both the app and the
    token (`granted`): a command refused for its scope is recorded and alerted as over MQTT."""
    result = await ctx(request).pipeline.submit_api(
        caller.app.id,
        vehicle,
        command.value,
        body.action,
        code=body.code,
        id=body.id,
        granted=caller.scopes,
    )
    doc = result.as_document()
    status = result_status(doc)
    if doc.get("reason") == Reason.SCOPE_MISSING:
        return _scope_refusal(doc, command, body.action)
    headers = _retry_after(request, str(doc.get("reason"))) if status == 429 else None
    return JSONResponse(doc, status_code=status, headers=headers)


def _scope_refusal(doc: dict[str, Any], command: Command, action: str) -> JSONResponse:
    """403 insufficient_scope as RFC 6750 has it (error fields and the challenge naming the
    scope), on the command's result document, so a client reading either finds its answer."""
    scope = _command_scope(command, action)
    if scope is None:  # the pipeline knew the operation; this lookup reads the action as it does
        return JSONResponse(doc, status_code=403)
    error = insufficient_scope(scope)
    body = {"error": error.error, "error_description": error.description, **doc}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _retry_after(request: Request, reason: str) -> dict[str, str]:
    """A 429 says when trying again can help (RFC 6585): an upper bound, from the limit's own
    window: the rate limit's minute, the step-up lockout, the budget's hourly window."""
    settings = ctx(request).settings
    seconds = {
        Reason.RATE_LIMITED: 60,
        Reason.STEPUP_LOCKED_OUT: settings.stepup.lockout_s,
        Reason.BUDGET_EXHAUSTED: 3600,
    }.get(Reason(reason), 60)
    return {"Retry-After": str(int(seconds))}


def _command_scope(command: Command, action: str) -> Scope | None:
    """The scope the command needs, with the action read as the pipeline reads it (`lock` is
    LOCK); None for an action the command does not take."""
    word = action_word(action)
    entry = OPERATIONS.get((command, word)) if word is not None else None
    return entry[1] if entry is not None else None


# A refused command answers with the status that tells a client what to do next.
_REJECTION_STATUS: dict[str, int] = {
    Reason.UNKNOWN_VEHICLE: 404,
    Reason.DUPLICATE_ID: 409,
    Reason.RATE_LIMITED: 429,
    Reason.BUDGET_EXHAUSTED: 429,
    Reason.PROVIDER_RATE_LIMITED: 429,  # refused unsent: the car maker's Retry-After is ahead
    Reason.STEPUP_LOCKED_OUT: 429,
    Reason.MALFORMED: 400,
    Reason.UNKNOWN_ACTION: 400,
    Reason.UNKNOWN_COMMAND: 400,
    Reason.PAYLOAD_TOO_LARGE: 400,
    Reason.AUDIT_UNAVAILABLE: 503,
    Reason.AUDIT_TAMPERED: 503,
    Reason.AUDIT_UNCHECKED: 503,
    Reason.STATE_UNAVAILABLE: 503,
    Reason.SHUTTING_DOWN: 503,
}


def result_status(result: Mapping[str, Any]) -> int:
    """HTTP status for a command result: 200 done (even if the car said no), 202 still
    in flight, 4xx refused before reaching the car."""
    status = result.get("status")
    if status in {CommandStatus.ACCEPTED, CommandStatus.TIMED_OUT}:
        return 202
    if status != CommandStatus.REJECTED:
        return 200
    return _REJECTION_STATUS.get(str(result.get("reason")), 403)


def _state(request: Request, slug: str) -> VehicleState:
    """The latest state of one of the owner's vehicles, or 404."""
    for view in ctx(request).vehicles.vehicles():
        if view.slug == slug:
            if view.state is None:
                raise ApiError(404, "no_data", "nothing is known about this vehicle yet")
            return view.state
    raise ApiError(404, "unknown_vehicle", f"no vehicle {slug!r}")


def _summary(view: VehicleView) -> VehicleSummary:
    updated = view.state.updated_at if view.state else None
    return VehicleSummary(
        vehicle=view.slug,
        name=view.name,
        available=view.available,
        updated_at=updated.isoformat() if updated else None,
    )
