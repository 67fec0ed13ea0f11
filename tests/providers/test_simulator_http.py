"""Both providers against the simulator over real sockets (serve_in_thread), as in production."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.errors import ProviderUnavailable, ProviderUnreachable, RateLimited
from bridge.model import CommandStatus, LockState, Operation
from bridge.providers.base import CallKind
from bridge.simulator import Simulator, serve_in_thread
from tests.providers.simulated import connect, log_in, make_sim, sim_account, sim_settings
from tests.providers.support import FakeClock


@pytest.fixture
def served() -> Iterator[tuple[Simulator, str]]:
    sim = make_sim()
    with serve_in_thread(sim) as base:
        yield sim, base


async def test_v1_login_read_and_command_over_http(
    tmp_path: Path, served: tuple[Simulator, str]
) -> None:
    """Over real HTTP: log in with PKCE, read a car, lock it to COMPLETED."""
    sim, base = served
    settings = sim_settings(tmp_path, {"home": sim_account(base)})
    account = connect(settings, "home", None)
    await log_in(account, None, vehicle="all")
    car = sim.vehicles[1]
    state = await account.parts.provider.read(car.vehicle_id)
    assert state.status.lock is LockState.LOCKED
    outcome = await account.parts.provider.execute(car.vehicle_id, Operation.LOCK)
    assert outcome.status is CommandStatus.SUCCEEDED
    await account.parts.provider.aclose()


async def test_query_login_refresh_and_read_over_http(
    tmp_path: Path, served: tuple[Simulator, str]
) -> None:
    """Over real HTTP: a Query login, a refresh with rotation at expiry, then a telemetry read."""
    sim, base = served
    clock = FakeClock(1_750_000_000.0)
    settings = sim_settings(tmp_path, {"q": sim_account(base, "fordconnect-query")})
    account = connect(settings, "q", None, clock=clock)
    await log_in(account, None, vehicle=sim.vehicles[0].vehicle_id)
    clock.now += 1200
    state = await account.parts.provider.read("car")
    assert state.status.battery_level_pct is not None
    assert account.gate.kinds() == [CallKind.TOKEN, CallKind.TOKEN, CallKind.READ]
    await account.parts.provider.aclose()


async def test_a_dead_port_is_provider_unavailable(tmp_path: Path) -> None:
    """Nothing listening at the configured URL: ProviderUnreachable (a ProviderUnavailable that
    says nothing was sent), chained to the socket error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = sim_settings(
        tmp_path, {"q": sim_account(f"http://127.0.0.1:{port}", "fordconnect-query")}
    )
    account = connect(settings, "q", None)
    with pytest.raises(ProviderUnreachable) as caught:
        await account.parts.oauth.exchange_code("code", code_verifier=None)
    assert caught.value.__cause__ is not None
    await account.parts.provider.aclose()


async def test_simulated_faults_map_to_our_errors_over_http(
    tmp_path: Path, served: tuple[Simulator, str]
) -> None:
    """The simulator's 5xx, 429, malformed and dropped answers map to our error classes."""
    sim, base = served
    settings = sim_settings(tmp_path, {"q": sim_account(base, "fordconnect-query")})
    account = connect(settings, "q", None)
    await log_in(account, None)
    provider = account.parts.provider
    expected = {
        "5xx=1": ProviderUnavailable,
        "429=1": RateLimited,
        "malformed=1": ProviderUnavailable,
        "drop=1": ProviderUnavailable,
    }
    for spec, error in expected.items():
        sim.set_faults(spec)
        with pytest.raises(error):
            await provider.read("car")
    sim.set_faults("")
    await provider.read("car")
    await provider.aclose()
