"""How scopes are presented to the owner: groups, plain-language labels, and warnings."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.model import SENSITIVE_SCOPES, Scope


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    scope: Scope
    label: str
    note: str = ""

    @property
    def sensitive(self) -> bool:
        return self.scope in SENSITIVE_SCOPES

    @property
    def opt_in(self) -> bool:
        """Never ticked for the owner: location must be chosen deliberately."""
        return self.scope is Scope.READ_LOCATION


SCOPE_INFO: dict[str, ScopeInfo] = {
    info.scope.value: info
    for info in (
        ScopeInfo(Scope.READ_STATUS, "Status", "locks, fuel or charge, range, odometer, doors"),
        ScopeInfo(Scope.READ_HEALTH, "Health", "tyre pressures, oil life, 12 V battery, alerts"),
        ScopeInfo(Scope.READ_LOCATION, "Location", "position, heading and speed — opt-in"),
        ScopeInfo(Scope.COMMAND_LOCK, "Lock"),
        ScopeInfo(Scope.COMMAND_UNLOCK, "Unlock", "needs a step-up code by default"),
        ScopeInfo(
            Scope.COMMAND_REMOTE_START,
            "Remote start and stop",
            "starting needs a step-up code by default",
        ),
        ScopeInfo(Scope.COMMAND_CHARGE, "Start and stop charging"),
        ScopeInfo(Scope.COMMAND_HORN_LIGHTS, "Horn and lights"),
        ScopeInfo(
            Scope.COMMAND_REFRESH,
            "Ask the car for fresh status",
            "costs 12 V battery and API budget",
        ),
    )
}

SCOPE_GROUPS: tuple[tuple[str, tuple[ScopeInfo, ...]], ...] = (
    ("Read", tuple(i for i in SCOPE_INFO.values() if i.scope.value.startswith("read:"))),
    ("Commands", tuple(i for i in SCOPE_INFO.values() if i.scope.value.startswith("command:"))),
)


def parse_scopes(values: list[str]) -> frozenset[Scope]:
    """Scopes from form checkboxes; unknown values are ignored (the form only offers known ones)."""
    return frozenset(SCOPE_INFO[v].scope for v in values if v in SCOPE_INFO)
