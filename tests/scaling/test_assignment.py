"""Rendezvous assignment of accounts to instances: exactly one owner, balance, minimal movement."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.scaling import (
    Handling,
    assign,
    moved,
    owner,
    place,
    route_command,
    score,
)

keys = st.sets(st.text(min_size=1, max_size=24), min_size=1, max_size=200)
instance_ids = st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=8)
# Statistical properties run on fixed examples, so they can never flake.
fixed = settings(derandomize=True, max_examples=60, deadline=None)


@given(keys, instance_ids)
def test_every_key_has_exactly_one_live_owner(ks: set[str], instances: set[str]) -> None:
    """Each key is assigned once, to one of the live instances."""
    assignment = assign(ks, instances)
    assert assignment.keys() == ks
    assert set(assignment.values()) <= instances


@given(keys, instance_ids)
def test_assignment_ignores_the_order_instances_are_listed_in(
    ks: set[str], instances: set[str]
) -> None:
    """Every instance computes the same owners whatever order it learnt the membership in."""
    forward, backward = sorted(instances), sorted(instances, reverse=True)
    assert assign(ks, forward) == assign(ks, backward)


@given(keys, instance_ids, st.text(min_size=1, max_size=12))
def test_a_joining_instance_only_takes_keys(ks: set[str], instances: set[str], new: str) -> None:
    """When an instance joins, a key either stays put or moves to the newcomer."""
    before = assign(ks, instances)
    after = assign(ks, instances | {new})
    assert all(to == new for _, to in moved(before, after).values())


@given(keys, instance_ids.filter(lambda s: len(s) >= 2), st.data())
def test_a_leaving_instance_only_gives_up_its_own_keys(
    ks: set[str], instances: set[str], data: st.DataObject
) -> None:
    """When an instance leaves, only the keys it owned move; everything else stays put."""
    gone = data.draw(st.sampled_from(sorted(instances)))
    before = assign(ks, instances)
    after = assign(ks, instances - {gone})
    assert all(was == gone for was, _ in moved(before, after).values())
    assert all(after[k] != gone for k in ks)


def _bound(mean: float) -> float:
    """Six standard deviations of a binomial count with this mean (and a little slack)."""
    return 6 * math.sqrt(mean) + 2


@fixed
@given(
    st.integers(min_value=2, max_value=8),
    st.integers(min_value=400, max_value=2000),
    st.text(max_size=8),
)
def test_accounts_spread_evenly_over_instances(m: int, n: int, salt: str) -> None:
    """With n accounts on m instances each instance gets n/m give or take six sigma."""
    instances = [f"{salt}instance-{i}" for i in range(m)]
    assignment = assign((f"{salt}account-{j}" for j in range(n)), instances)
    counts = [sum(1 for v in assignment.values() if v == i) for i in instances]
    mean = n / m
    assert max(counts) <= mean + _bound(mean)
    assert min(counts) >= mean - _bound(mean)


@fixed
@given(st.integers(min_value=2, max_value=8), st.text(max_size=8))
def test_a_join_moves_about_one_share_of_the_keys(m: int, salt: str) -> None:
    """A new instance among m takes about 1/(m+1) of the keys, not a reshuffle of all."""
    ks = [f"{salt}account-{j}" for j in range(1500)]
    instances = {f"{salt}instance-{i}" for i in range(m)}
    before = assign(ks, instances)
    after = assign(ks, instances | {f"{salt}newcomer"})
    expected = len(ks) / (m + 1)
    assert abs(len(moved(before, after)) - expected) <= _bound(expected)


def test_capacity_weights_set_the_shares() -> None:
    """An instance of weight 3 next to one of weight 1 owns about three quarters of the keys."""
    assignment = assign((f"account-{j}" for j in range(4000)), {"big": 3.0, "small": 1.0})
    share = sum(1 for v in assignment.values() if v == "big") / 4000
    assert 0.72 <= share <= 0.78


def test_equal_weights_give_the_plain_assignment() -> None:
    """Weighting every instance alike assigns exactly as the unweighted call does."""
    ks = [f"account-{j}" for j in range(300)]
    assert assign(ks, {"a": 2.0, "b": 2.0, "c": 2.0}) == assign(ks, ["a", "b", "c"])


def test_the_assignment_is_pinned_across_releases() -> None:
    """Instances on different releases agree: a fixed hash (not hash()) pins these owners."""
    instances = ["node-a", "node-b", "node-c"]
    assert assign([f"acct-{i}" for i in range(8)], instances) == {
        "acct-0": "node-c",
        "acct-1": "node-b",
        "acct-2": "node-a",
        "acct-3": "node-a",
        "acct-4": "node-c",
        "acct-5": "node-a",
        "acct-6": "node-a",
        "acct-7": "node-a",
    }
    assert score("node-a", "acct-0") == pytest.approx(0.7237072852855723, rel=1e-12)


def test_no_instances_is_an_error() -> None:
    """Assigning with nobody to assign to says so instead of returning nothing."""
    with pytest.raises(ValueError, match="no instances"):
        owner("account", [])
    with pytest.raises(ValueError, match="positive"):
        owner("account", {"a": 0.0})


vehicles = st.dictionaries(
    st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    st.sampled_from(["acct-1", "acct-2", "acct-3", "acct-4", "acct-5"]),
    min_size=1,
    max_size=60,
)


@given(vehicles, instance_ids)
def test_an_accounts_vehicles_share_one_instance(
    fleet: dict[str, str], instances: set[str]
) -> None:
    """Every vehicle runs on exactly one instance, the one that owns its account."""
    placement = place(fleet, instances)
    assert placement.vehicles.keys() == fleet.keys()
    for slug, account in fleet.items():
        assert placement.vehicles[slug] == placement.accounts[account]
    assert sum(placement.loads().values()) == len(fleet)
    assert set().union(*(placement.of(i) for i in instances)) == set(fleet)


@given(vehicles, instance_ids, st.data())
def test_a_command_is_handled_where_its_vehicle_runs(
    fleet: dict[str, str], instances: set[str], data: st.DataObject
) -> None:
    """The receiving instance handles its own vehicles, forwards others', rejects unknown ones."""
    placement = place(fleet, instances)
    me = data.draw(st.sampled_from(sorted(instances)))
    for slug, where in placement.vehicles.items():
        route = route_command(slug, me=me, placement=placement)
        assert route.instance == where
        assert route.handling is (Handling.LOCAL if where == me else Handling.FORWARD)
    assert route_command("-not-a-slug-", me=me, placement=placement).handling is Handling.REJECT
