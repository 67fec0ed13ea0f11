"""The FordConnect v1 provider against a scripted server: headers, reads, commands, capabilities."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.errors import (
    Forbidden,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    ReauthRequired,
    Unsupported,
)
from bridge.model import (
    ChargingState,
    CommandStatus,
    EngineState,
    Ignition,
    LockState,
    OpenState,
    Operation,
    Powertrain,
    VehicleInfo,
)
from bridge.providers.base import CallKind, OnRefused
from bridge.providers.fordconnect import (
    MAX_STATUS_POLLS,
    FordConnectProvider,
    status_poll_pauses,
)
from bridge.providers.fordconnect_query import FordConnectQueryProvider
from bridge.providers.v1_map import vehicle_to_state
from tests.providers.support import V1, VEHICLE, Rig, ok, rig

P = f"/api/fordconnect/vehicles/v1/{VEHICLE}"
INFO_EV = VehicleInfo(VEHICLE, powertrain=Powertrain.EV)
INFO_ICE = VehicleInfo(VEHICLE, powertrain=Powertrain.ICE)

VEHICLE_DOC: dict[str, Any] = {
    "status": "SUCCESS",
    "vehicle": {
        "vehicleId": VEHICLE,
        "make": "F",
        "modelName": "Mustang Mach-E",
        "modelYear": "2022",
        "nickName": "Sparky",
        "engineType": "EV",
        "lastUpdated": "06-15-2021 14:01:02",
        "vehicleDetails": {
            "fuelLevel": {"value": None, "distanceToEmpty": 0},
            "batteryChargeLevel": {"value": 80, "distanceToEmpty": 304.0},
            "mileage": 310.7,
            "odometer": 500.0,
        },
        "vehicleStatus": {
            "tirePressureWarning": False,
            "remoteStartStatus": {"status": "ENGINE_STOPPED", "duration": 0},
            "chargingStatus": {"value": "ChargingAC"},
            "plugStatus": {"value": True},
            "ignitionStatus": {"value": "OFF"},
            "lockStatus": {"value": "LOCKED"},
            "alarm": {"value": "SET"},
            "doorStatus": [
                {
                    "vehicleDoor": "UNSPECIFIED_FRONT",
                    "value": "CLOSED",
                    "vehicleOccupantRole": "DRIVER",
                },
                {
                    "vehicleDoor": "UNSPECIFIED_FRONT",
                    "value": "AJAR",
                    "vehicleOccupantRole": "PASSENGER",
                },
                {"vehicleDoor": "TAILGATE", "value": "CLOSED", "vehicleOccupantRole": "PASSENGER"},
            ],
            "tirePressure": [{"vehicleWheel": "FRONT_LEFT", "value": 35.0, "unit": "psi"}],
        },
        "vehicleLocation": {
            "longitude": "-83.2",
            "latitude": "42.3",
            "speed": 0.0,
            "direction": "NorthEast",
            "timeStamp": "06-15-2021 14:01:02",
        },
    },
}


def provider(
    r: Rig,
    *,
    horn: bool = False,
    timeout: float = 30.0,
    refused: list[tuple[str, ProviderError]] | None = None,
    on_refused: OnRefused | None = None,
) -> FordConnectProvider:
    """A v1 provider on the rig with a fake clock, so polling takes no real time; the 429s and
    403s its status polls meet are collected in `refused`."""
    return FordConnectProvider(
        "acct",
        api=r.parts.api,
        base_url=V1,
        poll_interval_s=2.0,
        command_timeout_s=timeout,
        horn_lights_extension=horn,
        clock=r.clock,
        sleep=r.clock.sleep,
        on_refused=on_refused
        if refused is None
        else lambda account, exc: refused.append((account, exc)),
    )


def accepted(command_id: str = "cmd-1") -> httpx.Response:
    return ok({"status": "SUCCESS", "commandStatus": "COMPLETED", "commandId": command_id}, 202)


def polled(status: str) -> httpx.Response:
    code = 202 if status == "PENDINGRESPONSE" else 200
    return ok({"status": "SUCCESS", "commandStatus": status, "commandId": "cmd-1"}, code)


async def test_every_v1_call_carries_application_id_and_api_version(tmp_path: Path) -> None:
    """v1 requests send Application-Id, api-version 2020-06-01 and the bearer token."""
    r = rig(tmp_path)
    r.ford.on("GET", P, ok(VEHICLE_DOC))
    await provider(r).read(VEHICLE)
    headers = r.ford.api_requests()[0].headers
    assert headers["Application-Id"] == "app-id-123"
    assert headers["api-version"] == "2020-06-01"
    assert headers["Authorization"] == "Bearer access-seed-secretish"
    await r.parts.api.aclose()


async def test_read_maps_the_vehicle_document(tmp_path: Path) -> None:
    """`GET /{id}` maps to the normalised state, with lastUpdated as UTC and psi as kPa."""
    r = rig(tmp_path)
    r.ford.on("GET", P, ok(VEHICLE_DOC))
    state = await provider(r).read(VEHICLE)
    assert state.updated_at == datetime(2021, 6, 15, 14, 1, 2, tzinfo=UTC)
    s = state.status
    assert (s.lock, s.ignition, s.engine) == (LockState.LOCKED, Ignition.OFF, EngineState.STOPPED)
    assert (s.battery_level_pct, s.fuel_level_pct, s.range_km, s.odometer_km) == (
        80.0,
        None,
        304.0,
        500.0,
    )
    assert (s.charging, s.plugged_in, s.alarm) == (ChargingState.CHARGING, True, "armed")
    assert s.doors == {
        "front_driver": OpenState.CLOSED,
        "front_passenger": OpenState.OPEN,
        "tailgate": OpenState.CLOSED,
    }
    assert state.health.tyre_pressures_kpa == {"front_left": 241.3}
    assert state.health.tyre_pressure_warning is False
    assert state.location is not None
    assert (state.location.latitude, state.location.longitude) == (42.3, -83.2)
    assert state.location.heading_deg == 45.0
    await r.parts.api.aclose()


async def test_a_sparse_vehicle_document_is_unknown_not_an_error(tmp_path: Path) -> None:
    """A vehicle object with nothing but an id maps to an all-unknown state."""
    r = rig(tmp_path)
    r.ford.on("GET", P, ok({"vehicle": {"vehicleId": VEHICLE, "vehicleStatus": None}}))
    state = await provider(r).read(VEHICLE)
    assert state.updated_at is None and state.location is None
    assert state.status.lock is LockState.UNKNOWN
    await r.parts.api.aclose()


async def test_an_answer_without_a_vehicle_object_is_unavailable(tmp_path: Path) -> None:
    """A 200 lacking the `vehicle` object is a broken answer (ProviderUnavailable)."""
    r = rig(tmp_path)
    r.ford.on("GET", P, ok({"status": "SUCCESS"}))
    with pytest.raises(ProviderUnavailable):
        await provider(r).read(VEHICLE)
    await r.parts.api.aclose()


async def test_list_fetches_details_only_where_the_powertrain_is_missing(tmp_path: Path) -> None:
    """Entries with engineType are taken as they are; others cost one detail read each."""
    r = rig(tmp_path)
    other = "f" * 32
    r.ford.on(
        "GET",
        "/api/fordconnect/vehicles/v1",
        ok(
            {
                "vehicles": [
                    {
                        "vehicleId": VEHICLE,
                        "make": "F",
                        "modelName": "Mustang Mach-E",
                        "modelYear": "2022",
                    },
                    {"vehicleId": other, "make": "F", "modelName": "F-150", "engineType": "ICE"},
                ]
            }
        ),
    )
    r.ford.on("GET", P, ok(VEHICLE_DOC))
    vehicles = await provider(r).list_vehicles()
    assert [(v.vehicle_id, v.make, v.powertrain) for v in vehicles] == [
        (VEHICLE, "Ford", Powertrain.EV),
        (other, "Ford", Powertrain.ICE),
    ]
    assert [req.url.path for req in r.ford.api_requests()] == ["/api/fordconnect/vehicles/v1", P]
    await r.parts.api.aclose()


async def test_a_command_reports_acceptance_then_completes(tmp_path: Path) -> None:
    """lock: POST, on_accepted(id) before any poll, poll until COMPLETED → succeeded."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", polled("PENDINGRESPONSE"), polled("COMPLETED"))
    seen: list[tuple[str, int]] = []

    async def on_accepted(command_id: str) -> None:
        seen.append((command_id, len(r.ford.api_requests())))

    outcome = await provider(r).execute(VEHICLE, Operation.LOCK, on_accepted=on_accepted)
    assert outcome.status is CommandStatus.SUCCEEDED
    assert outcome.provider_command_id == "cmd-1"
    assert seen == [("cmd-1", 1)]  # accepted after the POST, before the first poll
    assert r.gate.kinds() == [CallKind.COMMAND] * 3
    await r.parts.api.aclose()


@pytest.mark.parametrize(
    ("operation", "post", "poll"),
    [
        (Operation.LOCK, "lock", "lock"),
        (Operation.UNLOCK, "unlock", "unlock"),
        (Operation.START_ENGINE, "startEngine", "startEngine"),
        (Operation.STOP_ENGINE, "stopEngine", "stopEngine"),
        (Operation.START_CHARGE, "startCharge", "startCharge"),
        (Operation.STOP_CHARGE, "stopCharge", "stopCharge"),
        (Operation.REFRESH, "status", "statusrefresh"),
    ],
)
async def test_operations_map_to_fords_paths(
    tmp_path: Path, operation: Operation, post: str, poll: str
) -> None:
    """Each operation POSTs its v1 command and polls its status path."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/{post}", accepted())
    r.ford.on("GET", f"{P}/{poll}/cmd-1", polled("COMPLETED"))
    outcome = await provider(r).execute(VEHICLE, operation)
    assert outcome.status is CommandStatus.SUCCEEDED
    await r.parts.api.aclose()


async def test_a_failed_command_is_failed_with_a_reason(tmp_path: Path) -> None:
    """commandStatus FAILED → failed, with the server's details as the reason."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/unlock", accepted())
    r.ford.on(
        "GET",
        f"{P}/unlock/cmd-1",
        ok(
            {
                "status": "FAILED",
                "commandStatus": "FAILED",
                "error": {"details": "vehicle is moving"},
            }
        ),
    )
    outcome = await provider(r).execute(VEHICLE, Operation.UNLOCK)
    assert (outcome.status, outcome.reason) == (CommandStatus.FAILED, "vehicle is moving")
    await r.parts.api.aclose()


async def test_a_command_that_stays_pending_times_out_never_fails(tmp_path: Path) -> None:
    """PENDINGRESPONSE until the deadline → timed_out (it may still have run on the car)."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", polled("PENDINGRESPONSE"))
    start = r.clock.now
    outcome = await provider(r, timeout=30).execute(VEHICLE, Operation.LOCK)
    assert outcome.status is CommandStatus.TIMED_OUT
    assert r.clock.now - start == pytest.approx(30)
    assert len(r.ford.api_requests()) == 1 + 4  # polls 2, 6, 14 and 30 s after the POST
    await r.parts.api.aclose()


async def test_status_polls_back_off_and_stop_at_the_cap(tmp_path: Path) -> None:
    """Status polls double their pause from the interval up to 30 s, and a command spends at
    most MAX_STATUS_POLLS of them, however long its timeout: then it is timed_out."""
    r = rig(tmp_path)
    polled_at: list[float] = []

    def pending(request: httpx.Request) -> httpx.Response:
        polled_at.append(r.clock.now)
        return polled("PENDINGRESPONSE")

    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", pending)
    start = r.clock.now
    outcome = await provider(r, timeout=600).execute(VEHICLE, Operation.LOCK)
    assert outcome.status is CommandStatus.TIMED_OUT
    assert f"after {MAX_STATUS_POLLS} status polls" in outcome.reason
    assert [t - start for t in polled_at] == [2, 6, 14, 30, 60, 90, 120, 150]
    await r.parts.api.aclose()


def test_status_poll_pauses_start_at_the_configured_interval() -> None:
    """A tiny configured interval (tests, the benchmark) stays tiny at first; a long one is kept."""
    assert status_poll_pauses(0.02)[:3] == (0.02, 0.04, 0.08)
    assert status_poll_pauses(2.0) == (2, 4, 8, 16, 30, 30, 30, 30)
    assert set(status_poll_pauses(40.0)) == {40.0}


async def test_poll_hiccups_are_retried_within_the_deadline(tmp_path: Path) -> None:
    """A 503 while polling does not end the command; the next poll can complete it."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", ok({}, 503), polled("COMPLETED"))
    start = r.clock.now
    outcome = await provider(r).execute(VEHICLE, Operation.LOCK)
    assert outcome.status is CommandStatus.SUCCEEDED
    assert r.clock.now - start == pytest.approx(2 + 4)
    await r.parts.api.aclose()


async def test_a_429_on_a_status_poll_ends_the_command_and_nothing_follows(
    tmp_path: Path,
) -> None:
    """A 429 (Retry-After 300) on a status poll: timed_out at once, no further call however
    near the deadline, and the 429 is handed on for the account's guard."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", ok({}, 429, **{"Retry-After": "300"}), polled("COMPLETED"))
    refused: list[tuple[str, ProviderError]] = []
    outcome = await provider(r, refused=refused).execute(VEHICLE, Operation.LOCK)
    assert (outcome.status, outcome.cause) == (CommandStatus.TIMED_OUT, "provider_rate_limited")
    assert [req.method for req in r.ford.api_requests()] == ["POST", "GET"]
    [(account, error)] = refused
    assert account == "acct"
    assert isinstance(error, RateLimited)
    assert error.retry_after == 300
    await r.parts.api.aclose()


async def test_a_guard_failing_on_a_status_polls_429_still_ends_the_command_timed_out(
    tmp_path: Path,
) -> None:
    """If handing the 429 on fails, the command still ends as the 429 says, not as an error."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", ok({}, 429, **{"Retry-After": "300"}))

    def broken_guard(_account: str, _exc: ProviderError) -> None:
        raise OverflowError("date value out of range")

    outcome = await provider(r, on_refused=broken_guard).execute(VEHICLE, Operation.LOCK)
    assert (outcome.status, outcome.cause) == (CommandStatus.TIMED_OUT, "provider_rate_limited")
    await r.parts.api.aclose()


async def test_a_403_on_a_status_poll_is_timed_out_and_not_taken_for_the_account(
    tmp_path: Path,
) -> None:
    """A 403 on a status poll after acceptance: timed_out (the car may have acted), never
    failed, no further call; and not handed on, since it may be this car's refusal alone (the
    confirmation read tells the car's from the account's, as every read's 403 does)."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", ok({"error": {"details": "suspended"}}, 403))
    refused: list[tuple[str, ProviderError]] = []
    outcome = await provider(r, refused=refused).execute(VEHICLE, Operation.LOCK)
    assert (outcome.status, outcome.cause) == (CommandStatus.TIMED_OUT, "forbidden")
    assert len(r.ford.api_requests()) == 2
    assert refused == []
    await r.parts.api.aclose()


async def test_an_expired_command_id_is_timed_out(tmp_path: Path) -> None:
    """401/3000 on the poll (command id expired) ends as timed_out, without a token refresh."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", accepted())
    r.ford.on("GET", f"{P}/lock/cmd-1", ok({"error": {"code": 3000, "details": "expired"}}, 401))
    outcome = await provider(r).execute(VEHICLE, Operation.LOCK)
    assert (outcome.status, outcome.cause) == (CommandStatus.TIMED_OUT, "not_found")
    assert r.ford.token_requests() == []
    await r.parts.api.aclose()


async def test_406_on_a_command_is_unsupported(tmp_path: Path) -> None:
    """startCharge answered 406 (a combustion car) raises Unsupported, nothing accepted."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/startCharge", ok({"error": {"code": 4006}}, 406))
    accepted_ids: list[str] = []

    async def on_accepted(command_id: str) -> None:
        accepted_ids.append(command_id)

    with pytest.raises(Unsupported):
        await provider(r).execute(VEHICLE, Operation.START_CHARGE, on_accepted=on_accepted)
    assert accepted_ids == []
    await r.parts.api.aclose()


async def test_403_on_remote_start_is_forbidden(tmp_path: Path) -> None:
    """A used-up remote-start allowance (403) raises Forbidden with the reason."""
    r = rig(tmp_path)
    body = {"error": {"code": 403, "details": "remote start limit reached"}}
    r.ford.on("POST", f"{P}/startEngine", ok(body, 403))
    with pytest.raises(Forbidden, match="remote start limit"):
        await provider(r).execute(VEHICLE, Operation.START_ENGINE)
    await r.parts.api.aclose()


async def test_horn_lights_uses_the_simulator_extension_only_when_enabled(tmp_path: Path) -> None:
    """Horn/lights is Unsupported without the extension (no request); with it, x-sim/hornLights."""
    r = rig(tmp_path)
    with pytest.raises(Unsupported):
        await provider(r).execute(VEHICLE, Operation.HORN_LIGHTS)
    assert r.ford.requests == []
    r.ford.on("POST", f"{P}/x-sim/hornLights", accepted())
    r.ford.on("GET", f"{P}/x-sim/hornLights/cmd-1", polled("COMPLETED"))
    outcome = await provider(r, horn=True).execute(VEHICLE, Operation.HORN_LIGHTS)
    assert outcome.status is CommandStatus.SUCCEEDED
    await r.parts.api.aclose()


async def test_an_acceptance_without_a_command_id_is_not_claimed_done(tmp_path: Path) -> None:
    """A 202 without a commandId cannot be followed: timed_out, not succeeded."""
    r = rig(tmp_path)
    r.ford.on("POST", f"{P}/lock", ok({"status": "SUCCESS", "commandStatus": "COMPLETED"}, 202))
    outcome = await provider(r).execute(VEHICLE, Operation.LOCK)
    assert outcome.status is CommandStatus.TIMED_OUT
    await r.parts.api.aclose()


async def test_reauth_during_a_command_post_propagates(tmp_path: Path) -> None:
    """Without a login the command is never sent: ReauthRequired."""
    r = rig(tmp_path, logged_in=False)
    with pytest.raises(ReauthRequired):
        await provider(r).execute(VEHICLE, Operation.LOCK)
    assert r.ford.requests == []
    await r.parts.api.aclose()


def test_supported_operations_follow_powertrain_and_provider(tmp_path: Path) -> None:
    """EVs get charging, combustion cars do not; horn only with the extension; Query nothing."""
    r = rig(tmp_path)
    base = {
        Operation.LOCK,
        Operation.UNLOCK,
        Operation.START_ENGINE,
        Operation.STOP_ENGINE,
        Operation.REFRESH,
    }
    assert provider(r).supported_operations(INFO_ICE) == base
    assert provider(r).supported_operations(INFO_EV) == base | {
        Operation.START_CHARGE,
        Operation.STOP_CHARGE,
    }
    assert Operation.HORN_LIGHTS in provider(r, horn=True).supported_operations(INFO_ICE)
    query = FordConnectQueryProvider("q", api=r.parts.api)
    assert query.supported_operations(INFO_EV) == frozenset()


@pytest.mark.parametrize(
    ("charging", "plugged", "expected"),
    [
        ("ChargingAC", True, ChargingState.CHARGING),
        ("ChargeTargetReached", True, ChargingState.COMPLETE),
        ("EvsePaused", True, ChargingState.PLUGGED),
        ("NotReady", False, ChargingState.NOT_PLUGGED),
        ("NotReady", True, ChargingState.PLUGGED),
        ("SomethingNew", "true", ChargingState.PLUGGED),
        ("SomethingNew", None, ChargingState.UNKNOWN),
        (None, False, ChargingState.NOT_PLUGGED),
    ],
)
def test_v1_charging_words_are_corrected_by_the_plug(
    charging: str | None, plugged: object, expected: ChargingState
) -> None:
    """v1's charging word maps to the model, and the plug decides plugged versus not."""
    status = {"chargingStatus": {"value": charging}, "plugStatus": {"value": plugged}}
    state = vehicle_to_state({"vehicleStatus": status}, VEHICLE)
    assert state.status.charging is expected


async def test_a_number_too_large_for_a_float_is_unknown_not_a_failed_read(
    tmp_path: Path,
) -> None:
    """An odometer sent as a 401-digit integer reads as unknown; the rest of the read holds."""
    r = rig(tmp_path)
    body = json.dumps(VEHICLE_DOC).replace('"odometer": 500.0', '"odometer": 1' + "0" * 400)
    assert "0" * 400 in body
    r.ford.on(
        "GET", P, httpx.Response(200, text=body, headers={"content-type": "application/json"})
    )
    state = await provider(r).read(VEHICLE)
    assert state.status.odometer_km is None and state.status.range_km == 304.0
    await r.parts.api.aclose()


def test_a_psi_pressure_too_large_to_convert_is_unknown_not_infinity() -> None:
    """A psi figure that would be infinite in kPa is left out (JSON has no infinity)."""
    pressures = [
        {"vehicleWheel": "FRONT_LEFT", "value": 1.7e308, "unit": "psi"},
        {"vehicleWheel": "FRONT_RIGHT", "value": 35.0, "unit": "psi"},
    ]
    state = vehicle_to_state({"vehicleStatus": {"tirePressure": pressures}}, VEHICLE)
    assert state.health.tyre_pressures_kpa == {"front_right": 241.3}


@pytest.mark.parametrize(
    ("last_updated", "known"),
    [
        ("06-15-2021 14:01:02", True),
        ("12-31-9999 23:56:00", False),  # a car with its clock wrong
        ("01-01-1970 00:00:00", False),  # an unset clock
    ],
)
async def test_a_read_turns_an_implausible_last_updated_into_unknown(
    tmp_path: Path, last_updated: str, known: bool
) -> None:
    """A v1 read whose lastUpdated is before 2000 or more than a day ahead of the provider's wall
    clock has no upload time (unknown); the rest of the state is mapped as usual."""
    r = rig(tmp_path)
    doc = copy.deepcopy(VEHICLE_DOC)
    doc["vehicle"]["lastUpdated"] = last_updated
    r.ford.on("GET", P, ok(doc))
    state = await provider(r).read(VEHICLE)
    assert (state.updated_at is not None) is known
    assert state.status.lock is LockState.LOCKED
    await r.parts.api.aclose()


def test_v1_upload_time_is_checked_against_the_clock_it_is_seen_at() -> None:
    """More than a day after `now` is unknown; a few hours ahead (clocks disagree) is kept."""
    seen = datetime(2021, 6, 15, 12, 0, tzinfo=UTC)
    ahead = vehicle_to_state({"lastUpdated": "06-15-2021 20:00:00"}, VEHICLE, now=seen)
    assert ahead.updated_at == datetime(2021, 6, 15, 20, 0, tzinfo=UTC)
    assert (
        vehicle_to_state({"lastUpdated": "06-17-2021 12:00:00"}, VEHICLE, now=seen).updated_at
        is None
    )


def test_v1_unknowns_strings_and_nulls_never_raise() -> None:
    """Unknown enum words, numbers as strings and nulls in a v1 document map leniently."""
    vehicle = {
        "lastUpdated": "not a date",
        "vehicleDetails": {
            "fuelLevel": {"value": "41.5", "distanceToEmpty": "320"},
            "odometer": None,
        },
        "vehicleStatus": {
            "lockStatus": "SUPERLOCKED",
            "ignitionStatus": {"value": "WARP"},
            "alarm": {"value": "NOTSET"},
            "doorStatus": None,
            "remoteStartStatus": {"status": None},
        },
        "vehicleLocation": {"latitude": "n/a", "longitude": "1"},
    }
    state = vehicle_to_state(vehicle, VEHICLE)
    s = state.status
    assert (state.updated_at, state.location) == (None, None)
    assert (s.fuel_level_pct, s.range_km, s.odometer_km) == (41.5, 320.0, None)
    assert (s.lock, s.ignition, s.engine) == (
        LockState.UNKNOWN,
        Ignition.UNKNOWN,
        EngineState.UNKNOWN,
    )
    assert (s.alarm, s.doors) == ("disarmed", {})
