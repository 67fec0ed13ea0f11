"""The car's day model: profiles, driving, charging, locks, uploads only on events, laziness."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.simulator import ManualClock, Mode, Profile, Simulator
from bridge.simulator.car import Car
from bridge.simulator.fleet import Vehicle, make_vehicle
from bridge.simulator.geo import distance_km
from bridge.simulator.state import mode_of

MIDNIGHT = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
PERIODIC = {"driving", "charging"}
COMMANDS = (
    "lock",
    "unlock",
    "start_engine",
    "stop_engine",
    "start_charge",
    "stop_charge",
    "refresh",
    "wake",
    "horn_lights",
)


def vehicle(index: int, seed: int = 1) -> Vehicle:
    return make_vehicle(index, seed, MIDNIGHT)


def at(hours: float, day: int = 0) -> datetime:
    return MIDNIGHT + timedelta(days=day, hours=hours)


def modes_through(car: Car, start: datetime, end: datetime, step_min: int = 5) -> list[Mode]:
    out, t = [], start
    while t <= end:
        out.append(mode_of(car.truth(t)))
        t += timedelta(minutes=step_min)
    return out


def test_profiles_are_assigned_round_robin() -> None:
    """Vehicles take the profiles in turn: commuter EV, weekend ICE, overnight EV, again."""
    sim = Simulator(vehicles=6, clock=ManualClock(MIDNIGHT))
    assert [v.spec.profile for v in sim.vehicles] == [
        Profile.COMMUTER_EV,
        Profile.WEEKEND_ICE,
        Profile.OVERNIGHT_EV,
    ] * 2


def test_same_seed_same_world_other_seed_other_world() -> None:
    """Ids, VINs and the day are a function of the seed."""
    a, b, c = vehicle(0, seed=5), vehicle(0, seed=5), vehicle(0, seed=6)
    assert (a.vehicle_id, a.vin) == (b.vehicle_id, b.vin) != (c.vehicle_id, c.vin)
    assert a.car.truth(at(12, day=3)) == b.car.truth(at(12, day=3))


def test_vins_are_vin_shaped() -> None:
    """VINs are 17 characters without I, O or Q."""
    for i in range(20):
        vin = vehicle(i).vin
        assert len(vin) == 17 and not set(vin) & set("IOQ") and vin.isalnum()


def test_commuter_drives_to_work_and_back_and_charges_at_night() -> None:
    """Weekday: leaves around 08:00, back around 17:30, plugged in, charging late evening."""
    car = vehicle(0).car
    morning = modes_through(car, at(7), at(9, 0))
    assert Mode.DRIVING in morning
    at_work = car.truth(at(12))
    assert distance_km(at_work.position, car.spec.work) < 0.01 and at_work.locked
    assert Mode.DRIVING in modes_through(car, at(16.9), at(18.6))
    evening = car.truth(at(21.5))
    assert distance_km(evening.position, car.spec.home) < 0.01 and evening.plugged
    assert mode_of(car.truth(at(22.25))) is Mode.CHARGING


def test_weekend_ice_sleeps_for_days() -> None:
    """The weekend car spends most of a week asleep and never charges."""
    car = vehicle(1).car
    modes = modes_through(car, at(0), at(0, day=7), step_min=30)
    assert modes.count(Mode.SLEEPING) > 0.8 * len(modes)
    assert Mode.CHARGING not in modes


def test_overnight_ev_runs_errands_and_charges_overnight() -> None:
    """The overnight EV drives in the daytime and charges after its evening window opens."""
    car = vehicle(2).car
    assert Mode.DRIVING in modes_through(car, at(9), at(18))
    car.truth(at(23.5))
    assert car.truth(at(23.5)).plugged


def test_position_speed_and_heading_change_while_driving() -> None:
    """While driving the car moves along its route at speed; parked, it does not."""
    car = vehicle(0).car
    t = next(
        t for t in (at(7, 0) + timedelta(minutes=m) for m in range(0, 180)) if car.truth(t).ignition
    )
    a, b = car.truth(t + timedelta(minutes=1)), car.truth(t + timedelta(minutes=3))
    assert a.speed > 0 and distance_km(a.position, b.position) > 0.5
    assert b.odometer > a.odometer and b.energy < a.energy


def test_the_car_locks_itself_after_a_trip() -> None:
    """Unlocked to drive; doors shut and locked a minute after the ignition goes off."""
    car = vehicle(0).car
    assert car.truth(at(12)).locked and not car.truth(at(12)).doors_open
    reasons = [u.reason for u in car.uploads]
    assert "door opened" in reasons and "doors closed, locked" in reasons


def test_an_idle_fleet_runs_no_threads_or_tasks() -> None:
    """Building 500 vehicles starts nothing: the simulation only advances when asked."""
    before = threading.active_count()
    sim = Simulator(vehicles=500, clock=ManualClock(MIDNIGHT))
    assert len(sim.vehicles) == 500
    assert threading.active_count() == before


def test_the_answer_does_not_depend_on_who_asked_when() -> None:
    """Asking every minute or once gives the same state: the model is closed-form, not stepped."""
    often, once = vehicle(2).car, vehicle(2).car
    t = at(0)
    while t < at(20):
        often.served(t)
        t += timedelta(minutes=1)
    assert often.truth(at(20)) == once.truth(at(20))
    assert often.served(at(20)) == once.served(at(20))


times = st.lists(st.floats(min_value=1, max_value=6 * 3600), min_size=1, max_size=40)
actions = st.lists(
    st.tuples(st.floats(min_value=1, max_value=6 * 3600), st.sampled_from((None, *COMMANDS))),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 5), seed=st.integers(0, 1000), steps=actions)
def test_levels_stay_in_range_and_the_odometer_never_decreases(
    index: int, seed: int, steps: list[tuple[float, str | None]]
) -> None:
    """With any commands at any times: SoC/fuel in 0-100, 12 V sane, odometer monotone."""
    car = vehicle(index, seed).car
    t, odometer, served_odometer = MIDNIGHT, 0.0, 0.0
    for gap, command in steps:
        t += timedelta(seconds=gap)
        if command is not None:
            getattr(car, command)(t)
        truth, served = car.truth(t), car.served(t)
        for s in (truth, served):
            assert 0.0 <= s.energy <= 100.0 and s.range_km >= 0.0
            assert 30.0 <= s.battery_12v <= 100.0
        assert truth.odometer >= odometer and served.odometer >= served_odometer
        odometer, served_odometer = truth.odometer, served.odometer


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 5), seed=st.integers(0, 1000), gaps=times)
def test_served_state_is_a_past_truth_uploaded_on_an_event(
    index: int, seed: int, gaps: list[float]
) -> None:
    """Served = the truth at its upload time; uploads are events or ticks while driving/charging."""
    car, twin = vehicle(index, seed).car, vehicle(index, seed).car
    t, last = MIDNIGHT, MIDNIGHT
    for gap in gaps:
        t += timedelta(seconds=gap)
        served, upload = car.served(t), car.last_upload(t)
        assert last <= served.time == upload.time <= t
        truth_then = twin.truth(served.time)
        assert served == truth_then
        if upload.reason == "driving":
            assert mode_of(truth_then) is Mode.DRIVING
        elif upload.reason == "charging":
            assert mode_of(truth_then) is Mode.CHARGING
        last = served.time


def test_a_parked_car_uploads_nothing() -> None:
    """A sleeping car's served snapshot does not change however long it sleeps."""
    car = vehicle(1).car  # weekend_ice, no trip on this Monday
    served = [car.served(at(h)) for h in range(1, 24)]
    assert all(s == served[0] for s in served)
    assert car.truth(at(23)).battery_12v < served[0].battery_12v
