"""Making the simulated fleet: ids, VIN-shaped VINs, models, homes and habits, all from the seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from random import Random

from bridge.simulator.car import Car
from bridge.simulator.geo import Point, offset
from bridge.simulator.motion import range_km
from bridge.simulator.state import CarSpec, CarState, Profile

# The fleet lives around a made-up town; each home is a random offset from it.
TOWN = Point(42.30, -83.23)
PROFILE_ORDER = (Profile.COMMUTER_EV, Profile.WEEKEND_ICE, Profile.OVERNIGHT_EV)
COLORS = ("Rapid Red", "Oxford White", "Agate Black", "Iconic Silver", "Atlas Blue")
_VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"  # VINs never use I, O or Q
_VIN_VALUES = dict(
    zip(
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        (1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9),
        strict=True,
    )
)
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_YEAR_CODES = {2021: "M", 2022: "N", 2023: "P", 2024: "R"}


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    code: str
    wmi: str
    electric: bool
    full_range_km: float
    use_pct_per_km: float
    charge_pct_per_hour: float
    charge_target: float
    charge_hour: int
    speed_kmh: float


MODELS = {
    Profile.COMMUTER_EV: Model(
        "Mustang Mach-E", "MME", "3FM", True, 420.0, 0.24, 10.0, 90.0, 22, 50.0
    ),
    Profile.WEEKEND_ICE: Model("Bronco", "BRO", "1FM", False, 560.0, 0.18, 0.0, 100.0, 0, 45.0),
    Profile.OVERNIGHT_EV: Model(
        "F-150 Lightning", "F15", "1FT", True, 480.0, 0.21, 8.0, 100.0, 23, 40.0
    ),
}


@dataclass(slots=True)
class Executed:
    """A command that reached the car."""

    command: str
    at: datetime
    command_id: str
    account_id: str
    outcome: str


@dataclass(slots=True)
class Vehicle:
    """One simulated vehicle: identity, the car model, and what was done to it."""

    vehicle_id: str
    vin: str
    car: Car
    executed: list[Executed] = field(default_factory=list)

    @property
    def spec(self) -> CarSpec:
        return self.car.spec

    @property
    def query_id(self) -> str:
        """The same 128-bit id, written as FordConnect Query writes vehicle ids (a UUID)."""
        h = self.vehicle_id
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def vin_check_digit(vin: str) -> str:
    total = sum(
        (int(c) if c.isdigit() else _VIN_VALUES[c]) * w
        for c, w in zip(vin, _VIN_WEIGHTS, strict=True)
    )
    return "X" if total % 11 == 10 else str(total % 11)


def make_vin(wmi: str, year: int, rng: Random) -> str:
    """A fake but VIN-shaped VIN (17 characters, valid check digit)."""
    vds = "".join(rng.choice(_VIN_ALPHABET) for _ in range(5))
    serial = "".join(rng.choice("0123456789") for _ in range(6))
    plant = rng.choice("CFKLRT")
    draft = f"{wmi}{vds}0{_YEAR_CODES[year]}{plant}{serial}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]


def _spec(index: int, model: Model, profile: Profile, rng: Random) -> CarSpec:
    home = offset(TOWN, north_km=rng.uniform(-12, 12), east_km=rng.uniform(-12, 12))
    bearing, distance = math.radians(rng.uniform(0, 360)), rng.uniform(12, 28)
    work = offset(home, north_km=distance * math.cos(bearing), east_km=distance * math.sin(bearing))
    # About one car in four has a slow puncture in one tyre.
    leaks = [0.0, 0.0, 0.0, 0.0]
    if rng.random() < 0.25:
        leaks[rng.randrange(4)] = rng.uniform(2.0, 5.0)
    return CarSpec(
        profile=profile,
        model_name=model.name,
        model_code=model.code,
        year=rng.choice(tuple(_YEAR_CODES)),
        color=rng.choice(COLORS),
        nickname=f"{model.name.split()[0]} {index + 1}",
        electric=model.electric,
        full_range_km=model.full_range_km,
        use_pct_per_km=model.use_pct_per_km,
        charge_pct_per_hour=model.charge_pct_per_hour,
        charge_target=model.charge_target,
        charge_hour=model.charge_hour,
        home=home,
        work=work,
        altitude_m=rng.uniform(170, 210),
        speed_kmh=model.speed_kmh,
        depart_shift_min=rng.uniform(-30, 30),
        return_shift_min=rng.uniform(-30, 30),
        tyre_leak_kpa_per_day=(leaks[0], leaks[1], leaks[2], leaks[3]),
    )


def _initial(spec: CarSpec, at: datetime, rng: Random) -> CarState:
    energy = rng.uniform(40, 80)
    fl, fr, rl, rr = (rng.uniform(232, 248) for _ in range(4))
    return CarState(
        time=at,
        position=spec.home,
        heading=rng.uniform(0, 360),
        speed=0.0,
        odometer=round(rng.uniform(3_000, 60_000), 1),
        energy=energy,
        range_km=range_km(spec, energy),
        battery_12v=rng.uniform(75, 95),
        tyres=(fl, fr, rl, rr),
        oil_life=None if spec.electric else rng.uniform(30, 95),
        last_activity=at,
        plugged=spec.electric,
    )


def make_vehicle(index: int, seed: int, start: datetime) -> Vehicle:
    """Vehicle number `index` of the fleet drawn from `seed`, parked at home at `start`."""
    rng = Random(f"{seed}:{index}")
    profile = PROFILE_ORDER[index % len(PROFILE_ORDER)]
    model = MODELS[profile]
    spec = _spec(index, model, profile, rng)
    vehicle_id = f"{rng.getrandbits(128):032x}"
    vin = make_vin(model.wmi, spec.year, rng)
    car = Car(spec=spec, initial=_initial(spec, start, rng), seed_key=f"{seed}:{index}")
    return Vehicle(vehicle_id=vehicle_id, vin=vin, car=car)
