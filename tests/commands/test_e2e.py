"""End to end: MQTT in, real simulator out; the simulator's ground truth shows what the car did."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from bridge.audit.log import audit_directory
from bridge.audit.verify import verify
from bridge.commands.stepup import code_at, enroll
from bridge.events import AlertKind
from bridge.simulator import Limits, Simulator, serve_in_thread
from tests.commands.e2e import E2E, e2e_settings, now, running
from tests.conftest import BrokerAddress
from tests.providers.simulated import make_sim

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, str]]:
    # No account limits: the module shares one simulator, and 429s are not what is tested here.
    sim = make_sim(limits=Limits(per_minute=10**6, per_day=10**8, suspend_after=10**6))
    with serve_in_thread(sim) as base:
        yield sim, base


def with_code(e2e: E2E, action: str, **extra: Any) -> str:
    secret = enroll(e2e.settings.state_dir, force=True)
    return json.dumps({"action": action, "code": code_at(secret, now()), **extra})


async def test_an_allowed_lock_reaches_the_car(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """LOCK from Home Assistant: accepted, succeeded, and the car executed exactly one lock."""
    settings = e2e_settings(**settings_args)
    sim, base = settings_args["sim"], settings_args["base"]
    async with running(settings, sim, base, broker) as e2e:
        before = e2e.executed()
        e2e.app.send("ha", "ice", "lock", "LOCK")
        first = await e2e.app.next()
        assert first["status"] == "accepted"
        final = await e2e.app.final()
        assert (final["status"], final["command"], final["action"]) == ("succeeded", "lock", "LOCK")
        assert e2e.executed()[1][len(before[1]) :] == ["lock"]
        kinds = [r["kind"] for r in _records(e2e)]
        assert kinds[-2:] == ["command.decision", "command.outcome"]


class HeldFsync:
    """An fsync the test holds back (a slow disk) or makes fail (a dying one), once armed."""

    def __init__(self, *, fail: bool = False) -> None:
        self.armed = False
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int) -> None:
        if self.armed:
            self.entered.set()
            if self.fail:
                raise OSError(errno.EIO, "Input/output error")
            self.release.wait(10)
        os.fsync(fd)


async def test_the_car_gets_nothing_before_its_decision_is_on_disk(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """The decision record is written at once and flushed while the request is prepared; with
    the flush held back, the request waits at the door and the car has nothing."""
    settings = e2e_settings(**settings_args)
    sim, base = settings_args["sim"], settings_args["base"]
    disk = HeldFsync()
    async with running(settings, sim, base, broker, fsync=disk) as e2e:
        before = e2e.executed()
        disk.armed = True
        e2e.app.send("ha", "ice", "lock", "LOCK")
        assert await asyncio.to_thread(disk.entered.wait, 10)
        await asyncio.sleep(0.5)  # ample time for a request that was not held to arrive
        assert e2e.executed() == before
        assert [r["kind"] for r in _records(e2e)][-1] == "command.decision"  # written, not flushed
        disk.armed = False
        disk.release.set()
        final = await e2e.app.final()
        assert final["status"] == "succeeded"
        assert e2e.executed()[1][len(before[1]) :] == ["lock"]


async def test_a_failed_flush_means_the_car_never_gets_it(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """An fsync error on the decision record: the command is rejected unsent, and the pipeline
    takes no more commands (it will not act on records it cannot make durable)."""
    settings = e2e_settings(**settings_args)
    sim, base = settings_args["sim"], settings_args["base"]
    disk = HeldFsync(fail=True)
    async with running(settings, sim, base, broker, fsync=disk) as e2e:
        before = e2e.executed()
        disk.armed = True
        result = await e2e.command("ha", "ice", "lock", "LOCK")
        assert (result["status"], result["reason"]) == ("rejected", "audit_unavailable")
        later = await e2e.command("ha", "ice", "lock", "LOCK")
        assert (later["status"], later["reason"]) == ("rejected", "audit_unavailable")
        assert e2e.executed() == before
        assert e2e.pipeline.halted == "audit_unavailable"


# (app, vehicle, command, payload, expected reason). Each is refused and never reaches a car.
REFUSED: list[tuple[str, str, str, str | bytes, str]] = [
    ("ha", "ev", "lock", "LOCK" + " " * 2000, "payload_too_large"),
    ("ha", "ev", "lock", b"\xff\xfe", "malformed"),
    ("ha", "ev", "sunroof", "OPEN", "unknown_command"),
    ("ha", "ev", "lock", "OPEN", "unknown_action"),
    ("stranger", "ev", "lock", "UNLOCK", "unknown_app"),
    ("off", "ev", "lock", "LOCK", "app_disabled"),
    ("ha", "boat", "lock", "LOCK", "unknown_vehicle"),
    ("reader", "ev", "lock", "UNLOCK", "scope_missing"),
    ("ha", "ice", "charge", "START", "unsupported"),
    ("ha", "broke", "lock", "LOCK", "budget_exhausted"),
    ("ha", "ev", "lock", "UNLOCK", "stepup_not_enrolled"),
    ("ha", "ev", "engine", "START", "stepup_not_enrolled"),
]


@pytest.mark.parametrize(
    ("app", "vehicle", "command", "payload", "reason"),
    REFUSED,
    ids=[f"{r[-1]}-{r[2]}" for r in REFUSED],
)
async def test_refusals_never_reach_the_car(
    settings_args: dict[str, Any],
    broker: BrokerAddress,
    app: str,
    vehicle: str,
    command: str,
    payload: str | bytes,
    reason: str,
) -> None:
    """Each refusal reason, over MQTT: a rejected result, and the simulator executed nothing."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        before = e2e.executed()
        result = await e2e.command(app, vehicle, command, payload)
        assert (result["status"], result["reason"]) == ("rejected", reason)
        assert e2e.executed() == before
        assert e2e.alerts.alerts[-1].kind is AlertKind.COMMAND_REFUSED


async def test_stale_and_future_commands_never_reach_the_car(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """issued_at beyond max age is too_old; far ahead is from_future; neither executes."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        before = e2e.executed()
        old = (now() - timedelta(seconds=settings.commands.max_age_s + 5)).isoformat()
        ahead = (now() + timedelta(minutes=2)).timestamp()
        stale = await e2e.command(
            "ha", "ev", "lock", json.dumps({"action": "UNLOCK", "issued_at": old})
        )
        future = await e2e.command(
            "ha", "ev", "lock", json.dumps({"action": "LOCK", "issued_at": ahead})
        )
        assert (stale["reason"], future["reason"]) == ("too_old", "from_future")
        assert e2e.executed() == before


async def test_stepup_refusals_never_reach_the_car(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """No code, a wrong code, then locked out (even with the right code): nothing executes."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        right = with_code(e2e, "UNLOCK")
        before = e2e.executed()
        reasons = [
            (await e2e.command("ha", "ev", "lock", "UNLOCK"))["reason"],
            (await e2e.command("ha", "ev", "lock", '{"action":"UNLOCK","code":"0000000"}'))[
                "reason"
            ],
            (await e2e.command("ha", "ev", "lock", '{"action":"UNLOCK","code":"999999x"}'))[
                "reason"
            ],
            (await e2e.command("ha", "ev", "lock", right))["reason"],
        ]
        assert reasons == ["stepup_required", "stepup_failed", "stepup_failed", "stepup_locked_out"]
        assert e2e.executed() == before
        kinds = {a.kind for a in e2e.alerts.alerts}
        assert {AlertKind.STEPUP_FAILED, AlertKind.STEPUP_LOCKOUT} <= kinds


async def test_unlock_with_a_code_runs_once_and_the_code_cannot_be_reused(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """UNLOCK with the right code executes; replaying the same payload is refused."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        payload = with_code(e2e, "UNLOCK")
        before = e2e.executed()
        assert (await e2e.command("ha", "ev", "lock", payload))["status"] == "succeeded"
        assert (await e2e.command("ha", "ev", "lock", payload))["reason"] == "stepup_failed"
        assert e2e.executed()[0][len(before[0]) :] == ["unlock"]


async def test_duplicate_id_executes_once(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """The same id twice: the car executes it once; the second is duplicate_id."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        before = e2e.executed()
        payload = '{"action":"LOCK","id":"e2e-once"}'
        assert (await e2e.command("ha", "ice", "lock", payload))["status"] == "succeeded"
        second = await e2e.command("ha", "ice", "lock", payload)
        assert (second["status"], second["reason"], second["id"]) == (
            "rejected",
            "duplicate_id",
            "e2e-once",
        )
        assert e2e.executed()[1][len(before[1]) :] == ["lock"]


async def test_duplicate_id_executes_once_across_a_restart(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """A restarted bridge on the same state directory still refuses an executed id."""
    settings = e2e_settings(**settings_args)
    sim, base = settings_args["sim"], settings_args["base"]
    payload = '{"action":"LOCK","id":"e2e-restart"}'
    async with running(settings, sim, base, broker) as e2e:
        before = e2e.executed()
        assert (await e2e.command("ha", "ice", "lock", payload))["status"] == "succeeded"
    async with running(settings, sim, base, broker) as e2e:
        assert (await e2e.command("ha", "ice", "lock", payload))["reason"] == "duplicate_id"
        assert len(e2e.executed()[1]) == len(before[1]) + 1


async def test_rate_limit_refuses_the_second_command(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """An app limited to one command a minute: the second is rate_limited and never executes."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        before = e2e.executed()
        assert (await e2e.command("slow", "ice", "lock", "LOCK"))["status"] == "succeeded"
        assert (await e2e.command("slow", "ice", "lock", "LOCK"))["reason"] == "rate_limited"
        assert len(e2e.executed()[1]) == len(before[1]) + 1


async def test_a_retained_unlock_is_never_executed(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """A retained UNLOCK (valid code) waiting on the broker is refused as the bridge subscribes."""
    settings = e2e_settings(**settings_args)
    async with running(
        settings, settings_args["sim"], settings_args["base"], broker, listen=False
    ) as e2e:
        payload = with_code(e2e, "UNLOCK")
        before = e2e.executed()
        e2e.app.send("ha", "ev", "lock", payload, retain=True)
        try:
            e2e.listen()
            result = await e2e.app.final()
            assert (result["status"], result["reason"]) == ("rejected", "retained")
            assert e2e.executed() == before
        finally:
            e2e.app.send("ha", "ev", "lock", b"", retain=True)  # clear the retained message


async def test_a_retained_unlock_published_live_is_refused(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """A retained UNLOCK published while the bridge listens is refused too (retain as published)."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        payload = with_code(e2e, "UNLOCK")
        try:
            result = await e2e.command("ha", "ev", "lock", payload, retain=True)
            assert result["reason"] == "retained"
        finally:
            e2e.app.send("ha", "ev", "lock", b"", retain=True)


async def test_the_audit_log_verifies_after_a_session(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """After allowed and refused commands, the audit chain verifies and holds no code."""
    settings = e2e_settings(**settings_args)
    async with running(settings, settings_args["sim"], settings_args["base"], broker) as e2e:
        payload = with_code(e2e, "UNLOCK")
        code = json.loads(payload)["code"]
        await e2e.command("ha", "ev", "lock", payload)
        await e2e.command("reader", "ev", "lock", "LOCK")
        directory = audit_directory(settings.state_dir)
    assert verify(directory).ok
    assert code.encode() not in (directory / "audit.jsonl").read_bytes()


def _records(e2e: E2E) -> list[dict[str, Any]]:
    path = audit_directory(e2e.settings.state_dir) / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_provider_error_never_names_the_providers_vehicle_id(
    settings_args: dict[str, Any], broker: BrokerAddress
) -> None:
    """The error's words reach the app's result and the audit log: the car is the owner's slug
    there, never the provider's id for it (which is in the request's path)."""
    sim = settings_args["sim"]
    settings = e2e_settings(**settings_args)
    vehicle_id = settings.vehicles["ev"].id
    async with running(settings, sim, settings_args["base"], broker) as e2e:
        sim.set_faults("5xx=1.0")
        try:
            result = await e2e.command("ha", "ev", "lock", "LOCK")
        finally:
            sim.set_faults("")
        records = _records(e2e)
    assert result["status"] != "succeeded"
    assert "/lock: HTTP 500" in result["detail"]
    assert vehicle_id not in json.dumps(result)
    assert records[-1]["kind"] == "command.outcome"
    assert vehicle_id not in json.dumps(records)
