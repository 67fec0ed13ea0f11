"""`ownerlink stepup …` and `ownerlink command …` as the owner runs them."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.audit.log import audit_directory
from bridge.audit.verify import verify
from bridge.cli import main
from bridge.cli.command import action_name
from bridge.commands.stepup import code_at, load_secret, secret_path
from bridge.files import write_private_atomic
from bridge.simulator import Limits, Simulator, serve_in_thread
from bridge.store import Store
from tests.audit.helpers import assert_one_error_line, run_unprivileged
from tests.commands.e2e import now
from tests.conftest import BrokerAddress
from tests.providers.simulated import SIM_CLIENT, connect, log_in, make_sim, sim_account

pytestmark = pytest.mark.timeout(60)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_enroll_shows_a_qr_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """enroll: a 0600 secret, a QR code and URI, an audit record; a second needs --force."""
    state = tmp_path / "state"
    code, out, _ = run(capsys, "stepup", "enroll", "--state-dir", str(state))
    assert code == 0
    assert "otpauth://totp/" in out and "█" in out
    assert stat.S_IMODE(secret_path(state).stat().st_mode) == 0o600
    secret = load_secret(state)
    assert secret is not None
    code, _, err = run(capsys, "stepup", "enroll", "--state-dir", str(state))
    assert code == 1 and "--force" in err
    assert load_secret(state) == secret
    assert run(capsys, "stepup", "enroll", "--force", "--state-dir", str(state))[0] == 0
    assert load_secret(state) != secret
    kinds = [
        json.loads(line)["kind"]
        for line in (audit_directory(state) / "audit.jsonl").read_text().splitlines()
    ]
    assert kinds == ["stepup.enrolled", "stepup.enrolled"]
    assert secret not in (audit_directory(state) / "audit.jsonl").read_text()


def test_code_prints_the_current_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`stepup code` prints the authenticator's current 6 digits (or says it is not enrolled)."""
    state = tmp_path / "state"
    assert run(capsys, "stepup", "code", "--state-dir", str(state))[0] == 1
    run(capsys, "stepup", "enroll", "--state-dir", str(state))
    before = now()
    code, out, _ = run(capsys, "stepup", "code", "--state-dir", str(state))
    after = now()
    secret = load_secret(state)
    assert secret is not None
    # The code of the 30 s step the command ran in (it may have crossed into the next one).
    assert code == 0 and out.strip() in {code_at(secret, before), code_at(secret, after)}


@pytest.mark.parametrize("content", [b"not base32!\n", "geheimnis-\u00e9".encode(), b""])
def test_a_damaged_secret_is_one_error_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    """`stepup code` and `stepup status` with a secret file no code can match: one line naming
    the file and `stepup enroll --force`, exit 1 (they ended in a traceback, and status said
    "enrolled"); `enroll --force` then repairs it."""
    state = tmp_path / "state"
    assert run(capsys, "stepup", "enroll", "--state-dir", str(state))[0] == 0
    write_private_atomic(secret_path(state), content)
    for action in ("code", "status"):
        code, out, err = run(capsys, "stepup", action, "--state-dir", str(state))
        assert (code, out) == (1, ""), err
        assert err == (
            f"error: {secret_path(state)} holds no usable step-up secret (damaged or edited): "
            "run `ownerlink stepup enroll --force` and scan the new QR code\n"
        )
    assert run(capsys, "stepup", "enroll", "--force", "--state-dir", str(state))[0] == 0
    assert run(capsys, "stepup", "code", "--state-dir", str(state))[0] == 0


def test_lockouts_of_unknown_apps_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status and clear-lockout take a registered app, `owner` or the owner's web login; an
    unknown id is `error: no app …`, exit 1, and nothing is cleared or audited."""
    config = tmp_path / "config.yaml"  # no broker: the app_added alert is only logged
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "mqtt": {"port": 1}}))
    state = ("--config", str(config))
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *state)[0] == 0
    for argv in (("status", "owner", "ghost"), ("clear-lockout", "ghost")):
        code, out, err = run(capsys, "stepup", *argv, *state)
        assert (code, out) == (1, "") and err.startswith("error: no app 'ghost'")
    code, out, _ = run(capsys, "stepup", "status", "owner-web-login", "nr", *state)
    ok = "ok (0 of 5 failures before a lockout)"
    assert code == 0 and f"owner-web-login: {ok}\nnr: {ok}\n" in out
    assert run(capsys, "stepup", "status", *state)[1].endswith(f"owner: {ok}\n")
    for app in ("owner-web-login", "owner", "nr"):
        assert run(capsys, "stepup", "clear-lockout", app, *state) == (
            0,
            f"{app}: was not locked out; its recent failed codes are forgotten\n",
            "",
        )
    store = Store.open(tmp_path / "state")  # nr is locked out (five wrong codes, say)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO stepup_lockouts (app, until) VALUES ('nr', ?)", (time.time() + 900,)
        )
    store.close()
    assert run(capsys, "stepup", "clear-lockout", "nr", *state)[1] == "nr: step-up lockout lifted\n"
    cleared = [
        record["app"]
        for record in map(json.loads, (audit_directory(tmp_path / "state") / "audit.jsonl").open())
        if record["kind"] == "stepup.lockout_cleared"
    ]
    assert cleared == ["owner-web-login", "owner", "nr", "nr"]


@pytest.mark.parametrize("action", ["status", "code", "enroll"])
def test_an_unreadable_state_directory_is_one_error_line(tmp_path: Path, action: str) -> None:
    """A state directory this user cannot read: its path and whom to run as, no traceback."""
    state = tmp_path / "state"
    assert main(["stepup", "enroll", "--state-dir", str(state)]) == 0
    state.chmod(0)
    try:
        done = run_unprivileged(tmp_path, "stepup", action, "--state-dir", str(state))
    finally:
        state.chmod(0o700)
    assert_one_error_line(done, f"permission denied: {state}", "the user the daemon runs as")


def test_clearing_a_lockout_with_an_unusable_audit_log_clears_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lockout is lifted only when its audit record can be written."""
    state = tmp_path / "state"
    assert main(["stepup", "enroll", "--state-dir", str(state)]) == 0
    log_file = audit_directory(state) / "audit.jsonl"
    log_file.chmod(0)
    try:
        done = run_unprivileged(
            tmp_path, "stepup", "clear-lockout", "owner", "--state-dir", str(state)
        )
    finally:
        log_file.chmod(0o600)
    assert_one_error_line(done, f"permission denied: {log_file}")
    assert "lockout_cleared" not in log_file.read_text()


def test_re_enrolling_with_an_unusable_audit_log_keeps_the_old_secret(tmp_path: Path) -> None:
    """`enroll --force` replaces the secret only when its audit record can be written: else the
    owner's authenticator would stop working with no new QR code shown and nothing audited."""
    state = tmp_path / "state"
    assert main(["stepup", "enroll", "--state-dir", str(state)]) == 0
    secret = load_secret(state)
    log_file = audit_directory(state) / "audit.jsonl"
    log_file.chmod(0)
    try:
        done = run_unprivileged(tmp_path, "stepup", "enroll", "--force", "--state-dir", str(state))
    finally:
        log_file.chmod(0o600)
    assert_one_error_line(done, f"permission denied: {log_file}")
    assert load_secret(state) == secret
    assert "otpauth://" not in done.stdout
    assert log_file.read_text().count("stepup.enrolled") == 1


# -- ownerlink command, against the simulator over HTTP ---------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, str]]:
    # No account limits: the module shares one simulator, and 429s are not what is tested here.
    sim = make_sim(limits=Limits(per_minute=10**6, per_day=10**8, suspend_after=10**6))
    with serve_in_thread(sim) as base:
        yield sim, base


@pytest.fixture
def configured(
    tmp_path: Path, served: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> Path:
    """A config file for the simulator's ICE car as `ice`, logged in."""
    sim, base = served
    state = tmp_path / "state"
    account = sim_account(base).model_dump(mode="json")
    account["client_secret"] = SIM_CLIENT["client_secret"]
    doc = {
        "state_dir": str(state),
        "accounts": {"home": account},
        "vehicles": {
            "ice": {"account": "home", "id": sim.vehicles[1].vehicle_id},
            "ev": {"account": "home", "id": sim.vehicles[0].vehicle_id},
        },
        "mqtt": {"host": broker.host, "port": broker.port, "base_topic": base_topic},
        "commands": {"status_poll_interval_s": 0.02, "timeout_s": 5},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    from bridge.config import load_config

    settings = load_config(config)
    parts = connect(settings, "home", None)
    asyncio.run(_login(parts))
    return config


async def _login(parts: object) -> None:
    await log_in(parts, None, vehicle="all")  # type: ignore[arg-type]
    await parts.parts.provider.aclose()  # type: ignore[attr-defined]


def executed(served: tuple[Simulator, str], index: int) -> list[str]:
    return [e.command for e in served[0].vehicles[index].executed]


def test_owner_lock_runs_and_is_audited(
    configured: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`ownerlink command ice LOCK` (the word MQTT uses; any case is fine): exit 0, the car
    locks, two audit records as app owner."""
    before = executed(served, 1)
    code, out, _ = run(capsys, "command", "ice", "LOCK", "--config", str(configured))
    assert code == 0, out
    assert out.strip() == "lock LOCK on ice: succeeded"
    assert executed(served, 1)[len(before) :] == ["lock"]
    state = Path(yaml.safe_load(configured.read_text())["state_dir"])
    records = [
        json.loads(line)
        for line in (audit_directory(state) / "audit.jsonl").read_text().splitlines()
    ]
    assert [(r["kind"], r["app"]) for r in records] == [
        ("command.decision", "owner"),
        ("command.outcome", "owner"),
    ]
    assert verify(audit_directory(state)).ok


def test_owner_unlock_needs_the_code(
    configured: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """unlock without a code (no terminal to ask on): exit 1, stepup_required; with it: runs."""
    state = Path(yaml.safe_load(configured.read_text())["state_dir"])
    run(capsys, "stepup", "enroll", "--state-dir", str(state))
    before = executed(served, 1)
    code, out, _ = run(capsys, "command", "ice", "unlock", "--config", str(configured), "--json")
    assert code == 1 and json.loads(out)["reason"] == "stepup_required"
    secret = load_secret(state)
    assert secret is not None
    code, out, _ = run(
        capsys,
        "command",
        "ice",
        "unlock",
        "--config",
        str(configured),
        "--code",
        code_at(secret, now()),
        "--json",
    )
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    assert executed(served, 1)[len(before) :] == ["unlock"]


def test_owner_unlock_takes_the_code_on_standard_input(
    configured: Path,
    served: tuple[Simulator, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--code puts the code in the process list, where an app on the same machine could read
    it and spend it first; --code-stdin keeps it off the command line."""
    state = Path(yaml.safe_load(configured.read_text())["state_dir"])
    run(capsys, "stepup", "enroll", "--state-dir", str(state))
    secret = load_secret(state)
    assert secret is not None
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{code_at(secret, now())}\n"))
    argv = ("command", "ice", "unlock", "--config", str(configured), "--code-stdin", "--json")
    code, out, _ = run(capsys, *argv)
    assert code == 0 and json.loads(out)["status"] == "succeeded"


def _hold_head(broker: BrokerAddress, base_topic: str, head: dict[str, object]) -> None:
    """Put an audit head on the broker, retained, as the daemon publishes it."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        topic = f"{base_topic}/bridge/audit_head"
        client.publish(topic, json.dumps(head), qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_owner_command_refuses_a_log_that_lacks_the_brokers_head(
    configured: Path,
    served: tuple[Simulator, str],
    broker: BrokerAddress,
    base_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Records cut off the end of the log (the broker holds a later head than the log has): the
    daemon refuses every command as audit_tampered, and so does `ownerlink command`, with
    nothing sent and nothing written (it sent the command and wrote on top of the cut). A log
    that contains the broker's head runs as before."""
    state = Path(yaml.safe_load(configured.read_text())["state_dir"])
    assert run(capsys, "command", "ice", "lock", "--config", str(configured))[0] == 0
    directory = audit_directory(state)
    last = json.loads((directory / "audit.jsonl").read_text().splitlines()[-1])
    _hold_head(broker, base_topic, {"seq": last["seq"], "hash": last["hash"]})
    assert run(capsys, "command", "ice", "lock", "--config", str(configured))[0] == 0

    before, size = executed(served, 1), (directory / "audit.jsonl").stat().st_size
    _hold_head(broker, base_topic, {"seq": last["seq"] + 9, "hash": "ab" * 32})
    code, out, err = run(capsys, "command", "ice", "lock", "--config", str(configured))
    assert code == 1 and out == ""
    assert "broker holds the head of record" in err and "nothing was sent" in err
    assert executed(served, 1) == before
    assert (directory / "audit.jsonl").stat().st_size == size


def test_owner_command_takes_in_records_written_since_it_opened_the_log(
    configured: Path,
    served: tuple[Simulator, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon beside it writes a record, and publishes its head, after the command opened
    the log and before it asked the broker: that head is in the log, not cut off from it (the
    command was refused as if records had been cut)."""
    import bridge.cli.command as command_cli
    from bridge.audit.verify import Head
    from tests.audit.helpers import open_log

    state = Path(yaml.safe_load(configured.read_text())["state_dir"])

    def daemon_writes_then_broker_answers(*_args: object, **_kw: object) -> Head:
        daemon = open_log(audit_directory(state))
        record = daemon.append("app.revoked", app="nodered", reason="test")
        daemon.close()
        return Head(record["seq"], record["hash"])

    monkeypatch.setattr(command_cli, "fetch_head", daemon_writes_then_broker_answers)
    before = executed(served, 1)
    code, out, err = run(capsys, "command", "ice", "lock", "--config", str(configured))
    assert code == 0, err
    assert out.strip() == "lock LOCK on ice: succeeded"
    assert executed(served, 1)[len(before) :] == ["lock"]
    assert verify(audit_directory(state)).ok


def test_owner_commands_in_a_loop_meet_the_rate_limit(
    configured: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each `ownerlink command` is a new process; it counts the last minute's commands from
    the audit log, so a script calling it in a loop is held to the limit like an app."""
    doc = yaml.safe_load(configured.read_text())
    doc["commands"]["rate_limit_per_minute"] = 2
    configured.write_text(yaml.safe_dump(doc))
    before = executed(served, 1)
    for _ in range(2):
        assert run(capsys, "command", "ice", "LOCK", "--config", str(configured))[0] == 0
    code, out, _ = run(capsys, "command", "ice", "LOCK", "--config", str(configured))
    assert code == 1 and "rejected" in out and "rate" in out, out
    assert executed(served, 1)[len(before) :] == ["lock", "lock"]


def test_owner_charge_on_a_combustion_car_is_unsupported(
    configured: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """start-charge on the ICE car is refused as unsupported and never sent."""
    before = executed(served, 1)
    code, out, _ = run(capsys, "command", "ice", "start-charge", "--config", str(configured))
    assert code == 1 and "unsupported" in out
    assert executed(served, 1) == before


@pytest.mark.parametrize("typed", ["start-engine", "START_ENGINE", " Start-Engine "])
def test_action_names_ignore_case_and_underscores(typed: str) -> None:
    assert action_name(typed) == "start-engine"


def test_unknown_vehicle_is_a_config_error(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A vehicle slug not in the config: exit 2 naming it."""
    code, _, err = run(capsys, "command", "boat", "lock", "--config", str(configured))
    assert code == 2 and "vehicles.boat" in err


def test_no_config_file_is_said_rather_than_an_unknown_vehicle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run where no config file is found: exit 2 saying so, not "no such vehicle"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OWNERLINK_CONFIG", raising=False)
    monkeypatch.setattr("bridge.config.DEFAULT_PATHS", (tmp_path / "config.yaml",))
    code, _, err = run(capsys, "command", "car", "LOCK", "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "no config file was found" in err and "--config" in err


def test_the_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    """0, 1, 2 (usage or config: an unknown vehicle) and 3, as the command exits."""
    with pytest.raises(SystemExit):
        main(["command", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for status in ("0 succeeded", "1 refused or failed", "2 usage or config error", "3 timed out"):
        assert status in text
