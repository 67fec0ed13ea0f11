"""Normalised vehicle state, scopes and commands: plain typed data shared by every part."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Scope(enum.StrEnum):
    """What an app may read or do; commands are split so unlock is never implied by lock."""

    READ_STATUS = "read:status"
    READ_HEALTH = "read:health"
    READ_LOCATION = "read:location"
    COMMAND_LOCK = "command:lock"
    COMMAND_UNLOCK = "command:unlock"
    COMMAND_REMOTE_START = "command:remote_start"
    COMMAND_CHARGE = "command:charge"
    COMMAND_HORN_LIGHTS = "command:horn_lights"
    COMMAND_REFRESH = "command:refresh"


READ_SCOPES = frozenset({Scope.READ_STATUS, Scope.READ_HEALTH, Scope.READ_LOCATION})
# Scopes whose grant raises an alert: they open the car or reveal where it is.
SENSITIVE_SCOPES = frozenset(
    {Scope.READ_LOCATION, Scope.COMMAND_UNLOCK, Scope.COMMAND_REMOTE_START}
)


class Command(enum.StrEnum):
    """The `<command>` segment of a command topic."""

    LOCK = "lock"
    ENGINE = "engine"
    CHARGE = "charge"
    HORN_LIGHTS = "horn_lights"
    REFRESH = "refresh"


class Operation(enum.StrEnum):
    """One thing a provider is asked to do to the car."""

    LOCK = "lock"
    UNLOCK = "unlock"
    START_ENGINE = "start_engine"
    STOP_ENGINE = "stop_engine"
    START_CHARGE = "start_charge"
    STOP_CHARGE = "stop_charge"
    HORN_LIGHTS = "horn_lights"
    REFRESH = "refresh"


# (command, action) -> (operation, scope that must be granted). The single source of truth.
OPERATIONS: Mapping[tuple[Command, str], tuple[Operation, Scope]] = {
    (Command.LOCK, "LOCK"): (Operation.LOCK, Scope.COMMAND_LOCK),
    (Command.LOCK, "UNLOCK"): (Operation.UNLOCK, Scope.COMMAND_UNLOCK),
    (Command.ENGINE, "START"): (Operation.START_ENGINE, Scope.COMMAND_REMOTE_START),
    (Command.ENGINE, "STOP"): (Operation.STOP_ENGINE, Scope.COMMAND_REMOTE_START),
    (Command.CHARGE, "START"): (Operation.START_CHARGE, Scope.COMMAND_CHARGE),
    (Command.CHARGE, "STOP"): (Operation.STOP_CHARGE, Scope.COMMAND_CHARGE),
    (Command.HORN_LIGHTS, "PRESS"): (Operation.HORN_LIGHTS, Scope.COMMAND_HORN_LIGHTS),
    (Command.REFRESH, "PRESS"): (Operation.REFRESH, Scope.COMMAND_REFRESH),
}


def actions_for(command: Command) -> frozenset[str]:
    """The actions a command topic accepts, e.g. LOCK/UNLOCK for `lock`."""
    return frozenset(action for (cmd, action) in OPERATIONS if cmd is command)


class CommandStatus(enum.StrEnum):
    """The `status` of a command result."""

    REJECTED = "rejected"
    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class LockState(enum.StrEnum):
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    UNKNOWN = "unknown"


class Ignition(enum.StrEnum):
    OFF = "off"
    ACCESSORY = "accessory"
    RUN = "run"
    START = "start"
    UNKNOWN = "unknown"


class EngineState(enum.StrEnum):
    """Remote-start state of the engine."""

    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


class ChargingState(enum.StrEnum):
    NOT_PLUGGED = "not_plugged"
    PLUGGED = "plugged"
    CHARGING = "charging"
    COMPLETE = "complete"
    FAULT = "fault"
    UNKNOWN = "unknown"


class OpenState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class Powertrain(enum.StrEnum):
    EV = "ev"
    ICE = "ice"
    HYBRID = "hybrid"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Status:
    """What `read:status` reveals. None means the API did not send it (unknown)."""

    lock: LockState = LockState.UNKNOWN
    ignition: Ignition = Ignition.UNKNOWN
    engine: EngineState = EngineState.UNKNOWN
    fuel_level_pct: float | None = None
    battery_level_pct: float | None = None
    range_km: float | None = None
    odometer_km: float | None = None
    charging: ChargingState = ChargingState.UNKNOWN
    plugged_in: bool | None = None
    time_to_full_min: float | None = None
    doors: Mapping[str, OpenState] = field(default_factory=dict)
    windows: Mapping[str, OpenState] = field(default_factory=dict)
    hood: OpenState = OpenState.UNKNOWN
    alarm: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """What `read:health` reveals."""

    tyre_pressures_kpa: Mapping[str, float] = field(default_factory=dict)
    tyre_pressure_warning: bool | None = None
    oil_life_pct: float | None = None
    battery_12v_pct: float | None = None
    battery_12v_voltage: float | None = None
    alerts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Location:
    """What `read:location` reveals: opt-in, never published unless an app holds the scope."""

    latitude: float
    longitude: float
    altitude_m: float | None = None
    heading_deg: float | None = None
    speed_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class VehicleState:
    """One read of a vehicle, normalised. `updated_at` is the car's last upload, not our read."""

    vehicle_id: str
    updated_at: datetime | None
    status: Status = field(default_factory=Status)
    health: Health = field(default_factory=Health)
    location: Location | None = None
    # What the read says the vehicle is, when its answer says (FordConnect v1's vehicle document
    # does): how a car bridged without the vehicle list learns its details. Never published.
    info: VehicleInfo | None = None


@dataclass(frozen=True, slots=True)
class VehicleInfo:
    """A vehicle as the provider lists it."""

    vehicle_id: str
    make: str | None = None
    model: str | None = None
    year: int | None = None
    nickname: str | None = None
    powertrain: Powertrain = Powertrain.UNKNOWN


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The final state of a command the provider accepted."""

    status: CommandStatus
    reason: str = ""
    provider_command_id: str | None = None
    # Why the verdict is unknown, as a result's reason word (`budget_exhausted`), when it is not
    # simply that the car did not answer in time.
    cause: str | None = None


def to_document(obj: Any) -> dict[str, Any]:
    """Turn one of the dataclasses above into a JSON-ready dict (enums as values, times as ISO)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class App:
    """A registered consumer (Home Assistant, Node-RED, a script). `id` is its broker username."""

    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    enabled: bool = True
    home_assistant: bool = False
    rate_limit_per_minute: int | None = None  # None: the configured default
    allow_cidrs: tuple[str, ...] = ()  # empty: no restriction beyond the web/API allowlist
    last_seen: datetime | None = None
    last_command: str | None = None

    def has(self, scope: Scope) -> bool:
        return self.enabled and scope in self.scopes
