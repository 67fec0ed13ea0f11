"""Sharing a fleet between several Ownerlink instances: who runs which account (pure).

Rendezvous (highest-random-weight) hashing: every instance computes the owner of an account from
nothing but the ids of the live instances, so no coordinator hands out work and all instances
agree as soon as they see the same membership. When an instance joins, the only accounts that
move are those it now wins (they move to it); when one leaves, only its own accounts move.

Accounts, not vehicles, are the unit: an account's call budget, OAuth tokens (whose refresh token
rotates: two refreshers would log each other out) and the car maker's rate limits are one thing,
so every vehicle of an account is polled by the same instance. docs/scaling.md has the design
around this module; only what is here is implemented.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

# The MQTT 5 shared-subscription group all instances of one deployment join.
SHARE_GROUP = "ownerlink"
_HASH_BYTES = 8
# 52 bits: (n + 0.5) / 2**52 is exact in a double and strictly inside (0, 1), so ln(u) < 0.
_UNIT_BITS = 52
_UNIT_SPAN = float(1 << _UNIT_BITS)

Instances = Mapping[str, float] | Iterable[str]


def _unit(instance: str, key: str) -> float:
    """A uniform draw in (0, 1) fixed by (instance, key); the same on every machine and run."""
    # Length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike.
    material = f"{len(instance)}:{instance}{key}".encode()
    digest = hashlib.blake2b(material, digest_size=_HASH_BYTES).digest()
    top = int.from_bytes(digest, "big") >> (8 * _HASH_BYTES - _UNIT_BITS)
    return (top + 0.5) / _UNIT_SPAN


def score(instance: str, key: str, weight: float = 1.0) -> float:
    """The instance's bid for `key`; the highest bid wins. `-w / ln(u)` (weighted rendezvous) gives
    an instance of weight w a share w / Σw of the keys, and equals plain HRW when weights agree."""
    return -weight / math.log(_unit(instance, key))


def _weights(instances: Instances) -> dict[str, float]:
    weights = dict(instances) if isinstance(instances, Mapping) else dict.fromkeys(instances, 1.0)
    if not weights:
        raise ValueError("no instances to assign to")
    if any(not w > 0 for w in weights.values()):
        raise ValueError("instance weights must be positive")
    return weights


def owner(key: str, instances: Instances) -> str:
    """The instance that owns `key`: ids (equal shares) or id → capacity weight."""
    weights = _weights(instances)
    # The id breaks a (64-bit, practically impossible) tie the same way everywhere.
    return max(weights, key=lambda i: (score(i, key, weights[i]), i))


def assign(keys: Iterable[str], instances: Instances) -> dict[str, str]:
    """Every key to exactly one instance."""
    weights = _weights(instances)
    return {key: owner(key, weights) for key in keys}


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Keys assigned in both whose instance changed: key → (from, to)."""
    return {k: (before[k], after[k]) for k in before.keys() & after.keys() if before[k] != after[k]}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where each account, and therefore each of its vehicles, runs."""

    accounts: dict[str, str]  # account → instance
    vehicles: dict[str, str]  # vehicle slug → instance

    def of(self, instance: str) -> frozenset[str]:
        """The vehicles `instance` polls and commands."""
        return frozenset(slug for slug, where in self.vehicles.items() if where == instance)

    def loads(self) -> dict[str, int]:
        """Vehicles per instance (instances with none are absent)."""
        counts: dict[str, int] = {}
        for where in self.vehicles.values():
            counts[where] = counts.get(where, 0) + 1
        return counts


def place(vehicles: Mapping[str, str], instances: Instances) -> Placement:
    """Place vehicles (slug → account) by account: an account's vehicles share one instance."""
    accounts = assign(set(vehicles.values()), instances)
    return Placement(accounts, {slug: accounts[acct] for slug, acct in vehicles.items()})


# -- commands arriving through a shared subscription --------------------------------------------


def shared_command_filter(base: str, group: str = SHARE_GROUP) -> str:
    """The MQTT 5 shared subscription every instance makes: the broker hands each command to
    exactly one member of `group` (today's plain filter would hand it to every instance)."""
    return f"$share/{group}/{base}/app/+/+/cmd/+"


class Handling(StrEnum):
    """What the instance a command reached does with it."""

    LOCAL = "local"  # this instance runs the vehicle's account: decide and execute here
    FORWARD = "forward"  # another instance does: hand the command over unchanged
    REJECT = "reject"  # no instance bridges this vehicle: refuse it here, with a result


@dataclass(frozen=True, slots=True)
class CommandRoute:
    handling: Handling
    instance: str | None = None  # the owner, for LOCAL and FORWARD


def route_command(vehicle: str, *, me: str, placement: Placement) -> CommandRoute:
    """Where a command for `vehicle` that arrived at instance `me` must be handled."""
    where = placement.vehicles.get(vehicle)
    if where is None:
        return CommandRoute(Handling.REJECT)
    return CommandRoute(Handling.LOCAL if where == me else Handling.FORWARD, where)
