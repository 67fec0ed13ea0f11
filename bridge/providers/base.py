"""The Provider protocol the rest of the daemon uses, and the call gate that charges the budget."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Protocol

from bridge.errors import ProviderError
from bridge.model import CommandOutcome, Operation, VehicleInfo, VehicleState


class CallKind(enum.StrEnum):
    """What a provider request is for; the budget reserves a share for commands."""

    READ = "read"
    COMMAND = "command"  # the command itself, its status polls and its confirmation read
    TOKEN = "token"  # noqa: S105 - a call kind, not a password


# Persists a call the gate took in memory; run once the request is done (sent or failed).
Commit = Callable[[], None]


class CallGate(Protocol):
    """Charged before every provider request; raises BudgetExhausted to refuse it."""

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> Commit | None:
        """Charge one call before it is made. `record` is the seq of the durable audit record the
        call acts on (a command's request, held until that record is on disk): the record already
        proves the call, so a gate may take it in memory and return `commit`, which the caller
        runs once the request is done, to write it down off the command's path."""
        ...


class FreeGate:
    """A gate that charges nothing: for one-off CLI reads outside the daemon's budget."""

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> Commit | None:
        return None


# Called once the provider has accepted a command, with its command id (for an `accepted` result).
OnAccepted = Callable[[str], Awaitable[None]]

# Told of a 429 (RateLimited) or 403 (Forbidden) that whoever met it turned into an outcome instead
# of raising it on (a command's status poll, the forwarder), with the account it came from: the
# account's guard must hear of it as it hears of a read's, or polling would carry on regardless.
OnRefused = Callable[[str, ProviderError], None]


class Provider(Protocol):
    """One account at one car maker API. Errors raised are from `bridge.errors.ProviderError`."""

    account: str

    async def list_vehicles(self) -> list[VehicleInfo]:
        """The vehicles this account's consent covers."""
        ...

    async def read(self, vehicle_id: str) -> VehicleState:
        """The vehicle's last uploaded state, normalised; unknown fields stay unknown."""
        ...

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        """What this provider can do to this vehicle (read-only providers: nothing)."""
        ...

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        """Send a command and follow it to a final status (succeeded, failed or timed_out)."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""
        ...
