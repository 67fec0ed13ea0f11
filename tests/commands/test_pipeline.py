"""CommandPipeline with injected fakes: results, audit records, refusals, ordering, errors, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.audit.chain import read_records
from bridge.audit.log import audit_directory
from bridge.audit.verify import verify
from bridge.commands.apps import OWNER_ID
from bridge.commands.decide import StepUpCheck
from bridge.commands.noise import RefusalRecords
from bridge.commands.parse import CLEARED_RETAINED
from bridge.commands.pipeline import InboundCommand
from bridge.commands.reasons import Reason
from bridge.commands.recover import unfinished
from bridge.commands.stepup import StepUp, code_at, enroll, secret_path
from bridge.config import CommandsConfig, StepUpConfig
from bridge.errors import (
    AuthUnavailable,
    BudgetExhausted,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    ReauthRequired,
    Unsupported,
)
from bridge.events import AlertKind
from bridge.files import write_private_atomic
from bridge.model import App, CommandOutcome, CommandStatus, Operation, Scope
from bridge.store import Store
from tests.commands.fakes import T0, DictApps, FakeProvider, Rig, make_rig
from tests.support.daemon import await_until


@pytest.fixture
async def rig(tmp_path: Path) -> Rig:
    return await make_rig(tmp_path / "state")


def statuses(rig: Rig) -> list[tuple[str, str]]:
    return [(r["status"], r["reason"]) for r in rig.sink.results()]


async def test_an_allowed_command_runs_and_reports_each_step(rig: Rig) -> None:
    """LOCK: decision audited, provider called, results accepted then succeeded, confirm read."""
    result = await rig.send("ha", "lock", "LOCK")
    await asyncio.sleep(0)
    assert result.status is CommandStatus.SUCCEEDED
    assert rig.provider.executed == [("car-1", Operation.LOCK)]
    assert statuses(rig) == [("accepted", "ok"), ("succeeded", "ok")]
    assert [m.topic for m in rig.sink.messages] == ["ol/app/ha/car/result"] * 2
    assert not any(m.retain for m in rig.sink.messages)
    decision, outcome = rig.records()
    assert (decision["kind"], decision["decision"], decision["scope"]) == (
        "command.decision",
        "allowed",
        "command:lock",
    )
    assert (outcome["kind"], outcome["status"], outcome["id"]) == (
        "command.outcome",
        "succeeded",
        decision["id"],
    )
    assert rig.confirmed == ["car"]


async def test_result_document_has_the_contract_keys(rig: Rig) -> None:
    """The result carries id (echoed, or generated), command, action, status, reason, ts."""
    await rig.send("ha", "lock", '{"action":"LOCK","id":"n-1"}')
    await rig.send("ha", "lock", "LOCK")
    first, _, third, _ = rig.sink.results()
    assert set(first) == {"id", "command", "action", "status", "reason", "ts"}
    assert (first["id"], first["command"], first["action"]) == ("n-1", "lock", "LOCK")
    assert len(third["id"]) == 32 and third["id"] != "n-1"


# (app, command topic, payload, retain, rig options, expected reason)
REFUSALS: list[tuple[str, str, str | bytes, bool, dict[str, Any], Reason]] = [
    ("ha", "lock", "UNLOCK", True, {}, Reason.RETAINED),
    ("ha", "lock", "LOCK" + " " * 2000, False, {}, Reason.PAYLOAD_TOO_LARGE),
    ("ha", "lock", b"\xff", False, {}, Reason.MALFORMED),
    ("ha", "sunroof", "OPEN", False, {}, Reason.UNKNOWN_COMMAND),
    ("ha", "lock", "OPEN", False, {}, Reason.UNKNOWN_ACTION),
    (
        "ha",
        "lock",
        '{"action":"LOCK","issued_at":"2025-03-01T11:59:00Z"}',
        False,
        {},
        Reason.TOO_OLD,
    ),
    (
        "ha",
        "lock",
        '{"action":"LOCK","issued_at":"2025-03-01T12:01:00Z"}',
        False,
        {},
        Reason.FROM_FUTURE,
    ),
    ("stranger", "lock", "LOCK", False, {}, Reason.UNKNOWN_APP),
    (
        "off",
        "lock",
        "LOCK",
        False,
        {"lookup": DictApps(App("off", "Off", frozenset(Scope), T0, enabled=False))},
        Reason.APP_DISABLED,
    ),
    ("reader", "lock", "LOCK", False, {}, Reason.SCOPE_MISSING),
    ("ha", "lock", "LOCK", False, {"supported": {Operation.UNLOCK}}, Reason.UNSUPPORTED),
    ("ha", "lock", "LOCK", False, {"budget_ok": lambda vehicle: False}, Reason.BUDGET_EXHAUSTED),
    ("ha", "lock", "UNLOCK", False, {}, Reason.STEPUP_NOT_ENROLLED),
]


@pytest.mark.parametrize(
    ("app", "command", "payload", "retain", "options", "reason"),
    REFUSALS,
    ids=[r[-1].value for r in REFUSALS],
)
async def test_each_refusal_reason_end_to_end_in_the_pipeline(
    tmp_path: Path,
    app: str,
    command: str,
    payload: str | bytes,
    retain: bool,
    options: dict[str, Any],
    reason: Reason,
) -> None:
    """Each refusal: rejected result with that reason, an audit record and alert, nothing sent."""
    rig = await make_rig(tmp_path / "state", **options)
    result = await rig.send(app, command, payload, retain=retain)
    assert (result.status, result.reason) == (CommandStatus.REJECTED, reason)
    assert rig.provider.executed == []
    assert statuses(rig) == [("rejected", reason.value)]
    (record,) = rig.records()
    assert (record["decision"], record["reason"]) == ("refused", reason.value)
    assert [a.kind for a in rig.alerts.alerts][-1] is AlertKind.COMMAND_REFUSED


async def test_unknown_vehicle_is_refused(rig: Rig) -> None:
    """A command for a vehicle slug that is not configured: unknown_vehicle."""
    result = await rig.send("ha", "lock", "LOCK", vehicle="boat")
    assert result.reason == Reason.UNKNOWN_VEHICLE
    assert rig.sink.messages[0].topic == "ol/app/ha/boat/result"


async def test_stepup_required_failed_and_locked_out(tmp_path: Path) -> None:
    """UNLOCK without a code, with wrong codes, then locked out even with the right one."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(state, stepup_config=StepUpConfig(max_failures=2))
    assert (await rig.send("ha", "lock", "UNLOCK")).reason == Reason.STEPUP_REQUIRED
    wrong = '{"action":"UNLOCK","code":"abcdef"}'
    assert (await rig.send("ha", "lock", wrong)).reason == Reason.STEPUP_FAILED
    assert (await rig.send("ha", "lock", wrong)).reason == Reason.STEPUP_FAILED
    right = json.dumps({"action": "UNLOCK", "code": code_at(secret, rig.clock())})
    assert (await rig.send("ha", "lock", right)).reason == Reason.STEPUP_LOCKED_OUT
    assert rig.provider.executed == []
    kinds = [a.kind for a in rig.alerts.alerts]
    assert AlertKind.STEPUP_FAILED in kinds and AlertKind.STEPUP_LOCKOUT in kinds
    stepups = [r.get("stepup") for r in rig.records()]
    assert stepups == ["missing", "failed", "failed", "locked_out"]


FULLWIDTH_DIGITS = "\uff11\uff12\uff13\uff14\uff15\uff16"


@pytest.mark.parametrize("code", ["12345é", FULLWIDTH_DIGITS, "123 45\u00a0", "\udcff"])
async def test_a_code_that_is_not_ascii_is_a_wrong_code(tmp_path: Path, code: str) -> None:
    """Not an internal error: it is refused, counted against the app and on the record."""
    state = tmp_path / "state"
    enroll(state)
    rig = await make_rig(state)
    payload = json.dumps({"action": "UNLOCK", "code": code})
    assert (await rig.send("ha", "lock", payload)).reason == Reason.STEPUP_FAILED
    assert rig.records("command.decision")[0]["stepup"] == "failed"
    assert AlertKind.STEPUP_FAILED in [a.kind for a in rig.alerts.alerts]


async def test_right_code_unlocks_once_and_is_never_stored(tmp_path: Path) -> None:
    """UNLOCK with the right code runs; the same code again fails; the code is nowhere on disk."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(state)
    code = code_at(secret, rig.clock())
    payload = json.dumps({"action": "UNLOCK", "code": code})
    assert (await rig.send("ha", "lock", payload)).status is CommandStatus.SUCCEEDED
    assert (await rig.send("ha", "lock", payload)).reason == Reason.STEPUP_FAILED
    assert rig.provider.executed == [("car-1", Operation.UNLOCK)]
    assert rig.records()[0]["stepup"] == "ok"
    audit_bytes = (state / "audit" / "audit.jsonl").read_bytes()
    published = b"".join(m.payload.encode() for m in rig.sink.messages)  # type: ignore[union-attr]
    alerts = json.dumps([a.as_document() for a in rig.alerts.alerts]).encode()
    for blob in (audit_bytes, published, alerts):
        assert code.encode() not in blob


async def test_a_code_another_process_took_meanwhile_refuses_the_command(
    tmp_path: Path,
) -> None:
    """`ownerlink command` took the same code between this pipeline's check and its taking
    it: the command is refused as a reused code, audited so, and never reaches the car."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(state)
    other = StepUp(
        store=Store.open(state), state_dir=state, config=StepUpConfig(), alerts=rig.alerts
    )
    assess = rig.stepup.assess

    def assess_then_lose_the_race(app_id: str, code: str | None, now: datetime) -> StepUpCheck:
        check = assess(app_id, code, now)
        taken = other.assess("owner", code, now)
        assert other.settle("owner", taken, allowed=True, now=now, vehicle="car-1")
        return check

    rig.stepup.assess = assess_then_lose_the_race  # type: ignore[method-assign]
    payload = json.dumps({"action": "UNLOCK", "code": code_at(secret, rig.clock())})
    result = await rig.send("ha", "lock", payload)
    assert (result.status, result.reason) == (CommandStatus.REJECTED, Reason.STEPUP_FAILED)
    assert "already used" in result.detail
    assert rig.provider.executed == []
    decision = rig.records("command.decision")[0]
    assert (decision["decision"], decision["stepup"]) == ("refused", "failed")


async def test_stop_engine_needs_no_code(tmp_path: Path) -> None:
    """engine STOP runs without a code even when START would need one."""
    rig = await make_rig(tmp_path / "state")
    assert (await rig.send("ha", "engine", "STOP")).status is CommandStatus.SUCCEEDED
    assert (await rig.send("ha", "engine", "START")).reason == Reason.STEPUP_NOT_ENROLLED


async def test_a_retained_unlock_is_never_executed_even_with_a_right_code(tmp_path: Path) -> None:
    """A retained UNLOCK carrying a valid code is refused and the code is not spent."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(state)
    payload = json.dumps({"action": "UNLOCK", "code": code_at(secret, rig.clock())})
    assert (await rig.send("ha", "lock", payload, retain=True)).reason == Reason.RETAINED
    assert rig.provider.executed == []
    assert (await rig.send("ha", "lock", payload)).status is CommandStatus.SUCCEEDED


async def test_clearing_a_retained_command_is_recorded_but_raises_no_alert(rig: Rig) -> None:
    """`mosquitto_pub -r -n` on a command topic (the documented way to delete a retained command)
    gets its result and decision record like any message, but is housekeeping: no alert. A
    retained command with content still alerts."""
    result = await rig.send("ha", "lock", b"", retain=True)
    assert (result.reason, result.detail) == (Reason.RETAINED, CLEARED_RETAINED)
    assert rig.records("command.decision")[0]["reason"] == "retained"
    assert rig.alerts.alerts == []
    await rig.send("ha", "lock", "LOCK", retain=True)
    assert [a.kind for a in rig.alerts.alerts] == [AlertKind.COMMAND_REFUSED]
    assert rig.provider.executed == []


async def test_a_command_older_than_max_age_is_not_executed(rig: Rig) -> None:
    """issued_at older than commands.max_age_s: refused too_old, never sent."""
    issued = (rig.clock() - timedelta(seconds=31)).isoformat()
    result = await rig.send("ha", "lock", json.dumps({"action": "LOCK", "issued_at": issued}))
    assert result.reason == Reason.TOO_OLD
    assert rig.provider.executed == []


async def test_the_same_id_executes_once(rig: Rig) -> None:
    """A repeated id is refused as duplicate_id; ids are per app."""
    payload = '{"action":"LOCK","id":"once"}'
    assert (await rig.send("ha", "lock", payload)).status is CommandStatus.SUCCEEDED
    assert (await rig.send("ha", "lock", payload)).reason == Reason.DUPLICATE_ID
    assert (await rig.send("locker", "lock", payload)).status is CommandStatus.SUCCEEDED
    assert len(rig.provider.executed) == 2


async def test_the_same_id_executes_once_across_a_restart(tmp_path: Path) -> None:
    """A new pipeline on the same state dir still refuses an id executed before the restart."""
    state = tmp_path / "state"
    first = await make_rig(state)
    payload = '{"action":"LOCK","id":"persist-me"}'
    assert (await first.send("ha", "lock", payload)).status is CommandStatus.SUCCEEDED
    await first.pipeline.stop()
    first.audit.close()
    second = await make_rig(state)
    assert (await second.send("ha", "lock", payload)).reason == Reason.DUPLICATE_ID
    assert second.provider.executed == []


async def test_a_refused_id_may_be_sent_again(tmp_path: Path) -> None:
    """An id whose command was refused (no code) is not burnt: the retry with a code runs."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(state)
    assert (await rig.send("ha", "lock", '{"action":"UNLOCK","id":"u1"}')).reason == (
        Reason.STEPUP_REQUIRED
    )
    retry = json.dumps({"action": "UNLOCK", "id": "u1", "code": code_at(secret, rig.clock())})
    assert (await rig.send("ha", "lock", retry)).status is CommandStatus.SUCCEEDED


async def test_rate_limits_per_app_and_per_vehicle(tmp_path: Path) -> None:
    """Past the per-minute limit an app is refused; the vehicle's limit binds across apps."""
    rig = await make_rig(tmp_path / "state", commands=CommandsConfig(rate_limit_per_minute=2))
    assert (await rig.send("ha", "lock", "LOCK")).status is CommandStatus.SUCCEEDED
    assert (await rig.send("ha", "lock", "LOCK")).status is CommandStatus.SUCCEEDED
    assert (await rig.send("ha", "lock", "LOCK")).reason == Reason.RATE_LIMITED
    assert (await rig.send("locker", "lock", "LOCK")).reason == Reason.RATE_LIMITED
    rig.clock.advance(61)
    assert (await rig.send("locker", "lock", "LOCK")).status is CommandStatus.SUCCEEDED


async def test_a_code_is_not_judged_when_an_earlier_check_refuses(tmp_path: Path) -> None:
    """Past the rate limit (or out of budget) the code is never looked at: a wrong one is not
    counted towards a lockout, and neither the record nor an alert tells a right one from a
    wrong one, so a rate-limited app cannot test codes at all."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(
        state,
        commands=CommandsConfig(rate_limit_per_minute=1),
        stepup_config=StepUpConfig(max_failures=2),
    )
    assert (await rig.send("ha", "lock", "LOCK")).status is CommandStatus.SUCCEEDED
    right = json.dumps({"action": "UNLOCK", "code": code_at(secret, rig.clock())})
    for payload in ['{"action":"UNLOCK","code":"000000"}'] * 3 + [right]:
        assert (await rig.send("ha", "lock", payload)).reason == Reason.RATE_LIMITED
    assert [r.get("stepup") for r in rig.records("command.decision")[1:]] == [None] * 4
    assert not [a for a in rig.alerts.alerts if a.kind.value.startswith("stepup")]
    rig.clock.advance(61)
    # Three wrong codes against a limit of two, yet no lockout: none of them was counted.
    right = json.dumps({"action": "UNLOCK", "code": code_at(secret, rig.clock())})
    assert (await rig.send("ha", "lock", right)).status is CommandStatus.SUCCEEDED


async def test_junk_does_not_use_up_the_rate_limit(tmp_path: Path) -> None:
    """Refusals before the rate check (no scope, malformed) do not spend an app's allowance."""
    rig = await make_rig(tmp_path / "state", commands=CommandsConfig(rate_limit_per_minute=1))
    for _ in range(5):
        await rig.send("ha", "lock", b"\xff")
    assert (await rig.send("ha", "lock", "LOCK")).status is CommandStatus.SUCCEEDED


async def test_an_app_rate_limit_override_applies(tmp_path: Path) -> None:
    """An app's own rate_limit_per_minute replaces the default for that app."""
    app = App("slow", "Slow", frozenset(Scope), T0, rate_limit_per_minute=1)
    rig = await make_rig(tmp_path / "state", lookup=DictApps(app))
    assert (await rig.send("slow", "lock", "LOCK")).status is CommandStatus.SUCCEEDED
    assert (await rig.send("slow", "lock", "LOCK")).reason == Reason.RATE_LIMITED


async def test_commands_for_one_vehicle_run_one_at_a_time_in_order(tmp_path: Path) -> None:
    """A second command waits until the first has finished; both run, in arrival order."""
    gate = asyncio.Event()
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(gate=gate))
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    second = rig.pipeline.submit(rig.inbound("ha", "horn_lights", "PRESS"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert rig.provider.executed == [("car-1", Operation.LOCK)]
    gate.set()
    await asyncio.gather(first, second)
    assert [op for _, op in rig.provider.executed] == [Operation.LOCK, Operation.HORN_LIGHTS]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda apps: apps.pop("garage"), Reason.UNKNOWN_APP),
        (
            lambda apps: apps.update(garage=dataclasses.replace(apps["garage"], enabled=False)),
            Reason.APP_DISABLED,
        ),
        (
            lambda apps: apps.update(
                garage=dataclasses.replace(apps["garage"], scopes=frozenset({Scope.COMMAND_LOCK}))
            ),
            Reason.SCOPE_MISSING,
        ),
    ],
    ids=["revoked", "disabled", "scope-withdrawn"],
)
async def test_a_command_waiting_behind_another_is_not_sent_once_its_app_lost_the_right(
    tmp_path: Path, change: Any, reason: Reason
) -> None:
    """Queued behind a slow command, it is checked again when its turn comes: revoked,
    disabled or without the scope by then, it ends rejected, audited, and never reaches the car."""
    gate = asyncio.Event()
    garage = App("garage", "Garage", frozenset({Scope.COMMAND_LOCK, Scope.COMMAND_HORN_LIGHTS}), T0)
    apps = DictApps(App("ha", "HA", frozenset(Scope), T0), garage)
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(gate=gate), lookup=apps)
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    second = rig.pipeline.submit(rig.inbound("garage", "horn_lights", "PRESS"))
    for _ in range(5):
        await asyncio.sleep(0)
    change(apps.apps)
    gate.set()
    done = await second
    await first
    assert [op for _, op in rig.provider.executed] == [Operation.LOCK]
    assert (done.status, done.reason) == (CommandStatus.REJECTED, reason)
    outcome = [r for r in rig.records() if r["kind"] == "command.outcome"][-1]
    assert (outcome["app"], outcome["status"], outcome["reason"]) == ("garage", "rejected", reason)


async def test_no_command_goes_to_the_car_maker_before_its_retry_after(tmp_path: Path) -> None:
    """While the account's last 429 asks for no calls, a new command is refused on the record
    (its id stays free for a retry) and one queued behind the throttled command is not sent."""
    gate = asyncio.Event()
    hold: list[str] = []
    again = '{"action": "LOCK", "id": "again"}'
    rig = await make_rig(
        tmp_path / "state",
        provider=FakeProvider(gate=gate),
        provider_hold=lambda _vehicle: hold[0] if hold else None,
    )
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    queued = rig.pipeline.submit(rig.inbound("ha", "horn_lights", "PRESS"))
    for _ in range(5):
        await asyncio.sleep(0)
    hold.append("no calls before 12:00 (Retry-After)")  # the first one's answer was a 429
    gate.set()
    await first
    done = await queued
    assert (done.status, done.reason) == (CommandStatus.REJECTED, Reason.PROVIDER_RATE_LIMITED)
    fresh = await rig.pipeline.submit(rig.inbound("ha", "lock", again))
    assert (fresh.status, fresh.reason) == (CommandStatus.REJECTED, Reason.PROVIDER_RATE_LIMITED)
    assert fresh.detail == "no calls before 12:00 (Retry-After)"
    assert [op for _, op in rig.provider.executed] == [Operation.LOCK]
    decision = [r for r in rig.records() if r["kind"] == "command.decision"][-1]
    assert (decision["id"], decision["decision"]) == ("again", "refused")

    hold.clear()  # Retry-After passed: the same id is taken
    later = await rig.pipeline.submit(rig.inbound("ha", "lock", again))
    assert later.status is CommandStatus.SUCCEEDED


async def test_a_waiting_command_whose_app_still_holds_the_scope_is_sent(tmp_path: Path) -> None:
    """The re-check lets through what is still allowed: both commands reach the car in order."""
    gate = asyncio.Event()
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(gate=gate))
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    second = rig.pipeline.submit(rig.inbound("ha", "horn_lights", "PRESS"))
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    assert (await second).status is CommandStatus.SUCCEEDED
    await first
    assert [op for _, op in rig.provider.executed] == [Operation.LOCK, Operation.HORN_LIGHTS]


@pytest.mark.parametrize(
    ("error", "accept", "status", "reason"),
    [
        (Unsupported("406"), False, CommandStatus.REJECTED, Reason.UNSUPPORTED),
        (
            BudgetExhausted("spent", retry_at=0),
            False,
            CommandStatus.REJECTED,
            Reason.BUDGET_EXHAUSTED,
        ),
        (Forbidden("remote start allowance used"), False, CommandStatus.FAILED, Reason.FORBIDDEN),
        (ReauthRequired("login"), False, CommandStatus.FAILED, Reason.REAUTH_REQUIRED),
        (
            RateLimited("429", retry_after=5),
            False,
            CommandStatus.FAILED,
            Reason.PROVIDER_RATE_LIMITED,
        ),
        (NotFound("404"), False, CommandStatus.FAILED, Reason.NOT_FOUND),
        (ProviderUnavailable("502"), False, CommandStatus.TIMED_OUT, Reason.PROVIDER_UNAVAILABLE),
        # No connection, or no token to send with: known not to have run.
        (ProviderUnreachable("refused"), False, CommandStatus.FAILED, Reason.PROVIDER_UNAVAILABLE),
        (AuthUnavailable("token 502"), False, CommandStatus.FAILED, Reason.PROVIDER_UNAVAILABLE),
        (
            ProviderUnreachable("refused on a status poll"),
            True,
            CommandStatus.TIMED_OUT,
            Reason.PROVIDER_UNAVAILABLE,
        ),
        (
            ProviderUnavailable("poll failed"),
            True,
            CommandStatus.TIMED_OUT,
            Reason.PROVIDER_UNAVAILABLE,
        ),
        (Forbidden("late"), True, CommandStatus.TIMED_OUT, Reason.FORBIDDEN),
        (RuntimeError("bug"), False, CommandStatus.FAILED, Reason.INTERNAL_ERROR),
    ],
)
async def test_provider_errors_map_to_outcomes(
    tmp_path: Path, error: Exception, accept: bool, status: CommandStatus, reason: Reason
) -> None:
    """Provider errors become the right final status; once accepted, nothing is 'failed'."""
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(error=error, accept=accept))
    result = await rig.send("ha", "lock", "LOCK")
    assert (result.status, result.reason) == (status, reason)
    assert rig.records()[-1]["status"] == status.value
    assert len(rig.provider.executed) == 1  # never retried


@pytest.mark.parametrize(
    ("error", "handed_on"),
    [
        (RateLimited("429", retry_after=300), True),
        (Forbidden("remote start allowance used"), False),
        (ProviderUnavailable("502"), False),
    ],
)
async def test_a_429_on_a_commands_request_is_handed_on_for_the_accounts_guard(
    tmp_path: Path, error: Exception, handed_on: bool
) -> None:
    """A 429 to a command's request ends at the forwarder, which hands it on with the account
    (polling must wait out its Retry-After); a 403 there may be the remote-start allowance, and
    other errors are no refusal, so neither is handed on."""
    refused: list[tuple[str, Exception]] = []
    rig = await make_rig(
        tmp_path / "state",
        provider=FakeProvider(error=error, accept=False),
        on_refused=lambda account, exc: refused.append((account, exc)),
    )
    await rig.send("ha", "lock", "LOCK")
    assert refused == ([("acct", error)] if handed_on else [])


async def test_a_guard_that_fails_to_take_a_429_leaves_the_vehicles_commands_running(
    tmp_path: Path,
) -> None:
    """Trouble passing a 429 on to the account's guard ends nothing but that command: the
    vehicle's next command still runs and gets its result."""

    def broken_guard(_account: str, _exc: Exception) -> None:
        raise OverflowError("date value out of range")

    provider = FakeProvider(error=RateLimited("429", retry_after=60), accept=False)
    rig = await make_rig(tmp_path / "state", provider=provider, on_refused=broken_guard)
    first = await rig.send("ha", "lock", "LOCK")
    provider.error = None
    second = await rig.send("ha", "lock", "LOCK")
    assert first.reason == Reason.PROVIDER_RATE_LIMITED
    assert second.status is CommandStatus.SUCCEEDED


async def test_provider_outcomes_pass_through(tmp_path: Path) -> None:
    """A provider's own failed/timed_out outcome is the result."""
    outcome = CommandOutcome(CommandStatus.FAILED, "car said no", "p-1")
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(outcome=outcome))
    result = await rig.send("ha", "lock", "LOCK")
    assert (result.status, result.reason, result.detail) == (
        CommandStatus.FAILED,
        "vehicle_failed",
        "car said no",
    )
    assert rig.records()[-1]["provider_command_id"] == "p-1"


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (None, "timeout"),
        ("budget_exhausted", "budget_exhausted"),
        ("not_found", "not_found"),
        ("provider_rate_limited", "provider_rate_limited"),
        ("forbidden", "forbidden"),
    ],
)
async def test_an_unknown_verdict_says_why(tmp_path: Path, cause: str | None, reason: str) -> None:
    """Accepted, then no verdict: `timed_out`, and the reason says whether the car was silent or
    the bridge could not ask (its budget spent, the command id expired, a 429 or 403 on the
    status poll)."""
    outcome = CommandOutcome(CommandStatus.TIMED_OUT, "status unknown", "p-1", cause)
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(outcome=outcome))
    result = await rig.send("ha", "lock", "LOCK")
    assert (result.status, result.reason) == (CommandStatus.TIMED_OUT, reason)
    assert rig.records("command.outcome")[-1]["reason"] == reason


async def test_audit_failure_refuses_this_and_every_later_command(rig: Rig) -> None:
    """If the decision record cannot be made durable the command is not sent, nor any after it."""
    rig.audit.close()  # appends now fail: the log is not open
    first = await rig.send("ha", "lock", "LOCK")
    second = await rig.send("ha", "lock", "LOCK")
    assert first.reason == Reason.AUDIT_UNAVAILABLE == second.reason
    assert rig.provider.executed == []
    assert rig.pipeline.halted is Reason.AUDIT_UNAVAILABLE
    # The owner hears of it once, at once, not from the next app that is refused.
    failed = [a for a in rig.alerts.alerts if a.kind is AlertKind.AUDIT_FAILED]
    assert len(failed) == 1 and "restarted" in failed[0].message


@pytest.mark.parametrize("at_the_car", [True, False], ids=["succeeded", "never-sent"])
async def test_an_ending_the_log_refused_is_recorded_at_the_next_start_not_interrupted(
    tmp_path: Path, at_the_car: bool
) -> None:
    """The outcome record fails (the log went away while the command was at the car, or its
    decision never became durable): the app has its result, and the next start records that
    ending late and sends the same document again, not "interrupted: may have run"."""
    state = tmp_path / "state"
    gate = asyncio.Event()
    provider = FakeProvider(gate=gate) if at_the_car else FakeProvider()
    rig = await make_rig(state, provider=provider)
    if at_the_car:
        waiting = rig.pipeline.submit(rig.inbound("ha", "lock", '{"action":"LOCK","id":"k-1"}'))
        while not rig.provider.executed:
            await asyncio.sleep(0.01)
        rig.audit.close()  # the outcome cannot be written now
        gate.set()
        first = await waiting
        expected = (CommandStatus.SUCCEEDED, Reason.OK)
    else:
        rig.audit._fsync = _failing_fsync  # the decision is written, its fsync fails
        first = await rig.send("ha", "lock", '{"action":"LOCK","id":"k-1"}')
        rig.audit.close()
        assert first.reason == Reason.AUDIT_UNAVAILABLE
        expected = (first.status, Reason.AUDIT_UNAVAILABLE)
    assert (first.status, first.reason) == expected
    assert first.detail.count("Input/output error") <= 1  # said once, not twice
    assert rig.pipeline.halted is Reason.AUDIT_UNAVAILABLE
    sent = rig.sink.results()[-1]
    rig.store.close()

    again = await make_rig(state)
    decisions = unfinished(read_records(audit_directory(state)))
    assert [d["id"] for d in decisions] == ["k-1"]
    assert again.pipeline.finish_interrupted(decisions) == 1
    outcome = again.records("command.outcome")[-1]
    assert (outcome["status"], outcome["reason"]) == (expected[0].value, expected[1].value)
    assert datetime.fromisoformat(outcome["ended_at"]) == datetime.fromisoformat(sent["ts"])
    assert again.sink.results() == [sent]  # the same document, byte for byte in meaning
    assert verify(audit_directory(state)).ok
    # Kept once: a later start has nothing left to answer for it.
    assert unfinished(read_records(audit_directory(state))) == []
    assert again.pipeline.finish_interrupted(decisions) == 1  # called again: interrupted now
    assert again.records("command.outcome")[-1]["reason"] == "interrupted"


def _failing_fsync(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


async def test_halt_for_a_tampered_log_refuses_commands(rig: Rig) -> None:
    """After halt(audit_tampered) every command is refused with that reason."""
    rig.pipeline.halt(Reason.AUDIT_TAMPERED)
    assert (await rig.send("ha", "lock", "LOCK")).reason == Reason.AUDIT_TAMPERED
    assert rig.provider.executed == []


async def test_stop_ends_queued_and_in_flight_commands(tmp_path: Path) -> None:
    """On stop, the in-flight command ends timed_out and the queued one failed (never sent)."""
    gate = asyncio.Event()
    rig = await make_rig(tmp_path / "state", provider=FakeProvider(gate=gate))
    in_flight = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    queued = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    for _ in range(5):
        await asyncio.sleep(0)
    await rig.pipeline.stop()
    assert (in_flight.result().status, queued.result().status) == (
        CommandStatus.TIMED_OUT,
        CommandStatus.FAILED,
    )
    assert len(rig.provider.executed) == 1
    late = await rig.send("ha", "lock", "LOCK")
    assert late.reason == Reason.SHUTTING_DOWN


async def test_owner_commands_have_every_scope_but_still_need_stepup(tmp_path: Path) -> None:
    """submit_owner runs with all scopes, audited as app 'owner'; UNLOCK still wants a code."""
    state = tmp_path / "state"
    secret = enroll(state)
    rig = await make_rig(state)
    assert (await rig.pipeline.submit_owner("car", "refresh", "PRESS")).status is (
        CommandStatus.SUCCEEDED
    )
    no_code = await rig.pipeline.submit_owner("car", "lock", "UNLOCK")
    assert no_code.reason == Reason.STEPUP_REQUIRED
    ok = await rig.pipeline.submit_owner("car", "lock", "UNLOCK", code=code_at(secret, rig.clock()))
    assert ok.status is CommandStatus.SUCCEEDED
    assert {r["app"] for r in rig.records()} == {OWNER_ID}
    assert rig.sink.messages == []  # owner results are returned, not published


async def test_the_owner_is_unreachable_through_a_topic(rig: Rig) -> None:
    """A message on <base>/app/owner/... is an unknown app, not the owner."""
    assert (await rig.send(OWNER_ID, "lock", "LOCK")).reason == Reason.UNKNOWN_APP


async def test_api_commands_use_the_app_registry(rig: Rig) -> None:
    """submit_api looks the app up: scopes apply as for MQTT."""
    ok = await rig.pipeline.submit_api("ha", "car", "lock", "LOCK", id="r-1")
    assert (ok.status, ok.id) == (CommandStatus.SUCCEEDED, "r-1")
    denied = await rig.pipeline.submit_api("reader", "car", "lock", "LOCK")
    assert denied.reason == Reason.SCOPE_MISSING
    assert rig.records()[0]["source"] == "api"


async def test_api_commands_need_the_scope_in_the_token_too(rig: Rig) -> None:
    """A REST token may carry less than its app holds: the command is decided on both, however
    the action is spelt, and the refusal is on the record."""
    lock_only = frozenset({Scope.COMMAND_LOCK})
    for action in ("UNLOCK", "unlock", " Unlock "):
        result = await rig.pipeline.submit_api("ha", "car", "lock", action, granted=lock_only)
        assert result.reason == Reason.SCOPE_MISSING, action
    ok = await rig.pipeline.submit_api("ha", "car", "lock", "lock", granted=lock_only)
    assert ok.status is CommandStatus.SUCCEEDED
    assert rig.provider.executed == [("car-1", Operation.LOCK)]
    assert [r["reason"] for r in rig.records("command.decision")] == ["scope_missing"] * 3 + ["ok"]


async def test_a_broken_collaborator_still_yields_one_result(tmp_path: Path) -> None:
    """An app registry that raises: the command is rejected (internal_error), nothing escapes,
    and the refusal is in the audit log like any other."""

    class Exploding(DictApps):
        def current(self, app_id: str) -> App | None:
            raise RuntimeError("registry on fire")

    rig = await make_rig(tmp_path / "state", lookup=Exploding())
    result = await rig.send("ha", "lock", "LOCK")
    assert (result.status, result.reason) == (CommandStatus.REJECTED, Reason.INTERNAL_ERROR)
    assert statuses(rig) == [("rejected", "internal_error")]
    [record] = rig.records("command.decision")
    assert (record["decision"], record["reason"], record["id"]) == (
        "refused",
        "internal_error",
        result.id,
    )


async def test_app_activity_is_touched(tmp_path: Path) -> None:
    """A known app's last-seen is touched with the command it sent."""
    apps = DictApps(App("ha", "HA", frozenset(Scope), T0))
    rig = await make_rig(tmp_path / "state", lookup=apps)
    await rig.send("ha", "lock", "LOCK")
    assert apps.touched == [("ha", "lock")]


async def test_a_bad_topic_gets_a_result_but_no_publish(rig: Rig) -> None:
    """A topic that is not a command topic is refused malformed; there is nowhere to publish."""
    result = await rig.pipeline.submit(InboundCommand("ol/app/ha/cmd", b"LOCK", False, rig.clock()))
    assert result.reason == Reason.MALFORMED
    assert rig.sink.messages == []
    assert rig.records()[0]["reason"] == "malformed"


@pytest.mark.parametrize(
    ("topic", "reason", "result_topic"),
    [
        ("ol/app/ha/car/cmd/", Reason.UNKNOWN_COMMAND, "ol/app/ha/car/result"),
        ("ol/app/ha//cmd/lock", Reason.UNKNOWN_VEHICLE, "ol/app/ha//result"),
    ],
)
async def test_an_empty_level_is_refused_with_a_result_where_the_app_listens(
    rig: Rig, topic: str, reason: Reason, result_topic: str
) -> None:
    """The subscription's `+` matches an empty level: the app is named, so it hears why."""
    result = await rig.pipeline.submit(InboundCommand(topic, b"LOCK", False, rig.clock()))
    assert result.reason == reason
    assert [m.topic for m in rig.sink.messages] == [result_topic]
    assert rig.records()[0]["reason"] == reason.value
    assert rig.provider.executed == []


async def test_a_broken_state_database_refuses_instead_of_forgetting(rig: Rig) -> None:
    """If the id or step-up state cannot be read or written, the command is refused, not run."""
    rig.store.close()
    result = await rig.send("ha", "lock", '{"action":"LOCK","id":"x-1"}')
    assert (result.status, result.reason) == (CommandStatus.REJECTED, Reason.STATE_UNAVAILABLE)
    assert rig.provider.executed == []
    assert rig.records()[-1]["reason"] == "state_unavailable"


async def test_a_damaged_stepup_secret_refuses_without_showing_the_app_the_owners_paths(
    tmp_path: Path,
) -> None:
    """The result (which the app reads) names the file to fix, not the folders it lives in on
    the owner's machine; nothing is sent."""
    state = tmp_path / "state"
    enroll(state)
    write_private_atomic(secret_path(state), b"not base32!\n")
    rig = await make_rig(state)
    result = await rig.send("ha", "lock", '{"action":"UNLOCK","code":"123456"}')
    assert (result.status, result.reason) == (CommandStatus.REJECTED, Reason.STATE_UNAVAILABLE)
    assert result.detail.startswith("stepup.secret holds no usable step-up secret")
    assert str(tmp_path) not in rig.sink.messages[-1].payload
    assert rig.provider.executed == []


async def test_commands_before_start_are_refused(tmp_path: Path) -> None:
    """A pipeline that was not started (or was stopped) refuses with shutting_down."""
    rig = await make_rig(tmp_path / "state")
    await rig.pipeline.stop()
    assert (await rig.send("ha", "lock", "LOCK")).reason == Reason.SHUTTING_DOWN
    assert rig.provider.executed == []


@pytest.mark.parametrize("level", ["app", "vehicle", "command"])
async def test_an_overlong_topic_level_is_refused_and_not_written_whole(
    rig: Rig, level: str
) -> None:
    """Each level goes into the record: a 60,000-character one would write 60 KB per message,
    before any rate limit. Over 64 characters it is no command topic of ours."""
    levels = {"app": "ha", "vehicle": "car", "command": "lock"} | {level: "x" * 60_000}
    topic = f"ol/app/{levels['app']}/{levels['vehicle']}/cmd/{levels['command']}"
    result = await rig.pipeline.submit(InboundCommand(topic, b"LOCK", False, rig.clock()))
    assert result.reason == Reason.MALFORMED
    assert rig.sink.messages == []
    path = audit_directory(rig.state_dir) / "audit.jsonl"
    assert path.stat().st_size < 2_000


async def test_a_level_of_64_characters_is_still_a_command_topic(rig: Rig) -> None:
    topic = f"ol/app/{'a' * 64}/car/cmd/lock"
    result = await rig.pipeline.submit(InboundCommand(topic, b"LOCK", False, rig.clock()))
    assert result.reason == Reason.UNKNOWN_APP


# -- a flood of refusals ---------------------------------------------------------------------------


async def test_a_flood_of_refusals_is_counted_not_written_one_by_one(tmp_path: Path) -> None:
    """Each refusal is fsync'd on its own, before any rate limit: an app sending junk as fast as
    the broker takes it would fill the disk (and a full disk stops every command). Past the
    allowance each is still refused with a result, and one record says how many and why."""
    rig = await make_rig(
        tmp_path / "state",
        commands=CommandsConfig(rate_limit_per_minute=600, refusals_recorded_per_minute=5),
    )
    results = [await rig.send("locker", "lock", b"{junk") for _ in range(200)]
    results.append(await rig.send("locker", "lock", "UNLOCK"))  # scope missing: refused too
    assert {r.status for r in results} == {CommandStatus.REJECTED}
    assert len(rig.sink.messages) == 201, "every refusal still gets its result"
    assert len(rig.records("command.decision")) == 5
    assert len([a for a in rig.alerts.alerts if a.kind is AlertKind.COMMAND_REFUSED]) == 5
    allowed = await rig.send("locker", "lock", "LOCK")  # nothing allowed is ever summarised
    assert allowed.status is CommandStatus.SUCCEEDED
    await rig.pipeline.stop()  # a stop records the run counted so far
    (summary,) = rig.records("command.suppressed")
    assert summary["app"] == "locker" and summary["refused"] == 196
    assert summary["reasons"] == {"malformed": 195, "scope_missing": 1}
    assert verify(tmp_path / "state" / "audit").ok


async def test_the_count_is_recorded_a_window_after_the_first_uncounted_refusal(
    tmp_path: Path,
) -> None:
    rig = await make_rig(tmp_path / "state")
    # A window long enough that the sends below (each fsynced) cannot outlast it on a slow disk.
    rig.pipeline.noise = RefusalRecords(per_minute=2, window_s=3)
    for _ in range(6):
        await rig.send("ha", "lock", b"{junk")
    await rig.send("nobody", "lock", "LOCK")  # unknown senders share one allowance
    await rig.send("stranger", "lock", "LOCK")
    await rig.send("intruder", "lock", "LOCK")
    assert rig.records("command.suppressed") == []

    def summaries() -> dict[str | None, int]:
        return {r.get("app"): r["refused"] for r in rig.records("command.suppressed")}

    await await_until(lambda: len(summaries()) == 2, 15, what="both summaries")
    assert summaries() == {"ha": 4, None: 1}
    alerts = [a for a in rig.alerts.alerts if "counted, not recorded" in a.message]
    assert [a.app for a in alerts] == ["ha", None]


# -- held at start (the daemon's check of the audit log against the broker's head) -----------------


async def test_commands_that_come_while_held_wait_and_run_in_order_on_release(rig: Rig) -> None:
    rig.pipeline.hold(Reason.AUDIT_UNCHECKED)
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    second = rig.pipeline.submit(
        rig.inbound("ha", "lock", json.dumps({"action": "LOCK", "id": "b"}))
    )
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done() and rig.records() == []
    rig.pipeline.release()
    assert [(await f).status for f in (first, second)] == [CommandStatus.SUCCEEDED] * 2
    assert [r["id"] for r in rig.records("command.decision")][1] == "b"


async def test_a_command_held_too_long_is_refused_with_the_holds_reason(tmp_path: Path) -> None:
    rig = await make_rig(
        tmp_path / "state", commands=CommandsConfig(rate_limit_per_minute=600, max_age_s=0.1)
    )
    rig.pipeline.hold(Reason.AUDIT_UNCHECKED)
    result = await asyncio.wait_for(rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK")), 2)
    assert (result.status, result.reason) == (CommandStatus.REJECTED, Reason.AUDIT_UNCHECKED)
    assert rig.provider.executed == []


async def test_held_then_halted_the_waiting_commands_are_refused(rig: Rig) -> None:
    rig.pipeline.hold(Reason.AUDIT_UNCHECKED)
    waiting = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    rig.pipeline.halt(Reason.AUDIT_TAMPERED)
    rig.pipeline.release()
    assert (await waiting).reason == Reason.AUDIT_TAMPERED
    assert rig.provider.executed == []


async def test_a_command_that_waited_is_judged_old_when_it_is_taken(tmp_path: Path) -> None:
    """`issued_at` stays a firm limit: a command 28 s old when it came, taken 29 s later, is
    57 s old; with a 30 s maximum it is refused, not forwarded."""
    rig = await make_rig(
        tmp_path / "state", commands=CommandsConfig(rate_limit_per_minute=600, max_age_s=30)
    )
    issued = (rig.clock() - timedelta(seconds=28)).isoformat()
    rig.pipeline.hold(Reason.AUDIT_UNCHECKED)
    payload = json.dumps({"action": "LOCK", "issued_at": issued})
    waiting = rig.pipeline.submit(rig.inbound("ha", "lock", payload))
    rig.clock.advance(29)
    rig.pipeline.release()
    assert (await waiting).reason == Reason.TOO_OLD
    assert rig.provider.executed == []


async def test_a_command_that_waited_for_its_car_is_judged_old_when_its_turn_comes(
    tmp_path: Path,
) -> None:
    """`issued_at` stays a firm limit behind a slow command too (a car can take
    `commands.timeout_s`, two minutes, over one): a command 10 s old when it came, queued behind
    one the car took 29 s over, is 39 s old when its turn comes; with a 30 s maximum it ends
    rejected as too old and never reaches the car."""
    gate = asyncio.Event()
    rig = await make_rig(
        tmp_path / "state",
        provider=FakeProvider(gate=gate),
        commands=CommandsConfig(rate_limit_per_minute=600, max_age_s=30),
    )
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    issued = (rig.clock() - timedelta(seconds=10)).isoformat()
    payload = json.dumps({"action": "LOCK", "id": "late", "issued_at": issued})
    queued = rig.pipeline.submit(rig.inbound("ha", "lock", payload))
    for _ in range(5):
        await asyncio.sleep(0)
    rig.clock.advance(29)
    gate.set()
    await first
    done = await queued
    assert (done.status, done.reason) == (CommandStatus.REJECTED, Reason.TOO_OLD)
    assert rig.provider.executed == [("car-1", Operation.LOCK)]
    outcome = rig.records("command.outcome")[-1]
    assert (outcome["id"], outcome["status"], outcome["reason"]) == ("late", "rejected", "too_old")


async def test_an_id_rejected_unsent_in_its_vehicles_queue_may_be_sent_again(
    tmp_path: Path,
) -> None:
    """Queued behind a command that met a 429, it ends rejected, never sent ("the id may be
    used again", as for a fresh one); sent again under its id after Retry-After, it runs. It was
    refused as duplicate_id, "already executed", though it never reached the car."""
    gate = asyncio.Event()
    hold: list[str] = []
    rig = await make_rig(
        tmp_path / "state",
        provider=FakeProvider(gate=gate),
        provider_hold=lambda _vehicle: hold[0] if hold else None,
    )
    again = '{"action": "LOCK", "id": "retry-me"}'
    first = rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK"))
    queued = rig.pipeline.submit(rig.inbound("ha", "lock", again))
    for _ in range(5):
        await asyncio.sleep(0)
    hold.append("no calls before 12:00 (Retry-After)")
    gate.set()
    await first
    done = await queued
    assert (done.status, done.reason) == (CommandStatus.REJECTED, Reason.PROVIDER_RATE_LIMITED)
    hold.clear()
    later = await rig.pipeline.submit(rig.inbound("ha", "lock", again))
    assert (later.status, later.reason) == (CommandStatus.SUCCEEDED, Reason.OK)
    assert [op for _, op in rig.provider.executed] == [Operation.LOCK, Operation.LOCK]
    once = await rig.pipeline.submit(rig.inbound("ha", "lock", again))
    assert once.reason == Reason.DUPLICATE_ID  # and once it ran, never again


async def test_a_command_after_stop_gets_its_result_even_while_held(rig: Rig) -> None:
    """MQTT stays up a moment after the pipeline stops: what comes then is refused at once."""
    rig.pipeline.hold(Reason.AUDIT_UNCHECKED)
    await rig.pipeline.stop()
    late = await asyncio.wait_for(rig.pipeline.submit(rig.inbound("ha", "lock", "LOCK")), 2)
    assert late.reason == Reason.SHUTTING_DOWN
    assert rig.records("command.decision")[-1]["reason"] == "shutting_down"


async def test_stepup_refusals_are_recorded_even_after_a_flood_of_junk(tmp_path: Path) -> None:
    """Junk costs an app nothing, so it must not buy silence for its wrong codes: every step-up
    refusal keeps its own record and alert (the lockout bounds them)."""
    state = tmp_path / "state"
    enroll(state)
    rig = await make_rig(
        state, commands=CommandsConfig(rate_limit_per_minute=600, refusals_recorded_per_minute=5)
    )
    for _ in range(20):
        await rig.send("ha", "lock", b"{junk")
    wrong = json.dumps({"action": "UNLOCK", "code": "000000"})
    reasons = [(await rig.send("ha", "lock", wrong)).reason for _ in range(6)]
    assert reasons == [Reason.STEPUP_FAILED] * 5 + [Reason.STEPUP_LOCKED_OUT]
    verdicts = [r.get("stepup") for r in rig.records("command.decision")]
    assert verdicts[-6:] == ["failed"] * 5 + ["locked_out"]


async def test_counted_refusals_reach_the_command_metrics(tmp_path: Path) -> None:
    from bridge.metrics import CountingAudit, Metrics

    rig = await make_rig(
        tmp_path / "state",
        commands=CommandsConfig(rate_limit_per_minute=600, refusals_recorded_per_minute=5),
    )
    metrics = Metrics()
    rig.pipeline.audit = CountingAudit(rig.audit, metrics)
    for _ in range(40):
        await rig.send("ha", "lock", b"{junk")
    await rig.pipeline.stop()
    text = metrics.render().decode()
    assert 'ownerlink_commands_total{decision="refused",reason="malformed"} 40.0' in text
    assert 'decision="unknown"' not in text
