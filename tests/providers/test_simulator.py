"""Both providers against the real simulator, in process (ASGITransport): login to commands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bridge.config import BudgetConfig, Settings
from bridge.errors import LoginError, ProviderError, RateLimited, ReauthRequired, Unsupported
from bridge.events import AlertKind, CollectingAlerts
from bridge.model import CommandStatus, LockState, Operation, Powertrain
from bridge.polling.budget import Budget
from bridge.providers.base import CallKind
from bridge.providers.factory import build_account
from bridge.providers.fordconnect import FordConnectProvider
from bridge.providers.oauth import InvalidGrant, parse_redirect
from bridge.providers.tokens import TokenStore
from bridge.simulator import Limits, Simulator, Timings
from bridge.store import Store
from tests.providers.simulated import (
    V1_PATH,
    SimAccount,
    asgi,
    connect,
    consent,
    log_in,
    make_sim,
    sim_account,
    sim_settings,
)
from tests.providers.support import FakeClock, RecordingGate

BASE = "http://sim.test"


@pytest.fixture
def sim() -> Simulator:
    return make_sim()


@pytest.fixture
def transport(sim: Simulator) -> httpx.ASGITransport:
    return asgi(sim)


def v1_account(tmp_path: Path, transport: httpx.AsyncBaseTransport, **kw: object) -> SimAccount:
    settings = sim_settings(tmp_path, {"home": sim_account(BASE, "fordconnect")})
    return connect(settings, "home", transport, **kw)


async def test_login_with_pkce_stores_tokens_and_lists_the_consent(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """A PKCE login against the simulator stores tokens; the account then lists its vehicles."""
    account = v1_account(tmp_path, transport)
    await log_in(account, transport, vehicle="all")
    stored = TokenStore(tmp_path).load("home")
    assert stored is not None and stored.refresh_token
    vehicles = await account.parts.provider.list_vehicles()
    assert [v.vehicle_id for v in vehicles] == [v.vehicle_id for v in sim.vehicles]
    assert [v.powertrain for v in vehicles] == [Powertrain.EV, Powertrain.ICE, Powertrain.EV]
    await account.parts.provider.aclose()


async def test_login_with_the_wrong_pkce_verifier_is_refused(
    tmp_path: Path, transport: httpx.ASGITransport
) -> None:
    """A code exchanged with another verifier than the one challenged fails as LoginError."""
    account = v1_account(tmp_path, transport)
    login, redirect = await consent(account.config, transport)
    other, _ = await consent(account.config, transport)
    code = parse_redirect(redirect, expected_state=login.state)
    with pytest.raises(LoginError, match="refused the authorisation code"):
        await account.parts.tokens.complete_login(other, code)
    assert TokenStore(tmp_path).load("home") is None
    await account.parts.provider.aclose()


async def test_a_redirect_for_another_login_fails_the_state_check(
    tmp_path: Path, transport: httpx.ASGITransport
) -> None:
    """The redirect of one login presented to another fails on `state` before any exchange."""
    account = v1_account(tmp_path, transport)
    mine, _ = await consent(account.config, transport)
    _, theirs = await consent(account.config, transport)
    with pytest.raises(LoginError, match="state does not match"):
        parse_redirect(theirs, expected_state=mine.state)
    await account.parts.provider.aclose()


async def test_a_code_works_only_once(tmp_path: Path, transport: httpx.ASGITransport) -> None:
    """Replaying an authorisation code is refused (invalid_grant → LoginError)."""
    account = v1_account(tmp_path, transport)
    login, redirect = await consent(account.config, transport)
    code = parse_redirect(redirect, expected_state=login.state)
    await account.parts.tokens.complete_login(login, code)
    with pytest.raises(LoginError):
        await account.parts.tokens.complete_login(login, code)
    await account.parts.provider.aclose()


async def test_refresh_rotates_and_the_old_refresh_token_is_dead(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """Past expiry the token is refreshed; the rotated refresh token is stored, the old one dead."""
    clock = FakeClock(1_750_000_000.0)
    account = v1_account(tmp_path, transport, clock=clock)
    await log_in(account, transport, vehicle="all")
    before = TokenStore(tmp_path).load("home")
    assert before is not None and before.refresh_token is not None
    clock.now += 1200
    vehicle_id = sim.vehicles[0].vehicle_id
    await account.parts.provider.read(vehicle_id)
    after = TokenStore(tmp_path).load("home")
    assert after is not None and after.refresh_token not in (None, before.refresh_token)
    assert CallKind.TOKEN in account.gate.kinds()
    with pytest.raises(InvalidGrant):
        await account.parts.oauth.refresh(before.refresh_token)
    await account.parts.provider.aclose()


async def test_a_token_expired_mid_session_is_refreshed_and_the_read_retried(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """The server dropping our access token (401) costs one refresh; the read still succeeds."""
    account = v1_account(tmp_path, transport)
    await log_in(account, transport, vehicle="all")
    vehicle_id = sim.vehicles[0].vehicle_id
    assert sim.expire_tokens() == 1
    state = await account.parts.provider.read(vehicle_id)
    assert state.status.lock is LockState.LOCKED
    assert account.gate.kinds() == [CallKind.TOKEN, CallKind.READ, CallKind.TOKEN, CallKind.READ]
    await account.parts.provider.aclose()


async def test_a_revoked_refresh_token_needs_a_new_login(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """With both tokens dead the account raises ReauthRequired, alerts once and stops calling."""
    clock = FakeClock(1_750_000_000.0)
    account = v1_account(tmp_path, transport, clock=clock)
    await log_in(account, transport, vehicle="all")
    stored = TokenStore(tmp_path).load("home")
    assert stored is not None and stored.refresh_token is not None
    await account.parts.oauth.refresh(stored.refresh_token)  # someone else rotated it away
    clock.now += 1200
    for _ in range(3):
        with pytest.raises(ReauthRequired):
            await account.parts.provider.read(sim.vehicles[0].vehicle_id)
    assert account.gate.kinds() == [CallKind.TOKEN, CallKind.TOKEN, CallKind.TOKEN]
    assert [a.kind for a in account.alerts.alerts] == [AlertKind.RELOGIN_NEEDED]
    await account.parts.provider.aclose()


async def test_commands_complete_and_change_the_car(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """unlock then lock both reach COMPLETED; the car's true lock state follows."""
    account = v1_account(tmp_path, transport)
    await log_in(account, transport, vehicle="all")
    car = sim.vehicles[1]
    accepted: list[str] = []

    async def on_accepted(command_id: str) -> None:
        accepted.append(command_id)

    provider = account.parts.provider
    unlocked = await provider.execute(car.vehicle_id, Operation.UNLOCK, on_accepted=on_accepted)
    assert unlocked.status is CommandStatus.SUCCEEDED
    assert car.car.truth(sim.now()).locked is False
    locked = await provider.execute(car.vehicle_id, Operation.LOCK, on_accepted=on_accepted)
    assert locked.status is CommandStatus.SUCCEEDED
    assert car.car.truth(sim.now()).locked is True
    assert accepted == [unlocked.provider_command_id, locked.provider_command_id]
    assert [e.command for e in car.executed] == ["unlock", "lock"]
    await provider.aclose()


async def test_a_command_the_car_rejects_is_failed(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """startCharge on an unplugged EV reaches the car and comes back FAILED."""
    account = v1_account(tmp_path, transport)
    await log_in(account, transport, vehicle="all")
    outcome = await account.parts.provider.execute(
        sim.vehicles[0].vehicle_id, Operation.START_CHARGE
    )
    assert outcome.status is CommandStatus.FAILED
    await account.parts.provider.aclose()


async def test_a_command_without_a_verdict_in_time_is_timed_out(tmp_path: Path) -> None:
    """A car answering after our deadline leaves the command timed_out, not failed."""
    sim = make_sim(timings=Timings(command_delay_s=30))
    transport = asgi(sim)
    settings = sim_settings(tmp_path, {"home": sim_account(BASE)})
    settings = settings.model_copy(
        update={"commands": settings.commands.model_copy(update={"timeout_s": 0.2})}
    )
    account = connect(settings, "home", transport)
    await log_in(account, transport, vehicle="all")
    outcome = await account.parts.provider.execute(sim.vehicles[1].vehicle_id, Operation.LOCK)
    assert outcome.status is CommandStatus.TIMED_OUT
    assert [e.command for e in sim.vehicles[1].executed] == ["lock"]  # it did reach the car
    await account.parts.provider.aclose()


async def test_a_status_poll_over_the_rate_limit_ends_the_command_and_is_handed_on(
    tmp_path: Path,
) -> None:
    """The simulator's per-minute limit answers the second status poll 429: the lock (which
    reached the car) ends timed_out at once, nothing more is sent, and the 429 is handed on."""
    sim = make_sim(limits=Limits(per_minute=2), timings=Timings(command_delay_s=30))
    transport = asgi(sim)
    refused: list[tuple[str, ProviderError]] = []
    settings = sim_settings(tmp_path, {"home": sim_account(BASE)})
    account = connect(
        settings, "home", transport, on_refused=lambda name, exc: refused.append((name, exc))
    )
    await log_in(account, transport, vehicle="all")
    car = sim.vehicles[1]
    outcome = await account.parts.provider.execute(car.vehicle_id, Operation.LOCK)
    assert (outcome.status, outcome.cause) == (CommandStatus.TIMED_OUT, "provider_rate_limited")
    assert [e.command for e in car.executed] == ["lock"]
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as admin:
        [meter] = (await admin.get("/sim/accounts")).json()["accounts"]
    assert (meter["calls"], meter["throttled"]) == (3, 1)  # POST, a pending poll, the 429
    assert [(name, type(exc)) for name, exc in refused] == [("home", RateLimited)]
    await account.parts.provider.aclose()


async def test_a_command_the_car_never_answers_leaves_reads_for_the_hour(tmp_path: Path) -> None:
    """With the default status-poll settings (2 s, 120 s), a lock the sleeping car never answers
    spends seven status polls (2, 6, 14, 30, 60, 90, 120 s), not sixty, and ends timed_out with
    reads left in the hour's budget."""
    sim = make_sim(timings=Timings(command_delay_s=3600))
    transport = asgi(sim)
    clock = FakeClock()
    store = Store.open(tmp_path / "db")
    budget = Budget(
        store=store,
        config=BudgetConfig(),
        alerts=CollectingAlerts(),
        clock=lambda: datetime.fromtimestamp(clock.now, UTC),
    )
    budget.start()
    settings = Settings(state_dir=tmp_path, accounts={"home": sim_account(BASE)})
    parts = build_account(
        settings, "home", gate=budget, alerts=CollectingAlerts(), transport=transport, clock=clock
    )
    await log_in(
        SimAccount(parts, RecordingGate(), CollectingAlerts(), settings.accounts["home"]),
        transport,
        vehicle="all",
    )
    provider = FordConnectProvider(
        "home",
        api=parts.api,
        base_url=BASE + V1_PATH,
        poll_interval_s=settings.commands.status_poll_interval_s,
        command_timeout_s=settings.commands.timeout_s,
        clock=clock,
        sleep=clock.sleep,
    )
    start = clock.now
    outcome = await provider.execute(sim.vehicles[1].vehicle_id, Operation.LOCK)
    assert outcome.status is CommandStatus.TIMED_OUT
    assert clock.now - start == pytest.approx(120)
    usage = budget.usage("home")
    assert usage.hour.commands == 1 + 7
    assert usage.reads_left == usage.hour.read_share - usage.hour.tokens
    await parts.api.aclose()
    store.close()


async def test_charging_a_combustion_car_is_unsupported(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """startCharge on the ICE car is refused with 406 → Unsupported, and never reaches it."""
    account = v1_account(tmp_path, transport)
    await log_in(account, transport, vehicle="all")
    ice = sim.vehicles[1]
    with pytest.raises(Unsupported):
        await account.parts.provider.execute(ice.vehicle_id, Operation.START_CHARGE)
    assert ice.executed == []
    await account.parts.provider.aclose()


async def test_refresh_and_horn_lights_on_the_simulator(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """A status refresh and the simulator's horn-and-lights extension both complete."""
    account = v1_account(tmp_path, transport)
    await log_in(account, transport, vehicle="all")
    car = sim.vehicles[0]
    provider = account.parts.provider
    assert (await provider.execute(car.vehicle_id, Operation.REFRESH)).status is (
        CommandStatus.SUCCEEDED
    )
    assert (await provider.execute(car.vehicle_id, Operation.HORN_LIGHTS)).status is (
        CommandStatus.SUCCEEDED
    )
    assert [e.command for e in car.executed] == ["status", "hornLights"]
    await provider.aclose()


async def test_query_reads_the_bound_vehicle(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """A Query login bound to one vehicle reads its telemetry, mapped; commands are refused."""
    settings = sim_settings(tmp_path, {"q": sim_account(BASE, "fordconnect-query")})
    account = connect(settings, "q", transport)
    await log_in(account, transport, vehicle=sim.vehicles[1].vehicle_id)
    provider = account.parts.provider
    [info] = await provider.list_vehicles()
    assert info.powertrain is Powertrain.ICE and info.model == sim.vehicles[1].spec.model_name
    state = await provider.read(info.vehicle_id)
    truth = sim.vehicles[1].car.truth(sim.now())
    assert state.status.lock is LockState.LOCKED
    assert state.status.odometer_km == pytest.approx(truth.odometer, abs=0.1)
    assert state.status.fuel_level_pct is not None and state.status.battery_level_pct is None
    assert provider.supported_operations(info) == frozenset()
    with pytest.raises(Unsupported):
        await provider.execute(info.vehicle_id, Operation.LOCK)
    assert sim.vehicles[1].vin not in json.dumps([repr(info), repr(state)])
    await provider.aclose()


async def test_three_accounts_side_by_side(
    tmp_path: Path, transport: httpx.ASGITransport, sim: Simulator
) -> None:
    """Two Query accounts (one vehicle each) and a v1 account (all three) read concurrently."""
    ev, ice = sim.vehicles[0], sim.vehicles[1]
    settings = sim_settings(
        tmp_path,
        {
            "q-ev": sim_account(BASE, "fordconnect-query"),
            "q-ice": sim_account(BASE, "fordconnect-query"),
            "fleet": sim_account(BASE, "fordconnect"),
        },
    )
    accounts = {name: connect(settings, name, transport) for name in settings.accounts}
    await log_in(accounts["q-ev"], transport, vehicle=ev.vehicle_id, login_hint="alice")
    await log_in(accounts["q-ice"], transport, vehicle=ice.vehicle_id, login_hint="bob")
    await log_in(accounts["fleet"], transport, vehicle="all", login_hint="fleet")
    reads = await asyncio.gather(
        accounts["q-ev"].parts.provider.read("ev"),
        accounts["q-ice"].parts.provider.read("ice"),
        accounts["fleet"].parts.provider.read(ev.vehicle_id),
        accounts["fleet"].parts.provider.read(ice.vehicle_id),
    )
    q_ev, q_ice, v1_ev, v1_ice = reads
    assert q_ev.status.battery_level_pct is not None and q_ice.status.battery_level_pct is None
    assert q_ev.status.odometer_km == v1_ev.status.odometer_km
    assert q_ice.status.odometer_km == v1_ice.status.odometer_km
    files = sorted(p.name for p in TokenStore(tmp_path).directory.glob("*.json"))
    assert files == ["fleet.json", "q-ev.json", "q-ice.json"]
    for account in accounts.values():
        assert {acct for acct, _ in account.gate.charges} == {account.parts.tokens.account}
        await account.parts.provider.aclose()
