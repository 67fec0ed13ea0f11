"""The FordConnect (v1) provider: reads and asynchronous commands, one account, several vehicles.

A command is a POST answered with a command id; the car's verdict comes from polling
`GET …/{command}/{commandId}` until it leaves PENDINGRESPONSE. A command whose verdict never
arrives may still have run on the car, so it ends `timed_out`, never `failed`. A 429 or 403 on a
status poll ends the following at once (no call before Retry-After, none to a refused account).
A 429 is handed to `on_refused`, since nothing raises it to the poller; a 403 is not: like a 403
to the command itself it may be this car's refusal (its remote-start allowance), and the read that
confirms every command meets it again if it is the car's or the account's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.errors import (
    BudgetExhausted,
    Forbidden,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Unsupported,
)
from bridge.logs import get_logger
from bridge.model import (
    CommandOutcome,
    CommandStatus,
    Operation,
    Powertrain,
    VehicleInfo,
    VehicleState,
)
from bridge.providers.base import CallKind, OnAccepted, OnRefused
from bridge.providers.http import AuthorizedApi
from bridge.providers.stamps import epoch_time
from bridge.providers.v1_map import list_entry_to_info, vehicle_to_state
from bridge.providers.values import dig, text

V1_BASE_URL = "https://api.mps.ford.com/api/fordconnect/vehicles/v1"
# Ford checks this on every v1 call; without it the answer is 401 "missing subscription key".
API_VERSION = "2020-06-01"
PENDING = "PENDINGRESPONSE"
# The simulator's horn-and-lights extension; Ford's v1 has no such command.
HORN_LIGHTS_PATH = "x-sim/hornLights"
# Every status poll is a call from the account's budget (40 an hour by default). A car that has not
# answered in the first seconds is asleep or out of coverage and takes tens of seconds, so the
# pause doubles from `status_poll_interval_s` up to this…
MAX_POLL_PAUSE_S = 30.0
# …and one command spends at most this many status polls: with the defaults (2 s, 120 s) they
# land 2, 6, 14, 30, 60, 90 and 120 s after the POST, where polling every 2 s spent 60 calls.
MAX_STATUS_POLLS = 8

# Operation → (POST path segment, GET path segment for its status).
COMMAND_PATHS: dict[Operation, tuple[str, str]] = {
    Operation.LOCK: ("lock", "lock"),
    Operation.UNLOCK: ("unlock", "unlock"),
    Operation.START_ENGINE: ("startEngine", "startEngine"),
    Operation.STOP_ENGINE: ("stopEngine", "stopEngine"),
    Operation.START_CHARGE: ("startCharge", "startCharge"),
    Operation.STOP_CHARGE: ("stopCharge", "stopCharge"),
    Operation.REFRESH: ("status", "statusrefresh"),
    Operation.HORN_LIGHTS: (HORN_LIGHTS_PATH, HORN_LIGHTS_PATH),
}
ALWAYS = frozenset(
    {
        Operation.LOCK,
        Operation.UNLOCK,
        Operation.START_ENGINE,
        Operation.STOP_ENGINE,
        Operation.REFRESH,
    }
)
# Ford answers startCharge/stopCharge on a combustion car with 406; offer them for EVs only.
EV_ONLY = frozenset({Operation.START_CHARGE, Operation.STOP_CHARGE})

Sleep = Callable[[float], Awaitable[None]]
log = get_logger(__name__)


def v1_headers(application_id: str | None) -> dict[str, str]:
    """The headers every v1 call carries besides the bearer token."""
    headers = {"api-version": API_VERSION}
    if application_id:
        headers["Application-Id"] = application_id
    return headers


class FordConnectProvider:
    """FordConnect v1 for one account. Build it with `factory.build_providers` or by hand."""

    def __init__(
        self,
        account: str,
        *,
        api: AuthorizedApi,
        base_url: str = V1_BASE_URL,
        poll_interval_s: float = 2.0,
        command_timeout_s: float = 120.0,
        horn_lights_extension: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_refused: OnRefused | None = None,
        wall_clock: Callable[[], float] | None = time.time,
    ) -> None:
        self.account = account
        self._api = api
        self._base = base_url.rstrip("/")
        self._poll_interval = poll_interval_s
        self._timeout = command_timeout_s
        self._horn_lights = horn_lights_extension
        self._clock = clock
        self._sleep = sleep
        self._on_refused = on_refused
        # Epoch seconds: what a car's upload stamp is checked against (None: only that it is
        # after 2000, for a simulator whose clock may run ahead of ours).
        self._wall_clock = wall_clock

    async def list_vehicles(self) -> list[VehicleInfo]:
        """The consent's vehicles; details are fetched where the list lacks the powertrain."""
        doc = await self._api.call("GET", self._base, kind=CallKind.READ)
        entries = doc.get("vehicles")
        if not isinstance(entries, list):
            raise ProviderUnavailable("GET vehicles: the answer has no `vehicles` list")
        infos = [info for e in entries if isinstance(e, dict) and (info := list_entry_to_info(e))]
        return [await self._complete(info) for info in infos]

    async def _complete(self, info: VehicleInfo) -> VehicleInfo:
        # The list omits engineType; the powertrain decides whether charge commands are offered.
        if info.powertrain is not Powertrain.UNKNOWN:
            return info
        vehicle = await self._vehicle(info.vehicle_id)
        return list_entry_to_info({**vehicle, "vehicleId": info.vehicle_id}) or info

    async def read(self, vehicle_id: str) -> VehicleState:
        """One `GET /{id}`: details, status and location as the car last uploaded them."""
        vehicle = await self._vehicle(vehicle_id)
        return vehicle_to_state(vehicle, vehicle_id, now=epoch_time(self._wall_clock))

    async def _vehicle(self, vehicle_id: str) -> dict[str, Any]:
        doc = await self._api.call("GET", f"{self._base}/{vehicle_id}", kind=CallKind.READ)
        vehicle = doc.get("vehicle")
        if not isinstance(vehicle, dict):
            raise ProviderUnavailable("GET vehicle: the answer has no `vehicle` object")
        return vehicle

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        """Lock, remote start and refresh for all; charging for EVs; horn only on the simulator."""
        ops = set(ALWAYS)
        if info.powertrain is Powertrain.EV:
            ops |= EV_ONLY
        if self._horn_lights:
            ops.add(Operation.HORN_LIGHTS)
        return frozenset(ops)

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        """POST the command, report acceptance, then poll to COMPLETED, FAILED or the timeout."""
        if operation is Operation.HORN_LIGHTS and not self._horn_lights:
            raise Unsupported("horn and lights is not part of FordConnect v1")
        post_path, poll_path = COMMAND_PATHS[operation]
        answer = await self._api.call(
            "POST", f"{self._base}/{vehicle_id}/{post_path}", kind=CallKind.COMMAND
        )
        command_id = text(answer.get("commandId"))
        if command_id is None:
            return _without_id(answer)
        log.info(
            "provider.command_accepted",
            account=self.account,
            command=operation.value,
            command_id=command_id,
        )
        if on_accepted is not None:
            await on_accepted(command_id)
        return await self._follow(f"{self._base}/{vehicle_id}/{poll_path}/{command_id}", command_id)

    async def _follow(self, url: str, command_id: str) -> CommandOutcome:
        """Poll the command's status, backing off, until it is final, the deadline passes or the
        command has spent its status polls; the confirmation read then shows what the car did."""
        deadline = self._clock() + self._timeout
        for pause in status_poll_pauses(self._poll_interval):
            await self._sleep(min(pause, max(0.0, deadline - self._clock())))
            outcome = await self._poll(url, command_id)
            if outcome is not None:
                return outcome
            if self._clock() >= deadline:
                return CommandOutcome(
                    CommandStatus.TIMED_OUT, "no verdict from the car in time", command_id
                )
        return CommandOutcome(
            CommandStatus.TIMED_OUT,
            f"no verdict from the car after {MAX_STATUS_POLLS} status polls",
            command_id,
        )

    async def _poll(self, url: str, command_id: str) -> CommandOutcome | None:
        """One status poll: the final outcome if there is one (None: ask again later)."""
        try:
            answer = await self._api.call("GET", url, kind=CallKind.COMMAND)
        except ProviderUnavailable as exc:
            # The command is with the car already; a hiccup on the status poll changes nothing.
            log.info("provider.command_poll_retry", command_id=command_id, error=str(exc))
            return None
        except RateLimited as exc:
            # Waiting out Retry-After here would leave the owner without a result for minutes
            # (and a shorter wait would break it): the verdict is lost, the account's guard is
            # told, and the confirmation read after the block shows what the car did.
            self._tell_guard(exc)
            return _lost(exc, command_id)
        except Forbidden as exc:
            # Not the account's guard's to hear: taken for a suspension, one car's refusal
            # would stop every car of the account for a day (see the module's docstring).
            return _lost(exc, command_id)
        except (NotFound, BudgetExhausted) as exc:
            # An expired command id (401/3000) or no budget left to ask: the verdict is lost.
            return _lost(exc, command_id)
        return _outcome_of(answer, command_id)

    def _tell_guard(self, exc: RateLimited) -> None:
        if self._on_refused is None:
            return
        try:
            self._on_refused(self.account, exc)
        except Exception:  # the command's own ending must not turn into an internal error
            log.exception("could not pass a refusal on to the account's guard")

    async def aclose(self) -> None:
        await self._api.aclose()


def status_poll_pauses(interval_s: float) -> tuple[float, ...]:
    """The wait before each of a command's status polls: `interval_s`, doubling, at most
    `MAX_POLL_PAUSE_S` (or the interval, if that is longer); `MAX_STATUS_POLLS` of them."""
    cap = max(interval_s, MAX_POLL_PAUSE_S)
    return tuple(min(interval_s * 2.0**n, cap) for n in range(MAX_STATUS_POLLS))


def _outcome_of(answer: dict[str, Any], command_id: str | None) -> CommandOutcome | None:
    """The final outcome a status answer carries, or None while the car has not answered."""
    status = (text(answer.get("commandStatus")) or "").upper()
    if status == PENDING:
        return None
    if status == "COMPLETED":
        return CommandOutcome(CommandStatus.SUCCEEDED, "", command_id)
    if status == "FAILED":
        return CommandOutcome(CommandStatus.FAILED, _failure_reason(answer), command_id)
    # EMPTY or anything unknown: the car may or may not have acted; never claim it failed.
    return CommandOutcome(
        CommandStatus.TIMED_OUT, f"command status {status or 'missing'}", command_id
    )


def _without_id(answer: dict[str, Any]) -> CommandOutcome:
    """An acceptance without a command id cannot be followed: only an explicit FAILED is final."""
    if (text(answer.get("commandStatus")) or "").upper() == "FAILED":
        return CommandOutcome(CommandStatus.FAILED, _failure_reason(answer))
    return CommandOutcome(CommandStatus.TIMED_OUT, "accepted without a command id to follow")


def _failure_reason(answer: dict[str, Any]) -> str:
    for value in (
        dig(answer, "error", "details"),
        dig(answer, "error", "title"),
        answer.get("message"),
        answer.get("reason"),
    ):
        if reason := text(value):
            return reason
    return "the car reported the command failed"


# Why a status poll could not get the verdict, as the result's reason word (CommandOutcome.cause).
_LOST_CAUSES: tuple[tuple[type[ProviderError], str], ...] = (
    (BudgetExhausted, "budget_exhausted"),
    (RateLimited, "provider_rate_limited"),
    (Forbidden, "forbidden"),
    (NotFound, "not_found"),
)


def _lost(exc: ProviderError, command_id: str) -> CommandOutcome:
    """The command's verdict is out of reach: timed_out (it may have run), saying why."""
    cause = next((word for kind, word in _LOST_CAUSES if isinstance(exc, kind)), None)
    return CommandOutcome(CommandStatus.TIMED_OUT, _reason(exc), command_id, cause)


def _reason(exc: ProviderError) -> str:
    return f"status unknown: {type(exc).__name__}"
