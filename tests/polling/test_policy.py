"""The polling policy as a pure function: modes, intervals, budget spreading and refreshes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import BudgetConfig, PollingConfig
from bridge.model import ChargingState, Ignition, Status, VehicleState
from bridge.polling.budget import Call, usage_of
from bridge.polling.cadence import Cadence
from bridge.polling.policy import (
    Activity,
    Block,
    Mode,
    PollInput,
    activity_of,
    next_poll,
    observe,
    pace,
)
from bridge.polling.prior import ActivityPrior, weekend_days
from bridge.providers.base import CallKind

NOON = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
NIGHT = datetime(2025, 6, 4, 2, 0, tzinfo=UTC)
CONFIG = PollingConfig()


def usage(now: datetime = NOON, calls: list[Call] | None = None, **budget: int):
    return usage_of(calls or [], now=now.timestamp(), config=BudgetConfig(**budget))


def reads(count: int, *, end: datetime = NOON, spread_s: float = 3600.0) -> list[Call]:
    """`count` READ calls evenly spread over the `spread_s` seconds before `end`."""
    step = spread_s / max(count, 1)
    return [Call(end.timestamp() - spread_s + i * step, CallKind.READ) for i in range(count)]


def seen(
    activity: Activity, *, now: datetime = NOON, upload_age_s: float = 30.0, **kw
) -> PollInput:
    """A vehicle just polled at `now`, whose last upload is `upload_age_s` old."""
    upload = now - timedelta(seconds=upload_age_s)
    fields = {"activity": activity, "upload_at": upload, "active_at": upload, "last_poll_at": now}
    return PollInput(**{**fields, **kw})


def wait(plan, now: datetime = NOON) -> float:
    return (plan.at - now).total_seconds()


def test_first_poll_is_now():
    """Nothing known about the vehicle yet: poll at once."""
    plan = next_poll(PollInput(), now=NOON, budget=usage(), config=CONFIG)
    assert plan.at == NOON


def test_driving_polls_at_the_driving_interval_when_the_budget_allows():
    """While driving, with budget to spare, the driving interval applies."""
    plan = next_poll(
        seen(Activity.DRIVING), now=NOON, budget=usage(calls_per_hour=1000), config=CONFIG
    )
    assert plan.mode is Mode.DRIVING
    assert wait(plan) == CONFIG.driving_interval_s


def test_hourly_budget_paces_driving():
    """Driving polls slow down as the hour's calls get used (here: 20 in the last 20 minutes)."""
    fresh = next_poll(seen(Activity.DRIVING), now=NOON, budget=usage(), config=CONFIG)
    busy = usage(calls=reads(20, spread_s=1200))
    paced = next_poll(seen(Activity.DRIVING), now=NOON, budget=busy, config=CONFIG)
    assert wait(fresh) == CONFIG.driving_interval_s
    assert CONFIG.driving_interval_s < wait(paced) <= 300


def test_charging_polls_at_the_charging_interval():
    """While charging, the (longer) charging interval applies."""
    plan = next_poll(seen(Activity.CHARGING), now=NOON, budget=usage(), config=CONFIG)
    assert plan.mode is Mode.CHARGING
    assert wait(plan) == CONFIG.charging_interval_s


def test_spare_budget_keeps_a_parked_car_at_parked_min_scaled_by_the_hour():
    """A parked car with a fresh budget is polled at parked_min divided by the hour's prior
    weight (busy hours more often), not backed off."""
    v = seen(Activity.PARKED, upload_age_s=7200, quiet_polls=6)
    plan = next_poll(v, now=NOON, budget=usage(), config=CONFIG)
    assert plan.mode is Mode.PARKED
    weight = ActivityPrior.default().weight(NOON)
    assert weight > 1
    assert wait(plan) == pytest.approx(CONFIG.parked_min_interval_s / weight)


def test_parked_interval_grows_while_nothing_changes():
    """Without budget to spare, a parked car is polled less and less often, up to parked_max."""
    tight = usage(calls_per_day=60)
    waits = [
        wait(
            next_poll(
                seen(Activity.PARKED, upload_age_s=7200, quiet_polls=q),
                now=NOON,
                budget=tight,
                config=CONFIG,
            )
        )
        for q in range(6)
    ]
    assert waits == sorted(waits)
    assert waits[0] == CONFIG.parked_min_interval_s
    assert waits[-1] >= CONFIG.parked_max_interval_s


def test_sleeping_overnight_polls_rarely_until_the_morning():
    """Parked for hours at night, the car is left alone until the hours when cars set off."""
    v = seen(Activity.PARKED, now=NIGHT, upload_age_s=5 * 3600, quiet_polls=3)
    plan = next_poll(v, now=NIGHT, budget=usage(NIGHT), config=CONFIG)
    assert plan.mode is Mode.SLEEPING
    assert plan.at == datetime(2025, 6, 4, 5, 0, tzinfo=UTC)
    assert wait(plan, NIGHT) > CONFIG.parked_max_interval_s


def test_sleep_never_exceeds_the_sleeping_interval():
    """With a shorter sleeping_interval_s, the sleeping car is looked at that often."""
    config = PollingConfig(sleeping_interval_s=3600)
    v = seen(Activity.PARKED, now=NIGHT, upload_age_s=5 * 3600, quiet_polls=3)
    assert wait(next_poll(v, now=NIGHT, budget=usage(NIGHT), config=config), NIGHT) == 3600


def test_waiting_to_charge_never_sleeps_and_looks_just_after_the_hour():
    """Plugged in and waiting (a scheduled charge), the car is watched, at the top of the hour."""
    night = NIGHT + timedelta(minutes=50)
    v = seen(
        Activity.PARKED, now=night, upload_age_s=5 * 3600, quiet_polls=3, waiting_to_charge=True
    )
    plan = next_poll(v, now=night, budget=usage(night), config=CONFIG)
    assert plan.mode is Mode.PARKED
    assert plan.at == datetime(2025, 6, 4, 3, 0, 5, tzinfo=UTC)


def test_exhausted_waits_for_the_window_to_free_a_call():
    """With no reads left, the next poll is when the oldest call leaves the window."""
    budget = usage(calls=reads(32, spread_s=1800))
    plan = next_poll(seen(Activity.DRIVING), now=NOON, budget=budget, config=CONFIG)
    assert plan.mode is Mode.EXHAUSTED
    assert plan.at == budget.next_free_at > NOON


def test_exhausted_waits_as_long_as_the_budget_says_even_with_the_clock_set_back():
    """The budget's effective time runs ahead of a clock that was set back: the poll comes when
    the wait is over by our clock, not when our clock reaches the budget's instant (a day later
    after a day-long jump back)."""
    ahead = NOON + timedelta(days=1)
    budget = usage(now=ahead, calls=reads(32, end=ahead, spread_s=1800))
    plan = next_poll(seen(Activity.DRIVING), now=NOON, budget=budget, config=CONFIG)
    assert plan.mode is Mode.EXHAUSTED
    assert plan.at - NOON == budget.next_free_at - budget.at > timedelta(0)


def test_confirmation_is_read_soon_even_when_reads_are_exhausted():
    """After a command, one read soon: it is charged to the command share, so reads being used
    up does not delay it."""
    budget = usage(calls=reads(32, spread_s=1800))
    v = seen(Activity.PARKED, upload_age_s=7200, confirm_pending=True)
    plan = next_poll(v, now=NOON, budget=budget, config=CONFIG)
    assert plan.mode is Mode.CONFIRMING
    assert 0 < wait(plan) <= 30


def test_no_refresh_unless_configured():
    """The modem-waking status refresh is never planned by default."""
    v = seen(Activity.PARKED, upload_age_s=7200, quiet_polls=3)
    assert not next_poll(v, now=NOON, budget=usage(), config=CONFIG).refresh


def test_configured_refresh_is_planned_when_due_and_parked_only():
    """With scheduled_refresh_interval_s set, a parked car gets a refresh once it is due."""
    config = PollingConfig(scheduled_refresh_interval_s=6 * 3600)
    parked = seen(Activity.PARKED, upload_age_s=7200, quiet_polls=3)
    assert next_poll(parked, now=NOON, budget=usage(), config=config).refresh
    recent = replace(parked, last_refresh_at=NOON - timedelta(hours=1))
    assert not next_poll(recent, now=NOON, budget=usage(), config=config).refresh
    assert not next_poll(seen(Activity.DRIVING), now=NOON, budget=usage(), config=config).refresh


def test_remaining_budget_is_spread_the_fuller_the_window_the_longer_the_wait():
    """Parked polls slow down as the day's window fills, so an active evening keeps calls."""
    v = seen(Activity.PARKED, upload_age_s=7200, quiet_polls=1)
    waits = [
        wait(
            next_poll(v, now=NOON, budget=usage(calls=reads(n, spread_s=20 * 3600)), config=CONFIG)
        )
        for n in (0, 60, 120, 150)
    ]
    assert waits == sorted(waits)
    assert waits[-1] > waits[0]


def test_several_vehicles_on_one_account_share_its_budget():
    """Three vehicles on one account each poll at least three times less often when paced."""
    one = next_poll(seen(Activity.DRIVING), now=NOON, budget=usage(), config=CONFIG)
    three = next_poll(seen(Activity.DRIVING), now=NOON, budget=usage(), config=CONFIG, vehicles=3)
    assert wait(three) >= 3 * wait(one) * 0.95


def test_a_long_drive_slows_down_when_the_day_runs_low():
    """Driving late in a heavy day is paced so that the day's reads do not run dry."""
    heavy = usage(calls=reads(185, spread_s=20 * 3600))
    plan = next_poll(seen(Activity.DRIVING), now=NOON, budget=heavy, config=CONFIG)
    assert plan.mode is Mode.DRIVING
    assert wait(plan) > 300


def test_block_defers_until_it_lifts():
    """A Retry-After, breaker or suspension block moves the next poll to its end."""
    block = Block(NOON + timedelta(hours=2), Mode.SUSPENDED, "suspended")
    plan = next_poll(seen(Activity.DRIVING), now=NOON, budget=usage(), config=CONFIG, block=block)
    assert (plan.at, plan.mode) == (block.until, Mode.SUSPENDED)


def state(ignition: Ignition, *, at: datetime, charging=ChargingState.NOT_PLUGGED) -> VehicleState:
    return VehicleState("v", at, Status(ignition=ignition, charging=charging))


def test_ignition_off_gets_one_more_quick_poll_then_backs_off():
    """When the ignition turns off, one more poll at the driving pace, then the parked pace."""
    v = seen(Activity.DRIVING)
    ended = observe(v, state(Ignition.OFF, at=NOON - timedelta(seconds=10)), now=NOON)
    first = next_poll(ended, now=NOON, budget=usage(calls_per_hour=1000), config=CONFIG)
    assert wait(first) == CONFIG.driving_interval_s
    later = first.at + timedelta(minutes=15)
    again = observe(ended, state(Ignition.OFF, at=NOON - timedelta(seconds=10)), now=later)
    second = next_poll(again, now=later, budget=usage(later), config=CONFIG)
    assert second.mode is Mode.PARKED
    assert wait(second, later) >= 5 * CONFIG.driving_interval_s


def test_a_fresh_upload_from_a_parked_car_is_looked_at_again_soon():
    """A door or lock event on a parked car often precedes a trip: the next poll comes soon."""
    v = seen(Activity.PARKED, upload_age_s=7200, quiet_polls=4)
    stirred = observe(v, state(Ignition.OFF, at=NOON - timedelta(seconds=20)), now=NOON)
    plan = next_poll(stirred, now=NOON, budget=usage(), config=CONFIG)
    assert plan.mode is Mode.PARKED
    assert wait(plan) < CONFIG.parked_min_interval_s / 2


def test_locked_upload_rhythm_polls_just_after_an_expected_upload():
    """Once the car's upload tick is known, polls land a few seconds after an expected upload."""
    last_upload = NOON - timedelta(seconds=5)
    v = seen(Activity.DRIVING, upload_age_s=5, cadence=Cadence(60.0, 2))
    assert v.upload_at == last_upload
    plan = next_poll(v, now=NOON, budget=usage(), config=CONFIG)
    since_upload = (plan.at - last_upload).total_seconds()
    assert since_upload % 60 == pytest.approx(5.0)


def test_learning_the_rhythm_from_the_uploads_seen():
    """Gaps of 120 s and 180 s between the uploads seen reveal a 60 s tick."""
    v = seen(Activity.DRIVING, upload_age_s=0)
    for gap in (120, 180):
        t = v.upload_at + timedelta(seconds=gap)
        v = observe(v, state(Ignition.RUN, at=t), now=t)
    assert v.cadence.period_s == pytest.approx(60.0)
    assert v.cadence.locked


def test_a_missed_expected_upload_unlocks_the_rhythm():
    """If the promised upload does not come, the rhythm is no longer trusted."""
    v = seen(Activity.DRIVING, upload_age_s=0, cadence=Cadence(60.0, 3))
    later = v.upload_at + timedelta(seconds=90)
    v = observe(v, state(Ignition.RUN, at=v.upload_at), now=later)
    assert not v.cadence.locked


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status(ignition=Ignition.RUN), Activity.DRIVING),
        (Status(ignition=Ignition.OFF, charging=ChargingState.CHARGING), Activity.CHARGING),
        (Status(ignition=Ignition.OFF, charging=ChargingState.PLUGGED), Activity.PARKED),
        (Status(), Activity.UNKNOWN),
    ],
)
def test_activity_is_read_from_ignition_then_charging(status, expected):
    """Ignition on is driving; then charging; unknown fields stay unknown."""
    assert activity_of(VehicleState("v", NOON, status)) is expected


def test_pace_spreads_the_room_left_over_the_horizon():
    """An empty window's pace is the horizon over its capacity; a full one waits for releases."""
    empty = usage().hour
    assert pace(empty, keep=0, horizon=3600) == pytest.approx(3600 / 32)
    full = usage(calls=reads(32, spread_s=1800)).hour
    assert pace(full, keep=0, horizon=3600) >= full.releases[0]


def test_learned_prior_favours_the_hours_the_car_sets_off():
    """Starts at 8:00 on five days make 8 am a hot hour; weights still average 1."""
    starts = [datetime(2025, 6, d, 8, 5, tzinfo=UTC) for d in range(2, 7)]
    prior = ActivityPrior.learned(starts, days=5)
    assert sum(prior.weights) / 24 == pytest.approx(1.0)
    assert prior.weights[8] > 3 * prior.weights[12] > 0
    assert prior.weights[3] < prior.weights[12]


def commuter_starts(weeks: int) -> list[datetime]:
    """Off at 8:05 every weekday, and at 11:05 on Saturdays and Sundays, from Monday 2 June 2025."""
    first = datetime(2025, 6, 2, tzinfo=UTC)
    days = [first + timedelta(days=n) for n in range(7 * weeks)]
    return [d.replace(hour=8 if d.weekday() < 5 else 11, minute=5) for d in days]


def test_weekends_are_learned_apart_from_weekdays():
    """Two weeks of an 8 am commute and 11 am weekend outings: Saturday's 8 am is far cooler
    than Monday's and its 11 am the hotter hour; each profile still averages 1."""
    prior = ActivityPrior.learned(commuter_starts(2), days=14, weekend_days=4)
    assert prior.weekend is not None
    assert sum(prior.weights) / 24 == pytest.approx(1.0)
    assert sum(prior.weekend) / 24 == pytest.approx(1.0)
    monday, saturday = datetime(2025, 6, 16, tzinfo=UTC), datetime(2025, 6, 21, tzinfo=UTC)
    assert prior.weight(monday.replace(hour=8)) > 2 * prior.weight(monday.replace(hour=11))
    assert prior.weight(saturday.replace(hour=11)) > 1.5 * prior.weight(saturday.replace(hour=8))
    assert prior.weight(saturday.replace(hour=8)) < prior.weight(monday.replace(hour=8)) / 2
    # Waking from the night looks for the day's own busy hour.
    assert prior.wakes_at(saturday.replace(hour=3), 3.0).hour in (10, 11)
    assert prior.wakes_at(monday.replace(hour=3), 3.0).hour in (7, 8)


def test_before_its_first_weekend_a_car_has_one_prior_for_every_day():
    """Five weekdays of history and no weekend yet: Saturday leans wholly on the weekdays, so the
    weekend weights are the weekday weights (8 am hot) rather than the population's."""
    starts = [datetime(2025, 6, d, 8, 5, tzinfo=UTC) for d in range(2, 7)]
    prior = ActivityPrior.learned(starts, days=5, weekend_days=0)
    assert prior.weekend == pytest.approx(prior.weights)
    assert prior.weekend is not None and prior.weekend[8] == max(prior.weekend)


def test_one_weekend_moves_the_weekend_but_not_the_weekdays_much():
    """After a first weekend with 11 am outings, Saturday's 11 am outweighs its 8 am, while the
    weekdays keep their 8 am as the hottest hour."""
    prior = ActivityPrior.learned(commuter_starts(1), days=7, weekend_days=2)
    assert prior.weekend is not None
    assert prior.weekend[11] > prior.weekend[8]
    assert prior.weights[8] == max(prior.weights)


def test_weekend_days_counts_local_saturdays_and_sundays():
    """A week holds two weekend days; half of Saturday to half of Sunday is one; the local zone
    decides where the weekend begins."""
    monday = datetime(2025, 6, 2, tzinfo=UTC)
    assert weekend_days(monday, monday + timedelta(days=7)) == pytest.approx(2.0)
    saturday_noon = datetime(2025, 6, 7, 12, tzinfo=UTC)
    assert weekend_days(saturday_noon, saturday_noon + timedelta(days=1)) == pytest.approx(1.0)
    tokyo = ZoneInfo("Asia/Tokyo")  # UTC+9: Friday 15:00 UTC is already Saturday there
    friday = datetime(2025, 6, 6, 15, tzinfo=UTC)
    assert weekend_days(friday, friday + timedelta(hours=9), tokyo) == pytest.approx(9 / 24)
    assert weekend_days(friday, friday + timedelta(hours=9)) == 0.0


modes = st.sampled_from([Activity.DRIVING, Activity.CHARGING, Activity.PARKED])


@settings(max_examples=300, deadline=None)
@given(
    activity=modes,
    quiet=st.integers(0, 10),
    age=st.floats(0, 2 * 86400),
    used=st.integers(0, 250),
    hour=st.integers(0, 23),
    vehicles=st.integers(1, 5),
)
def test_plans_are_never_in_the_past_and_never_before_reads_are_allowed(
    activity, quiet, age, used, hour, vehicles
):
    """Whatever the inputs, the plan is not before now, and never before a READ is admitted."""
    now = NOON.replace(hour=hour)
    budget = usage(now, calls=reads(used, end=now, spread_s=23 * 3600))
    v = seen(activity, now=now, upload_age_s=age, quiet_polls=quiet)
    plan = next_poll(v, now=now, budget=budget, config=CONFIG, vehicles=vehicles)
    assert plan.at >= now
    assert plan.at >= budget.next_free_at
    assert plan == next_poll(v, now=now, budget=budget, config=CONFIG, vehicles=vehicles)
