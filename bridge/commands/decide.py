"""Whether a parsed command may go to the car: a pure function of the command and what is known.

Checks run in a fixed order, cheapest and least revealing first, and the first failure is the
reason. Identity and scope come before anything that depends on a secret or spends something:
an app without `command:unlock` learns nothing about step-up codes and cannot lock the owner out
by guessing; rate limits come before step-up so codes cannot be guessed faster than commands
are allowed; step-up is the very last check, so a right code is only consumed by a command that
would otherwise run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from bridge.commands.parse import ParsedCommand
from bridge.commands.reasons import Reason
from bridge.model import App, Operation, Scope

# Stopping the engine only ever makes the car safer; demanding a code for it would make it harder
# to stop a car someone else started. So `command:remote_start` needs step-up for START only.
STEPUP_EXEMPT = frozenset({Operation.STOP_ENGINE})
# Clients' clocks drift by a few seconds even under NTP; more than this is a broken clock or a
# crafted message, and a far-future time would otherwise defeat the maximum age.
DEFAULT_FUTURE_SKEW_S = 5.0


# Why a right code is refused the second time (RFC 6238 §5.2: a code is accepted once).
CODE_REUSED = "code already used; wait for the next"


class StepUpStatus(enum.StrEnum):
    """What checking a command's step-up code found (without consuming anything)."""

    NOT_ASSESSED = "not_assessed"
    OK = "ok"
    MISSING = "missing"
    FAILED = "failed"
    LOCKED_OUT = "locked_out"
    NOT_ENROLLED = "not_enrolled"


@dataclass(frozen=True, slots=True)
class StepUpCheck:
    """The step-up verdict handed to `decide`.

    When OK, `step` is the matched TOTP time-step and `key` names the secret it belongs to (a
    digest, not the secret), so the step can be remembered and the code never accepted again.
    """

    status: StepUpStatus
    step: int | None = None
    key: str | None = None
    detail: str = ""


NOT_ASSESSED = StepUpCheck(StepUpStatus.NOT_ASSESSED)


@dataclass(frozen=True, slots=True)
class Policy:
    """The configured limits `decide` applies."""

    max_age_s: float
    stepup_scopes: frozenset[Scope]
    future_skew_s: float = DEFAULT_FUTURE_SKEW_S


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict. `reason` is `ok` when allowed, else the first check that failed."""

    allowed: bool
    reason: Reason
    operation: Operation | None = None
    scope: Scope | None = None
    needs_stepup: bool = False
    detail: str = ""

    @classmethod
    def refused(cls, reason: Reason, detail: str = "") -> Decision:
        return cls(allowed=False, reason=reason, detail=detail)


_Refusal = tuple[Reason, str] | None


def requires_stepup(operation: Operation, scope: Scope, stepup_scopes: frozenset[Scope]) -> bool:
    """True when this operation needs a second factor under the configured scopes."""
    return scope in stepup_scopes and operation not in STEPUP_EXEMPT


def decide(
    cmd: ParsedCommand,
    *,
    app: App | None,
    vehicle_known: bool,
    supported: frozenset[Operation],
    now: datetime,
    policy: Policy,
    seen_id: bool,
    rate_ok: bool,
    budget_ok: bool,
    stepup: StepUpCheck,
    provider_hold: str | None = None,
) -> Decision:
    """Allow or refuse `cmd`; `now` is when the command was received. `provider_hold` says why
    the car maker must not be called now (a 429's Retry-After not yet passed), or is None."""
    needs = requires_stepup(cmd.operation, cmd.scope, policy.stepup_scopes)
    refusal = (
        _freshness(cmd, now, policy)
        or _identity(app, vehicle_known=vehicle_known, seen_id=seen_id)
        or _permission(cmd, app, supported)
        or _limits(rate_ok=rate_ok, budget_ok=budget_ok, provider_hold=provider_hold)
        or (_second_factor(stepup) if needs else None)
    )
    if refusal is None:
        return Decision(True, Reason.OK, cmd.operation, cmd.scope, needs)
    reason, detail = refusal
    return Decision(False, reason, cmd.operation, cmd.scope, needs, detail)


def _freshness(cmd: ParsedCommand, now: datetime, policy: Policy) -> _Refusal:
    if cmd.issued_at is None:
        return None
    age = (now - cmd.issued_at).total_seconds()
    if age > policy.max_age_s:
        return Reason.TOO_OLD, f"issued {age:.1f} s ago; the limit is {policy.max_age_s:g} s"
    if -age > policy.future_skew_s:
        return Reason.FROM_FUTURE, f"issued_at is {-age:.1f} s ahead of the bridge's clock"
    return None


def _identity(app: App | None, *, vehicle_known: bool, seen_id: bool) -> _Refusal:
    if app is None:
        return Reason.UNKNOWN_APP, "no such app is registered"
    if not app.enabled:
        return Reason.APP_DISABLED, "the app is disabled"
    if not vehicle_known:
        return Reason.UNKNOWN_VEHICLE, "no such vehicle"
    if seen_id:
        return Reason.DUPLICATE_ID, "this id was already executed"
    return None


def _permission(cmd: ParsedCommand, app: App | None, supported: frozenset[Operation]) -> _Refusal:
    if app is None or not app.has(cmd.scope):
        return Reason.SCOPE_MISSING, f"the app was not granted {cmd.scope}"
    if cmd.operation not in supported:
        return Reason.UNSUPPORTED, f"this vehicle's provider cannot {cmd.operation}"
    return None


def still_entitled(app: App | None, scope: Scope) -> _Refusal:
    """Checked again just before a command that waited in its vehicle's queue goes to the car:
    the owner may have revoked or disabled its app, or withdrawn the scope, meanwhile."""
    if app is None:
        return Reason.UNKNOWN_APP, "the app was revoked while its command waited"
    if not app.enabled:
        return Reason.APP_DISABLED, "the app was disabled while its command waited"
    if scope not in app.scopes:
        return Reason.SCOPE_MISSING, f"{scope} was withdrawn while the command waited"
    return None


def _limits(*, rate_ok: bool, budget_ok: bool, provider_hold: str | None = None) -> _Refusal:
    if not rate_ok:
        return Reason.RATE_LIMITED, "too many commands this minute"
    if not budget_ok:
        return Reason.BUDGET_EXHAUSTED, "the account's API budget is spent"
    if provider_hold is not None:
        return Reason.PROVIDER_RATE_LIMITED, provider_hold
    return None


_STEPUP_REFUSALS = {
    StepUpStatus.LOCKED_OUT: Reason.STEPUP_LOCKED_OUT,
    StepUpStatus.NOT_ENROLLED: Reason.STEPUP_NOT_ENROLLED,
    StepUpStatus.MISSING: Reason.STEPUP_REQUIRED,
    # Fail closed: a sensitive command nobody checked a code for is refused, never waved through.
    StepUpStatus.NOT_ASSESSED: Reason.STEPUP_REQUIRED,
    StepUpStatus.FAILED: Reason.STEPUP_FAILED,
}


# A refusal for one of these means every other check passed (the second factor is last).
STEPUP_REASONS = frozenset(_STEPUP_REFUSALS.values())


def _second_factor(check: StepUpCheck) -> _Refusal:
    if check.status is StepUpStatus.OK:
        return None
    reason = _STEPUP_REFUSALS[check.status]
    return reason, check.detail or "a step-up code is required"
