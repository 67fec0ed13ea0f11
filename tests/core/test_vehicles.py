"""What the daemon remembers about the cars between runs (bridge.vehicles.VehicleMemory)."""

from __future__ import annotations

from pathlib import Path

from bridge.model import Powertrain, VehicleInfo
from bridge.store import Store
from bridge.vehicles import VehicleMemory

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
