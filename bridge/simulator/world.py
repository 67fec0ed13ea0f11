"""The `Simulator`: the fleet, the accounts and tokens, limits, faults, and the clock."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

from bridge.simulator.auth import Account, AuthServer, ClientRegistration
from bridge.simulator.clock import Clock, SimClock
from bridge.simulator.commands import CommandBook, CommandKind, CommandRecord
from bridge.simulator.faults import FaultInjector, FaultKind, Limits, RateLimiter, parse_fault_spec
from bridge.simulator.fleet import Executed, Vehicle, make_vehicle


@dataclass(frozen=True, slots=True)
class Timings:
    """Protocol timings, in REAL seconds: clients wait and poll on a wall clock."""

    code_lifetime_s: float = 60.0
    command_delay_s: float = 3.0
    command_id_lifetime_s: float = 120.0
    timeout_delay_s: float = 35.0  # longer than the usual 30 s client timeout
    slow_delay_s: float = 2.0
    fault_retry_after_s: int = 2


class Simulator:
    """The simulated world. Thread-safe: every public method takes `lock`."""

    def __init__(
        self,
        *,
        vehicles: int = 2,
        seed: int = 1,
        clock: Clock | None = None,
        client_id: str = "ownerlink-sim",
        client_secret: str = "sim-secret",  # noqa: S107 - the simulator's published test value
        application_id: str = "sim-app-id",
        auto_consent: bool = False,
        admin: bool = False,
        token_lifetime: float = 1200.0,
        refresh_token_lifetime: float = 90 * 86400.0,
        limits: Limits | None = None,
        faults: str | Mapping[FaultKind, float] | None = None,
        timings: Timings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SimClock()
        self.seed = seed
        self.auto_consent = auto_consent
        self.admin = admin
        self.timings = timings if timings is not None else Timings()
        self.lock = threading.RLock()
        self.monotonic = monotonic
        # Trace ids in error bodies only need to be distinct; a counter keeps runs reproducible.
        self.traces = itertools.count(1)
        midnight = self.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        fleet = (make_vehicle(i, seed, midnight) for i in range(vehicles))
        self._fleet = {v.vehicle_id: v for v in fleet}
        # Separate streams, so that minting a token never shifts which request gets a fault.
        self.auth = AuthServer(
            client=ClientRegistration(client_id, client_secret, application_id),
            access_lifetime=timedelta(seconds=token_lifetime),
            refresh_lifetime=timedelta(seconds=refresh_token_lifetime),
            code_lifetime_s=self.timings.code_lifetime_s,
            rng=Random(f"{seed}:tokens"),
            monotonic=monotonic,
        )
        self.commands = CommandBook(
            delay_s=self.timings.command_delay_s,
            lifetime_s=self.timings.command_id_lifetime_s,
            rng=Random(f"{seed}:commands"),
            monotonic=monotonic,
        )
        self.limiter = RateLimiter(limits if limits is not None else Limits())
        self.faults = FaultInjector(rates=_rates(faults), rng=Random(f"{seed}:faults"))
        # Vehicles the v1 API answers 403 for (one car refused while the account is fine).
        self.forbidden: set[str] = set()

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def vehicles(self) -> list[Vehicle]:
        return list(self._fleet.values())

    def vehicle(self, vehicle_id: str) -> Vehicle | None:
        return self._fleet.get(vehicle_id.lower())

    def real_seconds(self, sim_seconds: float) -> float:
        """How long `sim_seconds` of simulated time lasts in real time."""
        return sim_seconds / self.clock.speed

    # -- consent ---------------------------------------------------------------------------

    def vehicle_ids_for(self, requested: str | None) -> list[str]:
        """`vehicle=` on authorise: one id, a comma-separated list, `all`, or absent (the first)."""
        if not requested:
            return [next(iter(self._fleet))] if self._fleet else []
        if requested == "all":
            return list(self._fleet)
        ids = [part.strip().lower() for part in requested.split(",") if part.strip()]
        unknown = [v for v in ids if v not in self._fleet]
        if unknown or not ids:
            raise ValueError(f"unknown vehicle {', '.join(unknown) or requested!r}")
        return ids

    def consent(
        self,
        *,
        vehicle_ids: list[str],
        login_hint: str | None,
        redirect_uri: str,
        challenge: str | None,
        scope: str,
    ) -> str:
        """Record an owner's consent and return the authorization code for it."""
        with self.lock:
            account = self.auth.account_for(login_hint, vehicle_ids)
            return self.auth.issue_code(
                account=account, redirect_uri=redirect_uri, challenge=challenge, scope=scope
            )

    def grant(
        self, *, vehicle: str | None = None, login_hint: str | None = None, scope: str = "access"
    ) -> dict[str, Any]:
        """Consent and token exchange in one step, for tests and tools that skip the browser."""
        with self.lock:
            account = self.auth.account_for(login_hint, self.vehicle_ids_for(vehicle))
            return self.auth.issue_tokens(account.account_id, scope, self.now())

    def account(self, account_id: str) -> Account:
        return self.auth.accounts[account_id]

    # -- commands ---------------------------------------------------------------------------

    def deliver(self, vehicle: Vehicle, account_id: str, kind: CommandKind) -> CommandRecord:
        """Send a command to the car now, log it as executed, and book its id for polling."""
        with self.lock:
            now = self.now()
            command_id = self.commands.new_id()
            outcome = kind.run(vehicle.car, now)
            vehicle.executed.append(Executed(kind.name, now, command_id, account_id, outcome.value))
            return self.commands.record(command_id, kind, vehicle.vehicle_id, account_id, outcome)

    # -- admin -----------------------------------------------------------------------------

    def set_faults(self, faults: str | Mapping[FaultKind, float]) -> None:
        with self.lock:
            self.faults.rates = _rates(faults)

    def forbid(self, vehicle_id: str, *, forbidden: bool = True) -> None:
        """Answer 403 to every v1 call naming this vehicle (or stop doing so), while the
        account's other vehicles and its vehicle list answer as before."""
        with self.lock:
            (self.forbidden.add if forbidden else self.forbidden.discard)(vehicle_id.lower())

    def expire_tokens(self) -> int:
        with self.lock:
            return self.auth.expire_all()


def _rates(faults: str | Mapping[FaultKind, float] | None) -> dict[FaultKind, float]:
    if faults is None:
        return {}
    if isinstance(faults, str):
        return parse_fault_spec(faults)
    return parse_fault_spec(",".join(f"{FaultKind(k).value}={v}" for k, v in faults.items()))
