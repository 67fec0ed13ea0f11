"""FordConnect v1 routes: shapes, header checks, errors, async commands and their effect on cars."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from bridge.simulator import ManualClock, Simulator
from tests.simulator.support import V1, FakeMonotonic, login, v1_headers

ERROR_KEYS = {"error", "status", "commandStatus"}


@pytest.fixture
async def token(client: httpx.AsyncClient) -> str:
    """An access token whose consent covers every vehicle."""
    return str((await login(client, vehicle="all"))["access_token"])


def ev(sim: Simulator) -> str:
    return sim.vehicles[0].vehicle_id  # commuter_ev


def ice(sim: Simulator) -> str:
    return sim.vehicles[1].vehicle_id  # weekend_ice


def assert_error(response: httpx.Response, status: int, code: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["status"] == "FAILED"
    assert body["error"]["code"] == code and body["error"]["statusCode"] == status
    assert {"title", "details"} <= set(body["error"])


async def command(client: httpx.AsyncClient, token: str, vid: str, name: str) -> httpx.Response:
    return await client.post(f"{V1}/{vid}/{name}", headers=v1_headers(token))


async def completed(
    client: httpx.AsyncClient,
    token: str,
    vid: str,
    name: str,
    mono: FakeMonotonic,
    poll_as: str | None = None,
) -> dict[str, Any]:
    """Send a command, let the command delay pass, and return the final poll body."""
    response = await command(client, token, vid, name)
    assert response.status_code == 202, response.text
    mono.advance(3.1)
    cid = response.json()["commandId"]
    poll = await client.get(f"{V1}/{vid}/{poll_as or name}/{cid}", headers=v1_headers(token))
    body: dict[str, Any] = poll.json()
    return body


async def test_vehicle_list_shape(sim: Simulator, client: httpx.AsyncClient, token: str) -> None:
    """The list has every consented vehicle with a 32-hex id and the documented fields."""
    body = (await client.get(V1, headers=v1_headers(token))).json()
    assert body["status"] == "SUCCESS" and len(body["vehicles"]) == 3
    for entry in body["vehicles"]:
        assert re.fullmatch(r"[0-9a-f]{32}", entry["vehicleId"])
        assert {
            "make",
            "modelName",
            "modelYear",
            "color",
            "nickName",
            "modemEnabled",
            "vehicleAuthorizationIndicator",
            "serviceCompatible",
        } <= set(entry)


async def test_vehicle_info_shape(sim: Simulator, client: httpx.AsyncClient, token: str) -> None:
    """Vehicle info carries vehicleDetails, vehicleStatus, vehicleLocation and lastUpdated."""
    body = (await client.get(f"{V1}/{ev(sim)}", headers=v1_headers(token))).json()
    vehicle = body["vehicle"]
    assert body["status"] == "SUCCESS" and vehicle["engineType"] == "EV"
    assert re.fullmatch(r"\d\d-\d\d-\d{4} \d\d:\d\d:\d\d", vehicle["lastUpdated"])
    details, status = vehicle["vehicleDetails"], vehicle["vehicleStatus"]
    assert details["fuelLevel"]["value"] is None
    assert 0 <= details["batteryChargeLevel"]["value"] <= 100
    assert details["odometer"] > details["mileage"] > 0
    assert {
        "tirePressureWarning",
        "deepSleepInProgress",
        "firmwareUpgradeInProgress",
        "remoteStartStatus",
        "chargingStatus",
        "plugStatus",
        "ignitionStatus",
        "doorStatus",
    } <= set(status)
    assert set(vehicle["vehicleLocation"]) == {
        "longitude",
        "latitude",
        "speed",
        "direction",
        "timeStamp",
    }


async def test_combustion_info_has_fuel_and_no_charging(
    sim: Simulator, client: httpx.AsyncClient, token: str
) -> None:
    """A combustion car reports fuel, no battery charge level and no plug."""
    vehicle = (await client.get(f"{V1}/{ice(sim)}", headers=v1_headers(token))).json()["vehicle"]
    assert vehicle["engineType"] == "ICE"
    assert vehicle["vehicleDetails"]["batteryChargeLevel"]["value"] is None
    assert 0 < vehicle["vehicleDetails"]["fuelLevel"]["value"] <= 100
    assert "plugStatus" not in vehicle["vehicleStatus"]


async def test_missing_application_id_is_401_subscription_key(
    client: httpx.AsyncClient, token: str
) -> None:
    """No Application-Id: the gateway's 401 about the subscription key."""
    headers = {k: v for k, v in v1_headers(token).items() if k != "Application-Id"}
    response = await client.get(V1, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "statusCode": 401,
        "message": "Access denied due to missing subscription key.",
    }


async def test_wrong_application_id_is_401(client: httpx.AsyncClient, token: str) -> None:
    """A wrong Application-Id is refused like a missing one."""
    response = await client.get(V1, headers={**v1_headers(token), "Application-Id": "other"})
    assert response.status_code == 401 and response.json()["statusCode"] == 401


async def test_missing_api_version_is_400(client: httpx.AsyncClient, token: str) -> None:
    """No api-version header: 400 in the v1 error shape."""
    headers = {k: v for k, v in v1_headers(token).items() if k != "api-version"}
    assert_error(await client.get(V1, headers=headers), 400, 400)


async def test_unknown_token_is_invalid_token(client: httpx.AsyncClient) -> None:
    """An unknown bearer token gets 401 {"error": "invalid_token"}."""
    response = await client.get(V1, headers=v1_headers("nonsense"))
    assert response.status_code == 401 and response.json() == {"error": "invalid_token"}
    assert "invalid_token" in response.headers["WWW-Authenticate"]


async def test_malformed_vehicle_id_is_400(client: httpx.AsyncClient, token: str) -> None:
    """A vehicle id that is not 32 hex characters is a 400."""
    assert_error(await client.get(f"{V1}/not-a-vehicle", headers=v1_headers(token)), 400, 4000)


async def test_unknown_vehicle_is_404_4002(client: httpx.AsyncClient, token: str) -> None:
    """A well-formed id of no vehicle is 404/4002."""
    assert_error(await client.get(f"{V1}/{'a' * 32}", headers=v1_headers(token)), 404, 4002)


async def test_other_accounts_vehicle_is_401_3000(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    """A vehicle this account did not consent to is 401/3000, for reads and commands."""
    token = (await login(client, vehicle=ev(sim)))["access_token"]
    assert_error(await client.get(f"{V1}/{ice(sim)}", headers=v1_headers(token)), 401, 3000)
    assert_error(await command(client, token, ice(sim), "lock"), 401, 3000)
    assert sim.vehicles[1].executed == []


async def test_unknown_route_is_404_4002(
    sim: Simulator, client: httpx.AsyncClient, token: str
) -> None:
    """Unknown commands and paths answer in the v1 error shape."""
    assert_error(await command(client, token, ev(sim), "selfDestruct"), 404, 4002)
    assert_error(await client.get(f"{V1}/{ev(sim)}/a/b/c", headers=v1_headers(token)), 404, 4002)


async def test_command_answers_202_with_a_command_id(
    sim: Simulator, client: httpx.AsyncClient, token: str
) -> None:
    """A command POST answers 202 SUCCESS/COMPLETED with a GUID command id."""
    response = await command(client, token, ev(sim), "lock")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "SUCCESS" and body["commandStatus"] == "COMPLETED"
    assert re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", body["commandId"])


async def test_polling_is_pending_then_completed(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """The poll says PENDINGRESPONSE during the command delay, then COMPLETED."""
    cid = (await command(client, token, ev(sim), "unlock")).json()["commandId"]
    url = f"{V1}/{ev(sim)}/unlock/{cid}"
    pending = await client.get(url, headers=v1_headers(token))
    assert pending.status_code == 202 and pending.json()["commandStatus"] == "PENDINGRESPONSE"
    mono.advance(3.1)
    done = await client.get(url, headers=v1_headers(token))
    assert done.status_code == 200 and done.json()["commandStatus"] == "COMPLETED"


async def test_command_ids_expire_after_two_minutes(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """Polling a command id older than ~2 minutes gets 401/3000."""
    cid = (await command(client, token, ev(sim), "lock")).json()["commandId"]
    mono.advance(121)
    assert_error(
        await client.get(f"{V1}/{ev(sim)}/lock/{cid}", headers=v1_headers(token)), 401, 3000
    )


async def test_polling_under_another_command_is_401_3000(
    sim: Simulator, client: httpx.AsyncClient, token: str
) -> None:
    """A command id is only known under its own command family."""
    cid = (await command(client, token, ev(sim), "lock")).json()["commandId"]
    response = await client.get(f"{V1}/{ev(sim)}/startEngine/{cid}", headers=v1_headers(token))
    assert_error(response, 401, 3000)


async def test_lock_and_unlock_change_the_car(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """Unlock unlocks the real car, lock locks it; both are logged as executed."""
    car = sim.vehicles[0].car
    await completed(client, token, ev(sim), "unlock", mono)
    assert not car.truth(sim.now()).locked
    await completed(client, token, ev(sim), "lock", mono)
    assert car.truth(sim.now()).locked
    assert [e.command for e in sim.vehicles[0].executed] == ["unlock", "lock"]


async def test_remote_start_runs_fifteen_minutes(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic, clock: ManualClock
) -> None:
    """startEngine runs the engine for 15 simulated minutes, then it stops by itself."""
    assert (await completed(client, token, ev(sim), "startEngine", mono))["commandStatus"] == (
        "COMPLETED"
    )
    info = (await client.get(f"{V1}/{ev(sim)}", headers=v1_headers(token))).json()
    assert info["vehicle"]["vehicleStatus"]["remoteStartStatus"]["status"] == "ENGINE_RUNNING"
    clock.advance(15 * 60 + 1)
    info = (await client.get(f"{V1}/{ev(sim)}", headers=v1_headers(token))).json()
    assert info["vehicle"]["vehicleStatus"]["remoteStartStatus"]["status"] == "ENGINE_STOPPED"


async def test_third_remote_start_is_403_and_never_reaches_the_car(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """Two remote starts are allowed before a drive; the third is refused with 403."""
    for _ in range(2):
        await completed(client, token, ev(sim), "startEngine", mono)
        await completed(client, token, ev(sim), "stopEngine", mono)
    assert_error(await command(client, token, ev(sim), "startEngine"), 403, 403)
    executed = [e.command for e in sim.vehicles[0].executed]
    assert executed.count("startEngine") == 2


async def test_charge_commands_on_a_combustion_car_are_406(
    sim: Simulator, client: httpx.AsyncClient, token: str
) -> None:
    """startCharge/stopCharge on a combustion car: 406/4006, nothing executed."""
    assert_error(await command(client, token, ice(sim), "startCharge"), 406, 4006)
    assert_error(await command(client, token, ice(sim), "stopCharge"), 406, 4006)
    assert sim.vehicles[1].executed == []


async def test_start_and_stop_charge_on_a_plugged_ev(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """A plugged-in EV starts charging on command (past its 90 % target) and stops again."""
    car = sim.vehicles[0].car  # commuter_ev: plugged in at home at 07:00, charged to 90 %
    assert car.truth(sim.now()).plugged and not car.truth(sim.now()).charging
    body = await completed(client, token, ev(sim), "startCharge", mono)
    assert body["commandStatus"] == "COMPLETED" and car.truth(sim.now()).charging
    await completed(client, token, ev(sim), "stopCharge", mono)
    assert not car.truth(sim.now()).charging
    info = (await client.get(f"{V1}/{ev(sim)}", headers=v1_headers(token))).json()
    assert info["vehicle"]["vehicleStatus"]["chargingStatus"]["value"] == "EvsePaused"


async def test_start_charge_when_unplugged_fails(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic, clock: ManualClock
) -> None:
    """startCharge on an EV that is out driving ends FAILED (it reached the car, which refused)."""
    clock.advance(3600)  # 08:00 Monday: the commuter is on the road to work
    token = (await login(client, vehicle="all"))["access_token"]
    car = sim.vehicles[0].car
    assert not car.truth(sim.now()).plugged
    body = await completed(client, token, ev(sim), "startCharge", mono)
    assert body["commandStatus"] == "FAILED" and body["status"] == "FAILED"


async def test_status_refresh_forces_an_upload(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic, clock: ManualClock
) -> None:
    """POST /status makes the car upload: lastUpdated becomes now, the poll carries lock state."""
    before = (await client.get(f"{V1}/{ice(sim)}", headers=v1_headers(token))).json()
    body = await completed(client, token, ice(sim), "status", mono, poll_as="statusrefresh")
    assert body["vehiclestatus"]["lockStatus"]["value"] in {"LOCKED", "UNLOCKED"}
    after = (await client.get(f"{V1}/{ice(sim)}", headers=v1_headers(token))).json()
    assert before["vehicle"]["lastUpdated"] != after["vehicle"]["lastUpdated"]
    assert after["vehicle"]["lastUpdated"] == sim.now().strftime("%m-%d-%Y %H:%M:%S")


async def test_location_post_and_get(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """POST /location asks for a fix; GET /location serves it with string coordinates."""
    await completed(client, token, ev(sim), "location", mono)
    body = (await client.get(f"{V1}/{ev(sim)}/location", headers=v1_headers(token))).json()
    location = body["vehicleLocation"]
    assert isinstance(location["latitude"], str) and float(location["latitude"]) > 40
    assert location["timeStamp"] == sim.now().strftime("%m-%d-%Y %H:%M:%S")


async def test_wake_completes(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """POST /wake is an async command like the others."""
    assert (await completed(client, token, ev(sim), "wake", mono))["commandStatus"] == "COMPLETED"


async def test_horn_lights_extension(
    sim: Simulator, client: httpx.AsyncClient, token: str, mono: FakeMonotonic
) -> None:
    """The simulator-only x-sim/hornLights command is accepted and polled under x-sim."""
    response = await command(client, token, ev(sim), "x-sim/hornLights")
    assert response.status_code == 202
    mono.advance(3.1)
    cid = response.json()["commandId"]
    poll = await client.get(f"{V1}/{ev(sim)}/x-sim/hornLights/{cid}", headers=v1_headers(token))
    assert poll.json()["commandStatus"] == "COMPLETED"
    assert sim.vehicles[0].executed[-1].command == "hornLights"
    assert_error(await command(client, token, ev(sim), "hornLights"), 404, 4002)


async def test_v1_never_shows_a_vin(sim: Simulator, client: httpx.AsyncClient, token: str) -> None:
    """VINs belong to the Query API only: no v1 body contains one."""
    bodies = [(await client.get(V1, headers=v1_headers(token))).text]
    for v in sim.vehicles:
        bodies.append((await client.get(f"{V1}/{v.vehicle_id}", headers=v1_headers(token))).text)
    for v in sim.vehicles:
        assert all(v.vin not in body for body in bodies)
