"""decide(): every refusal reason, the order of the checks, and the full scope matrix."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bridge.commands.decide import (
    NOT_ASSESSED,
    Decision,
    Policy,
    StepUpCheck,
    StepUpStatus,
    decide,
    requires_stepup,
)
from bridge.commands.parse import ParsedCommand, build_command
from bridge.commands.reasons import Reason
from bridge.model import OPERATIONS, App, Command, Operation, Scope
from tests.commands.fakes import ALL_OPERATIONS, T0

POLICY = Policy(
    max_age_s=30, stepup_scopes=frozenset({Scope.COMMAND_UNLOCK, Scope.COMMAND_REMOTE_START})
)
OK_CODE = StepUpCheck(StepUpStatus.OK, step=1, key="k")
EVERYTHING = App("ha", "HA", frozenset(Scope), created_at=T0)


def cmd(command: str = "lock", action: str = "LOCK", **kw: Any) -> ParsedCommand:
    parsed = build_command("ha", "car", command, action=action, **kw)
    assert isinstance(parsed, ParsedCommand)
    return parsed


def verdict(command: ParsedCommand, **overrides: Any) -> Decision:
    args: dict[str, Any] = {
        "app": EVERYTHING,
        "vehicle_known": True,
        "supported": ALL_OPERATIONS,
        "now": T0,
        "policy": POLICY,
        "seen_id": False,
        "rate_ok": True,
        "budget_ok": True,
        "stepup": OK_CODE,
    }
    args.update(overrides)
    return decide(command, **args)


def test_a_valid_command_is_allowed() -> None:
    """A fresh LOCK from an app with command:lock on a known, capable vehicle is allowed."""
    result = verdict(cmd())
    assert (result.allowed, result.reason, result.operation, result.scope) == (
        True,
        Reason.OK,
        Operation.LOCK,
        Scope.COMMAND_LOCK,
    )


@pytest.mark.parametrize(
    ("command", "overrides", "reason"),
    [
        (cmd(issued_at=(T0 - timedelta(seconds=31)).isoformat()), {}, Reason.TOO_OLD),
        (cmd(issued_at=(T0 + timedelta(seconds=6)).isoformat()), {}, Reason.FROM_FUTURE),
        (cmd(), {"app": None}, Reason.UNKNOWN_APP),
        (cmd(), {"app": replace(EVERYTHING, enabled=False)}, Reason.APP_DISABLED),
        (cmd(), {"vehicle_known": False}, Reason.UNKNOWN_VEHICLE),
        (cmd(id="a1"), {"seen_id": True}, Reason.DUPLICATE_ID),
        (cmd(), {"app": replace(EVERYTHING, scopes=frozenset())}, Reason.SCOPE_MISSING),
        (cmd(), {"supported": frozenset({Operation.UNLOCK})}, Reason.UNSUPPORTED),
        (cmd(), {"rate_ok": False}, Reason.RATE_LIMITED),
        (cmd(), {"budget_ok": False}, Reason.BUDGET_EXHAUSTED),
        (
            cmd(action="UNLOCK"),
            {"stepup": StepUpCheck(StepUpStatus.MISSING)},
            Reason.STEPUP_REQUIRED,
        ),
        (cmd(action="UNLOCK"), {"stepup": NOT_ASSESSED}, Reason.STEPUP_REQUIRED),
        (cmd(action="UNLOCK"), {"stepup": StepUpCheck(StepUpStatus.FAILED)}, Reason.STEPUP_FAILED),
        (
            cmd(action="UNLOCK"),
            {"stepup": StepUpCheck(StepUpStatus.LOCKED_OUT)},
            Reason.STEPUP_LOCKED_OUT,
        ),
        (
            cmd(action="UNLOCK"),
            {"stepup": StepUpCheck(StepUpStatus.NOT_ENROLLED)},
            Reason.STEPUP_NOT_ENROLLED,
        ),
    ],
)
def test_each_refusal_has_its_own_reason(
    command: ParsedCommand, overrides: dict[str, Any], reason: Reason
) -> None:
    """Every way a parsed command can be refused yields its specific reason."""
    result = verdict(command, **overrides)
    assert not result.allowed
    assert result.reason is reason
    assert result.detail


def test_age_limits_are_inclusive_of_small_skew() -> None:
    """Exactly max age old, and a few seconds ahead, are still fresh."""
    assert verdict(cmd(issued_at=(T0 - timedelta(seconds=30)).isoformat())).allowed
    assert verdict(cmd(issued_at=(T0 + timedelta(seconds=5)).isoformat())).allowed


def test_stop_engine_needs_no_stepup_but_start_does() -> None:
    """command:remote_start needs a code for START only; STOP always goes through."""
    assert verdict(cmd("engine", "STOP"), stepup=NOT_ASSESSED).allowed
    started = verdict(cmd("engine", "START"), stepup=NOT_ASSESSED)
    assert (started.allowed, started.reason, started.needs_stepup) == (
        False,
        Reason.STEPUP_REQUIRED,
        True,
    )


def test_scope_is_checked_before_stepup() -> None:
    """An app without command:unlock learns it lacks the scope, never whether its code was right."""
    app = replace(EVERYTHING, scopes=frozenset({Scope.COMMAND_LOCK}))
    result = verdict(cmd(action="UNLOCK"), app=app, stepup=StepUpCheck(StepUpStatus.FAILED))
    assert result.reason is Reason.SCOPE_MISSING


def test_rate_limit_and_budget_come_before_stepup() -> None:
    """A rate-limited or budget-starved command is refused before its code is considered."""
    bad_code = StepUpCheck(StepUpStatus.FAILED)
    assert verdict(cmd(action="UNLOCK"), rate_ok=False, stepup=bad_code).reason is (
        Reason.RATE_LIMITED
    )
    assert verdict(cmd(action="UNLOCK"), budget_ok=False, stepup=bad_code).reason is (
        Reason.BUDGET_EXHAUSTED
    )


def test_stale_commands_are_refused_before_identity() -> None:
    """A too-old command is refused as too_old whoever sent it."""
    old = cmd(issued_at=(T0 - timedelta(minutes=5)).isoformat())
    assert verdict(old, app=None).reason is Reason.TOO_OLD


def test_required_for_config_is_honoured() -> None:
    """required_for is honoured: empty lets UNLOCK through; adding lock makes LOCK need a code."""
    off = Policy(max_age_s=30, stepup_scopes=frozenset())
    assert verdict(cmd(action="UNLOCK"), policy=off, stepup=NOT_ASSESSED).allowed
    strict = Policy(max_age_s=30, stepup_scopes=frozenset({Scope.COMMAND_LOCK}))
    assert verdict(cmd(), policy=strict, stepup=NOT_ASSESSED).reason is Reason.STEPUP_REQUIRED


ALL_SCOPE_SETS = [
    frozenset(c) for n in range(len(Scope) + 1) for c in itertools.combinations(list(Scope), n)
]


@pytest.mark.parametrize(("command", "action"), sorted(OPERATIONS))
def test_scope_matrix_allows_exactly_when_granted(command: Command, action: str) -> None:
    """For every command, action and subset of all scopes: allowed iff its scope is in the set."""
    operation, scope = OPERATIONS[(command, action)]
    parsed = cmd(command.value, action)
    for scopes in ALL_SCOPE_SETS:
        app = replace(EVERYTHING, scopes=scopes)
        result = verdict(parsed, app=app)
        assert result.allowed == (scope in scopes), (command, action, sorted(scopes))
        assert result.reason is (Reason.OK if scope in scopes else Reason.SCOPE_MISSING)
        assert result.needs_stepup == requires_stepup(operation, scope, POLICY.stepup_scopes)
