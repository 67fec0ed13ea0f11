"""What the daemon remembers about the cars between runs (bridge.vehicles.VehicleMemory)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from bridge.config import Settings, VehicleConfig
from bridge.model import Powertrain, VehicleInfo
from bridge.store import Store
from bridge.vehicles import VehicleMemory, coverage_problems, resolve_vehicles
from tests.providers.simulated import asgi, connect, log_in, make_sim, sim_account

MACH_E = VehicleInfo("v-1", make="F", model="Mustang Mach-E", year=2023, powertrain=Powertrain.EV)
BRONCO = VehicleInfo("v-2", model="Bronco", nickname="Weekend", powertrain=Powertrain.ICE)


def memory_in(state_dir: Path) -> VehicleMemory:
    memory = VehicleMemory(Store.open(state_dir))
    memory.start()
    return memory


def test_lists_and_positions_survive_a_restart(tmp_path: Path) -> None:
    """Written by one run, read by the next: every field of the list, the positions in order."""
    first = memory_in(tmp_path)
    first.remember_list("home", [MACH_E, BRONCO])
    first.remember_positions("car", (("front_driver", "tailgate"), (), ("front_left",)))
    first.store.close()
    again = memory_in(tmp_path)
    assert again.vehicle_list("home") == [MACH_E, BRONCO]
    assert again.vehicle_list("work") is None
    assert again.positions("car") == (("front_driver", "tailgate"), (), ("front_left",))
    assert again.positions("boat") is None


def test_a_damaged_row_reads_as_nothing_remembered(tmp_path: Path) -> None:
    """Someone edited the database: the daemon starts as if it had no memory, it does not fail."""
    memory = memory_in(tmp_path)
    with memory.store.transaction() as conn:
        conn.execute("INSERT INTO vehicle_lists VALUES ('home', '[{\"model\": \"no id\"}]')")
        conn.execute("INSERT INTO vehicle_positions VALUES ('car', '{not json')")
    assert memory.vehicle_list("home") is None
    assert memory.positions("car") is None


async def test_the_daemon_names_configured_vehicles_the_login_does_not_cover(
    tmp_path: Path,
) -> None:
    """A mistyped id was polled in vain at info level, and an id-less vehicle on a login with
    three cars silently became the first of them: each is now a warning naming the key."""
    sim = make_sim()
    transport = asgi(sim)
    first = sim.vehicles[0].vehicle_id
    settings = Settings(
        state_dir=tmp_path,
        accounts={"home": sim_account("http://sim")},
        vehicles={
            "mache": VehicleConfig(account="home", id=first),
            "typo": VehicleConfig(account="home", id="0" * 32),
            "bare": VehicleConfig(account="home"),
        },
    )
    account = connect(settings, "home", transport)
    await log_in(account, transport)
    try:
        with capture_logs() as logs:
            bridged = await resolve_vehicles(settings, {"home": account.parts.provider})
    finally:
        await account.parts.provider.aclose()
    assert [v.slug for v in bridged] == ["mache", "typo", "bare"]
    problems = [e["problem"] for e in logs if e["event"] == "vehicle not covered"]
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "vehicle not covered")
    assert problems == [
        "vehicles.typo.id: not the id of any of the 3 vehicles account home's login covers "
        "(the provider's id, never the VIN)",
        "vehicles.bare.id: missing, but account home's login covers 3 vehicles: give the id of one",
    ]


def test_a_query_login_is_its_car_whatever_the_id() -> None:
    """A Query account's login is one car: no id is needed, and one given is not checked."""
    query = sim_account("http://sim", "fordconnect-query")
    settings = Settings(
        accounts={"q": query},
        vehicles={"pickup": VehicleConfig(account="q", id="anything")},
    )
    assert coverage_problems(settings, "q", [VehicleInfo("q-1")]) == []
