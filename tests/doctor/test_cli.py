"""`ownerlink doctor` end to end: real files, a real Mosquitto and the simulator over HTTP."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.audit.log import audit_directory
from bridge.cli import build_parser, main
from bridge.cli.doctor import Probes, doctor_command
from bridge.providers.base import CallKind
from bridge.providers.tokens import TokenStore
from bridge.store import DB_NAME, Store
from tests.doctor.conftest import ADMIN_PASSWORD, ADMIN_USER, Certificates, Install
from tests.support.broker import MosquittoProcess, free_port


def run(install: Install, *args: str, probes: Probes | None = None) -> tuple[int, str]:
    """Doctor through the real parser; the exit status and what it printed."""
    out = io.StringIO()
    parsed = build_parser().parse_args(["doctor", "--config", str(install.write()), *args])
    return doctor_command(parsed, probes, out), out.getvalue()


def checks(install: Install, *args: str, probes: Probes | None = None) -> dict[str, Any]:
    """Doctor's `--json` report as {check name: check}, plus the exit status under "exit"."""
    code, out = run(install, "--json", *args, probes=probes)
    doc = json.loads(out)
    return {"exit": code, **{c["name"]: c for c in doc["checks"]}}


def status(found: dict[str, Any]) -> dict[str, str]:
    return {name: c["status"] for name, c in found.items() if name != "exit"}


def shifted(by: timedelta) -> Probes:
    """Probes whose clock is off by `by` (the rest is real)."""
    return Probes(clock=lambda: datetime.now(UTC) + by)


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


# -- a healthy installation -----------------------------------------------------------------------


def test_a_healthy_installation_passes_with_exit_0(
    install: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every check passes (mode none is only a warning), one line each, exit 0 through main."""
    assert main(["doctor", "--config", str(install.config)]) == 0
    out = capsys.readouterr().out
    for name in (
        "config",
        "state directory",
        "private files",
        "state database",
        "broker reachable",
        "broker login",
        "tokens: home",
        "provider: home",
        "clock",
        "budget: home",
        "audit log",
        "audit fsync",
    ):
        assert any(line.startswith(f"✓ {name}") for line in out.splitlines()), name
    assert "! broker enforcement" in out and "mode none" in out
    assert "2 of 250 calls used in the last 24 h" in out
    assert "All checks passed (1 warning)." in out


def test_a_relative_state_dir_is_read_from_the_working_directory(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--state-dir state` run beside it: read as the other commands read it, not a traceback
    (sqlite's read-only URI needed an absolute path)."""
    install.write()
    monkeypatch.chdir(install.root)
    found = checks(install, "--state-dir", "state")
    assert found["state database"]["status"] == "ok", found["state database"]
    assert found["exit"] == 0


def test_doctor_spends_no_budget_and_sends_no_token(install: Install) -> None:
    """Without --online nothing reaches the API with a token, the budget and tokens stay put."""
    tokens_before = TokenStore(install.state_dir).load("home")
    calls_before = install.provider_calls()
    found = checks(install)
    assert found["exit"] == 0
    assert install.provider_calls() == calls_before
    assert TokenStore(install.state_dir).load("home") == tokens_before
    assert "2 of 250 calls used in the last 24 h" in found["budget: home"]["detail"]
    assert "no budget spent" in found["provider: home"]["detail"]


def test_online_makes_one_list_call_charged_to_the_budget(install: Install) -> None:
    """--online lists the vehicles once; the simulator and the budget both count that one call."""
    calls_before = install.provider_calls()
    found = checks(install, "--online")
    assert found["exit"] == 0
    assert found["online: home"]["status"] == "ok"
    assert "listed 3 vehicles" in found["online: home"]["detail"]
    assert install.provider_calls() == calls_before + 1
    assert "3 of 250 calls used" in found["budget: home"]["detail"]


def test_online_fails_for_configured_vehicles_the_login_does_not_cover(install: Install) -> None:
    """A mistyped id (here the VIN) and an id-less vehicle on a login with three cars passed
    every check, while the daemon polled the first in vain and bridged the first car for the
    second. The vehicle naming a listed id is fine; the others are named by key."""
    install.vehicles = {
        "mache": {"account": "home", "id": install.sim.vehicles[0].vehicle_id},
        "typo": {"account": "home", "id": install.sim.vehicles[0].vin},
        "bare": {"account": "home"},
    }
    found = checks(install, "--online")
    online = found["online: home"]
    assert found["exit"] == 1 and online["status"] == "fail"
    assert "vehicles.typo.id: not the id of any of the 3 vehicles" in online["detail"]
    assert (
        "vehicles.bare.id: missing, but account home's login covers 3 vehicles"
        in (online["detail"])
    )
    assert "mache" not in online["detail"]
    assert install.sim.vehicles[0].vin not in json.dumps(found)
    assert "ownerlink vehicles" in online["fix"]


def test_online_skips_an_account_that_is_not_logged_in(install: Install) -> None:
    """--online spends nothing for an account whose tokens already failed the tokens check."""
    TokenStore(install.state_dir).path("home").unlink()
    calls_before = install.provider_calls()
    found = checks(install, "--online")
    assert found["exit"] == 1 and found["tokens: home"]["status"] == "fail"
    assert "online: home" not in found
    assert install.provider_calls() == calls_before


def test_json_output_carries_the_verdict_and_every_check(install: Install) -> None:
    """--json: ok, counts and one object per check with status, detail and fix."""
    code, out = run(install, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["failed"] == 0 and doc["warnings"] == 1
    assert {"name", "status", "detail", "fix"} <= set(doc["checks"][0])


def test_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config error is reported like every command's: the key, and exit status 2."""
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  port: 99999\n")
    assert main(["doctor", "--config", str(config)]) == 2
    assert "mqtt.port" in capsys.readouterr().err


def test_a_bad_config_with_json_still_prints_a_document_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A monitoring script reading `doctor --json` gets a failed verdict on stdout, not
    nothing; exit status 2 and the line on stderr stay."""
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  port: 99999\n")
    assert main(["doctor", "--json", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["ok"] is False and doc["failed"] == 1
    [check] = doc["checks"]
    assert check["name"] == "config" and "mqtt.port" in check["detail"]
    assert "mqtt.port" in err


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "1e300", "soon"])
def test_a_timeout_that_is_no_positive_number_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """--timeout must be more than 0 (0 failed every probe; -1 and 1e300 crashed the socket)."""
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--state-dir", str(tmp_path), f"--timeout={timeout}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --timeout:" in err and "Traceback" not in err


# -- the broker -----------------------------------------------------------------------------------


def test_a_wrong_broker_password_fails_with_credentials_advice(
    install: Install, own_broker: MosquittoProcess
) -> None:
    """A password_file broker refusing the daemon's password: exit 1, check the credentials."""
    passwords = own_broker.workdir / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "ownerlink", "right-password"],
        check=True,
        timeout=10,
    )
    own_broker.extra_config = f"allow_anonymous false\npassword_file {passwords}"
    own_broker.restart()
    install.mqtt.update(
        host=own_broker.host, port=own_broker.port, username="ownerlink", password="wrong-pw-1"
    )
    code, out = run(install)
    assert code == 1
    assert "✗ broker login" in out and "refused 'ownerlink'" in out
    assert "check mqtt.username and mqtt.password" in out
    assert "wrong-pw-1" not in out
    install.mqtt["password"] = "right-password"
    assert checks(install)["broker login"]["status"] == "ok"


def test_a_broker_that_requires_a_login_says_so(
    install: Install, own_broker: MosquittoProcess
) -> None:
    """No username configured, anonymous refused: the advice is to configure a login."""
    own_broker.extra_config = "allow_anonymous false"
    own_broker.restart()
    install.mqtt.update(host=own_broker.host, port=own_broker.port)
    found = checks(install)
    assert found["exit"] == 1
    assert found["broker login"]["detail"] == "the broker requires a login and none is configured"
    assert "set mqtt.username and mqtt.password" in found["broker login"]["fix"]


def test_a_broker_that_is_down_fails_reachability_only(install: Install) -> None:
    """Nothing listening: one failed `broker reachable`, no login or enforcement noise."""
    install.mqtt["port"] = closed_port()
    found = checks(install)
    assert found["exit"] == 1
    assert found["broker reachable"]["status"] == "fail"
    assert "start the broker" in found["broker reachable"]["fix"]
    assert "broker login" not in found and "broker enforcement" not in found


def test_doctor_never_kicks_the_running_daemon_off_the_broker(install: Install) -> None:
    """A session holding the daemon's client id stays connected while doctor logs in."""
    client_id = f"ownerlink-{install.mqtt['base_topic']}"
    install.mqtt["client_id"] = client_id
    daemon = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    connected, kicked = threading.Event(), threading.Event()
    daemon.on_connect = lambda *_: connected.set()
    daemon.on_disconnect = lambda *_: kicked.set()
    daemon.connect(install.mqtt["host"], install.mqtt["port"])
    daemon.loop_start()
    try:
        assert connected.wait(5)
        assert checks(install)["broker login"]["status"] == "ok"
        # The broker handles packets in order: a kick would reach us before this PUBACK.
        daemon.publish(f"{install.mqtt['base_topic']}/probe", "x", qos=1).wait_for_publish(5)
        assert not kicked.is_set()
    finally:
        daemon.disconnect()
        daemon.loop_stop()


def test_dynsec_enforcement_is_proven_with_list_clients(
    install: Install, dynsec_broker: MosquittoProcess
) -> None:
    """Mode dynsec: the admin logs in and the plugin answers listClients; a wrong admin fails."""
    install.mqtt.update(
        host=dynsec_broker.host,
        port=dynsec_broker.port,
        username=ADMIN_USER,
        password=ADMIN_PASSWORD,
        enforcement="dynsec",
        admin_username=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
    )
    found = checks(install)
    assert found["exit"] == 0
    assert found["broker enforcement"]["status"] == "ok"
    assert "the plugin answered 'admin' (1 clients)" in found["broker enforcement"]["detail"]
    install.mqtt["admin_password"] = "not-the-admin-password"
    found = checks(install)
    assert found["exit"] == 1
    assert "refused" in found["broker enforcement"]["detail"]
    assert "mqtt.admin_username and mqtt.admin_password" in found["broker enforcement"]["fix"]


def test_dynsec_without_the_plugin_points_at_mosquitto_conf(install: Install) -> None:
    """Mode dynsec on a broker without the plugin: no answer to listClients, load the plugin."""
    install.mqtt.update(
        enforcement="dynsec", admin_username=ADMIN_USER, admin_password=ADMIN_PASSWORD
    )
    found = checks(install, "--timeout", "1")
    assert found["exit"] == 1
    assert "no answer to listClients" in found["broker enforcement"]["detail"]
    assert "load the plugin in mosquitto.conf" in found["broker enforcement"]["fix"]


def test_acl_file_mode_needs_the_rendered_files(install: Install) -> None:
    """Mode acl-file: missing files fail with `ownerlink apps sync`; rendered ones pass."""
    acl_dir = install.root / "mosquitto"
    install.mqtt.update(enforcement="acl-file", acl_dir=str(acl_dir))
    found = checks(install)
    assert found["exit"] == 1
    assert "run: ownerlink apps sync" in found["broker enforcement"]["fix"]
    acl_dir.mkdir()
    (acl_dir / "passwd").write_text("# rendered by ownerlink\n")
    (acl_dir / "acl").write_text("# rendered by ownerlink\n")
    found = checks(install)
    assert found["exit"] == 0 and found["broker enforcement"]["status"] == "ok"


def _tls_broker(own_broker: MosquittoProcess, certificates: Certificates) -> int:
    tls_port = free_port()
    own_broker.extra_config = (
        f"listener {tls_port} 127.0.0.1\ncafile {certificates.ca}\n"
        f"certfile {certificates.cert}\nkeyfile {certificates.key}"
    )
    own_broker.restart()
    return tls_port


def test_tls_is_verified_against_the_configured_ca(
    install: Install, own_broker: MosquittoProcess, certificates: Certificates
) -> None:
    """TLS on: trusted with mqtt.tls.ca_file (and the login works over it), refused without."""
    tls_port = _tls_broker(own_broker, certificates)
    install.mqtt.update(
        host="127.0.0.1", port=tls_port, tls={"enabled": True, "ca_file": str(certificates.ca)}
    )
    found = checks(install)
    assert found["exit"] == 0
    assert "certificate verified for 127.0.0.1" in found["broker TLS"]["detail"]
    assert found["broker login"]["status"] == "ok"
    install.mqtt["tls"] = {"enabled": True}
    found = checks(install)
    assert found["exit"] == 1
    assert "certificate is not trusted" in found["broker TLS"]["detail"]
    assert "set mqtt.tls.ca_file" in found["broker TLS"]["fix"]


def test_tls_against_a_plain_listener_says_which_port(install: Install) -> None:
    """TLS on against a plain MQTT port: the handshake fails and the fix names the TLS port."""
    install.mqtt["tls"] = {"enabled": True}
    found = checks(install)
    assert found["exit"] == 1
    assert found["broker TLS"]["status"] == "fail"
    assert "TLS listener (usually 8883)" in found["broker TLS"]["fix"]
    assert "broker login" not in found


# -- logins ---------------------------------------------------------------------------------------


def test_missing_tokens_ask_for_a_login(install: Install) -> None:
    """No token file: the account fails with `run: ownerlink login home`."""
    TokenStore(install.state_dir).path("home").unlink()
    code, out = run(install)
    assert code == 1
    assert "✗ tokens: home" in out and "not logged in" in out
    assert "fix: run: ownerlink login home" in out


def test_a_login_ford_refused_asks_for_a_new_one(install: Install) -> None:
    """The re-login-needed flag (set after invalid_grant): fail, `run: ownerlink login home`."""
    store = TokenStore(install.state_dir)
    stored = store.load("home")
    assert stored is not None
    store.save("home", replace(stored, access_token=None, relogin_needed=True))
    found = checks(install)
    assert found["exit"] == 1
    assert "re-login needed" in found["tokens: home"]["detail"]
    assert found["tokens: home"]["fix"] == "run: ownerlink login home"


def test_an_expired_refresh_token_asks_for_a_login(install: Install) -> None:
    """Refresh token past its expiry: fail with the login fix; the access token alone is fine."""
    store = TokenStore(install.state_dir)
    stored = store.load("home")
    assert stored is not None
    past = datetime.now(UTC).timestamp() - 3600
    store.save("home", replace(stored, expires_at=past, refresh_expires_at=past))
    found = checks(install)
    assert found["exit"] == 1
    assert found["tokens: home"]["detail"] == "the refresh token expired 60 min ago"
    assert found["tokens: home"]["fix"] == "run: ownerlink login home"


def test_an_expired_access_token_alone_is_normal(install: Install) -> None:
    """An access token past expiry with a live refresh token passes: it renews on next use."""
    store = TokenStore(install.state_dir)
    stored = store.load("home")
    assert stored is not None
    store.save("home", replace(stored, expires_at=datetime.now(UTC).timestamp() - 60))
    found = checks(install)
    assert found["exit"] == 0
    assert "access token expired (renewed on next use)" in found["tokens: home"]["detail"]


# -- the state directory --------------------------------------------------------------------------


def test_an_open_state_directory_fails_with_chmod_700(install: Install) -> None:
    """State directory 0755: fail naming the mode, fix `chmod 700 DIR`."""
    install.state_dir.chmod(0o755)
    code, out = run(install)
    assert code == 1
    assert "is mode 0755" in out
    assert f"fix: chmod 700 {install.state_dir}" in out


def test_a_token_file_others_can_read_fails_with_chmod_600(install: Install) -> None:
    """A token file 0644: the private-files check and the token check both say chmod 600."""
    path = TokenStore(install.state_dir).path("home")
    path.chmod(0o644)
    found = checks(install)
    assert found["exit"] == 1
    assert found["private files"]["fix"] == f"chmod 600 {path}"
    assert f"chmod 600 {path}" in found["tokens: home"]["fix"]


def test_a_state_directory_of_another_user_fails(install: Install) -> None:
    """Doctor run as a different user than the owner of the state: run it as the daemon's user."""
    found = checks(install, probes=Probes(uid=4242))
    assert found["exit"] == 1
    assert "but doctor runs as uid 4242" in found["state directory"]["detail"]
    assert "run doctor as the user the daemon runs as" in found["state directory"]["fix"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any directory")
def test_an_unusable_state_directory_fails_without_a_traceback(install: Install) -> None:
    """A state directory doctor cannot look into: failures saying so, never a crash."""
    install.state_dir.chmod(0)
    try:
        found = checks(install)
    finally:
        install.state_dir.chmod(0o700)
    assert found["exit"] == 1
    assert "not even its owner can use it" in found["state directory"]["detail"]
    assert found["tokens: home"]["status"] == "fail"
    assert found["audit log"]["status"] == "fail"


def test_a_missing_state_directory_fails_and_skips_its_contents(install: Install) -> None:
    """state_dir pointing nowhere: one failure with the command that creates it."""
    missing = install.root / "nowhere"
    code, out = run(install, "--state-dir", str(missing))
    assert code == 1
    assert f"{missing} does not exist" in out and f"install -d -m 700 {missing}" in out
    assert "private files" not in out


def test_an_open_database_is_reported_and_left_as_it_is(install: Install) -> None:
    """ownerlink.db at 0644: `private files` fails, the budget is not read, the mode stays."""
    database = install.state_dir / DB_NAME
    database.chmod(0o644)
    found = checks(install)
    assert found["exit"] == 1
    assert found["private files"]["fix"] == f"chmod 600 {database}"
    assert found["budget"]["status"] == "warn"
    assert database.stat().st_mode & 0o777 == 0o644


def test_an_open_write_ahead_log_is_reported_and_left_as_it_is(install: Install) -> None:
    """ownerlink.db-wal at 0644 under a running daemon (an earlier version made it so under
    umask 022): it holds the database's latest writes, so `private files` fails as for the
    database itself, and the budget is not read the daemon's way, which would chmod it."""
    daemon = Store.open(install.state_dir)
    try:
        daemon.set_meta("written", "by the daemon")
        wal = install.state_dir / f"{DB_NAME}-wal"
        wal.chmod(0o644)
        found = checks(install)
        assert found["exit"] == 1
        assert found["private files"]["fix"] == f"chmod 600 {wal}"
        assert found["budget"]["status"] == "warn"
        assert wal.stat().st_mode & 0o777 == 0o644
    finally:
        daemon.close()


def test_a_damaged_database_fails(install: Install) -> None:
    """A state database that is not SQLite: fail with the restore-or-move-aside advice."""
    for leftover in install.state_dir.glob("ownerlink.db*"):
        leftover.unlink()
    (install.state_dir / "ownerlink.db").write_bytes(b"not a database at all" * 100)
    (install.state_dir / "ownerlink.db").chmod(0o600)
    found = checks(install)
    assert found["exit"] == 1
    assert found["state database"]["status"] == "fail"
    assert "restore the file from a backup" in found["state database"]["fix"]


def test_a_database_newer_than_the_audit_log_fails_with_the_start_over_advice(
    install: Install,
) -> None:
    """The database deleted and made again (by any command) beside the old audit log: doctor
    fails it as the daemon would, naming the record that proves an earlier database."""
    for leftover in install.state_dir.glob("ownerlink.db*"):
        leftover.unlink()
    Store.open(install.state_dir).close()
    found = checks(install)
    assert found["exit"] == 1
    assert found["state database"]["status"] == "fail"
    assert "(app.added) was written by an earlier database" in found["state database"]["detail"]
    assert "mv audit audit-DATE" in found["state database"]["fix"]


def test_a_deleted_database_beside_the_audit_log_fails_as_the_daemon_would_refuse_it(
    install: Install,
) -> None:
    """The database deleted and not yet made again: the daemon would make one and refuse to
    start on it, so doctor fails now (it said "nothing to do") and names the proving record."""
    for leftover in install.state_dir.glob("ownerlink.db*"):
        leftover.unlink()
    found = checks(install)
    assert found["exit"] == 1
    assert found["state database"]["status"] == "fail"
    assert "is missing, but record 1 (app.added)" in found["state database"]["detail"]
    assert "mv audit audit-DATE" in found["state database"]["fix"]
    assert not (install.state_dir / "ownerlink.db").exists()


# -- the audit log --------------------------------------------------------------------------------


def test_a_tampered_audit_log_fails_naming_the_first_bad_record(install: Install) -> None:
    """One record edited by hand: exit 1 and the file, line and seq of that record."""
    path = audit_directory(install.state_dir) / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"app2", b"evil")
    path.write_bytes(b"".join(lines))
    code, out = run(install)
    assert code == 1
    assert "✗ audit log" in out
    assert "broken at audit.jsonl:3 (record 3): edited" in out
    assert "keep the files as evidence" in out


def _hold_head(install: Install, payload: bytes) -> None:
    topic = f"{install.mqtt['base_topic']}/bridge/audit_head"
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(install.mqtt["host"], install.mqtt["port"])
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_a_log_without_the_head_the_broker_holds_fails_as_the_daemon_would(
    install: Install,
) -> None:
    """Records cut off the end: the chain alone is intact, the broker's head says otherwise,
    and the daemon would refuse commands; doctor says so and how to go on."""
    directory = audit_directory(install.state_dir)
    records = [json.loads(line) for line in (directory / "audit.jsonl").read_bytes().splitlines()]
    last = records[-1]
    _hold_head(install, json.dumps({"seq": last["seq"], "hash": last["hash"]}).encode())
    try:
        assert checks(install)["audit log"]["status"] == "ok"
        path = directory / "audit.jsonl"
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-2]))
        found = checks(install)
        assert found["exit"] == 1 and found["audit log"]["status"] == "fail"
        assert "truncated" in found["audit log"]["detail"]
        assert "ownerlink audit forget-head" in found["audit log"]["fix"]
    finally:
        _hold_head(install, b"")


# -- provider and clock ---------------------------------------------------------------------------


def test_a_clock_two_minutes_fast_fails(install: Install) -> None:
    """Local clock 2 min ahead of the server's Date header: the clock check fails with a fix."""
    found = checks(install, probes=shifted(timedelta(minutes=2)))
    assert found["exit"] == 1
    assert found["clock"]["status"] == "fail"
    assert "2 min ahead of" in found["clock"]["detail"]
    assert "timedatectl set-ntp true" in found["clock"]["fix"]


def test_a_clock_behind_is_reported_as_behind(install: Install) -> None:
    """Local clock 45 s slow: fails too, and says behind."""
    found = checks(install, probes=shifted(timedelta(seconds=-45)))
    assert found["clock"]["status"] == "fail"
    assert "behind" in found["clock"]["detail"]


def test_a_clock_within_30_seconds_passes(install: Install) -> None:
    """Ten seconds of skew is inside the tolerance: exit 0."""
    found = checks(install, probes=shifted(timedelta(seconds=10)))
    assert found["exit"] == 0
    assert found["clock"]["status"] == "ok"


def test_an_unreachable_provider_fails(install: Install) -> None:
    """The account's API and token endpoint on a closed port: fail with the network advice."""
    dead = f"http://127.0.0.1:{closed_port()}"
    install.account.update(api_base_url=dead + "/api", token_url=dead + "/oauth/token")
    found = checks(install)
    assert found["exit"] == 1
    assert "ConnectError" in found["provider: home"]["detail"]
    assert "DNS, proxy and firewall" in found["provider: home"]["fix"]
    assert found["clock"]["status"] == "warn"


def test_a_provider_answering_5xx_only_warns(install: Install) -> None:
    """Ford's side failing (HTTP 503) is a warning: nothing for the owner to fix."""
    now = datetime.now(UTC)
    date = now.strftime("%a, %d %b %Y %H:%M:%S GMT")
    transport = httpx.MockTransport(lambda _r: httpx.Response(503, headers={"Date": date}))
    found = checks(install, probes=Probes(transport=transport))
    assert found["exit"] == 0
    assert found["provider: home"]["status"] == "warn"
    assert "HTTP 503" in found["provider: home"]["detail"]
    assert found["clock"]["status"] == "ok"


# -- budget ---------------------------------------------------------------------------------------


def test_an_exhausted_budget_only_warns(install: Install) -> None:
    """Every polling call of the day used: a warning saying when polling resumes, exit 0."""
    install.budget = {"calls_per_day": 10, "calls_per_hour": 10, "command_reserve_pct": 20}
    install.write()
    install.spend(6)  # 2 + 6 = 8 = the read share of 10 calls with a 20 % command reserve
    found = checks(install)
    assert found["exit"] == 0
    assert found["budget: home"]["status"] == "warn"
    assert "8 of 10 calls used" in found["budget: home"]["detail"]
    assert "polling paused until" in found["budget: home"]["detail"]


def test_a_spent_command_reserve_says_commands_are_refused(install: Install) -> None:
    """Every call of the hour used, the reserve too: the warning says so, not that commands
    keep their reserve."""
    install.budget = {"calls_per_day": 100, "calls_per_hour": 10, "command_reserve_pct": 20}
    install.write()
    install.spend(6)  # 2 + 6 = 8: the read share of the hour
    install.spend(2, CallKind.COMMAND)  # and the reserve
    found = checks(install)
    assert found["exit"] == 0
    detail = found["budget: home"]["detail"]
    assert "the command reserve is used up too (last hour): commands are refused" in detail
    assert "keep their reserve" not in found["budget: home"]["fix"]


def test_commands_past_the_reserve_with_calls_left_are_not_said_to_be_refused(
    install: Install,
) -> None:
    """Commands used more than the reserve while reads used little: calls are left, and a
    command may take any of them, so doctor must not say commands are refused."""
    install.budget = {"calls_per_day": 100, "calls_per_hour": 10, "command_reserve_pct": 20}
    install.write()
    install.spend(4, CallKind.COMMAND)  # 2 + 4 = 6 of 10: 4 left, the reads' share has room
    found = checks(install)
    assert found["budget: home"]["status"] == "ok"
    assert "commands are refused" not in found["budget: home"]["detail"]
    install.spend(4, CallKind.COMMAND)  # 10 of 10: now nothing is left for a command
    detail = checks(install)["budget: home"]["detail"]
    assert "the command reserve is used up too (last hour): commands are refused" in detail


def test_nothing_listens_on_a_closed_port() -> None:
    """The helper behind the "down" tests really gives a port nobody listens on."""
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", closed_port()), 1):
        pass


def test_doctor_says_how_the_audit_log_fsyncs_commands(install: Install) -> None:
    """io_uring where the kernel allows it; where it does not (Docker's seccomp), the thread,
    named as such and still a pass: nothing is lost, and seccomp should stay on."""
    blocked = "io_uring_setup failed: syscall not available (ENOSYS)"
    found = checks(install, probes=Probes(fsync_ring=lambda: blocked))
    assert found["audit fsync"]["status"] == "ok"
    assert (
        "on a thread" in found["audit fsync"]["detail"]
        and blocked in found["audit fsync"]["detail"]
    )
    found = checks(install, probes=Probes(fsync_ring=lambda: None))
    assert found["audit fsync"]["detail"].startswith("io_uring")
