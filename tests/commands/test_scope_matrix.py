"""The scope matrix through the whole pipeline: every command, action and set of scopes."""

from __future__ import annotations

import itertools
from pathlib import Path

from bridge.commands.reasons import Reason
from bridge.config import CommandsConfig, StepUpConfig
from bridge.model import OPERATIONS, App, CommandStatus, Scope
from tests.commands.fakes import T0, DictApps, make_rig

COMMAND_SCOPES = sorted(s for s in Scope if s.value.startswith("command:"))
SCOPE_SETS = [
    frozenset(c)
    for n in range(len(COMMAND_SCOPES) + 1)
    for c in itertools.combinations(COMMAND_SCOPES, n)
]


async def test_every_command_runs_exactly_when_its_scope_is_granted(tmp_path: Path) -> None:
    """64 scope sets x 8 operations: a command reaches the car iff its scope is granted."""
    apps = [
        App(f"app{n}", f"App {n}", scopes | {Scope.READ_STATUS, Scope.READ_LOCATION}, T0)
        for n, scopes in enumerate(SCOPE_SETS)
    ]
    rig = await make_rig(
        tmp_path / "state",
        lookup=DictApps(*apps),
        commands=CommandsConfig(rate_limit_per_minute=600),  # 256 allowed commands fit
        # Step-up is its own matrix (test_stepup, test_pipeline); here only scopes decide.
        stepup_config=StepUpConfig(required_for=frozenset()),
    )
    sent = 0
    for app in apps:
        for (command, action), (operation, scope) in OPERATIONS.items():
            result = await rig.send(app.id, command.value, action)
            granted = scope in app.scopes
            expected = (
                (CommandStatus.SUCCEEDED, "ok")
                if granted
                else (CommandStatus.REJECTED, Reason.SCOPE_MISSING.value)
            )
            assert (result.status, result.reason) == expected, (app.scopes, command, action)
            if granted:
                sent += 1
                assert rig.provider.executed[-1][1] is operation
    assert len(rig.provider.executed) == sent == 8 * len(SCOPE_SETS) // 2
