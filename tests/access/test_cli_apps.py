"""`ownerlink apps …` end to end: real config files, state directory, audit log and broker."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from bridge.access.apps import AppChange, ChangeKind
from bridge.access.broker import build_enforcement
from bridge.access.sync import SyncLoop
from bridge.audit.log import audit_directory
from bridge.cli import main
from tests.access.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    DAEMON_PASSWORD,
    DAEMON_USER,
    DynsecBroker,
    mqtt_config,
)
from tests.access.support import Hook, Probe, make_harness
from tests.audit.helpers import assert_one_error_line, run_unprivileged


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog to write to this test's captured stderr; undo that after."""
    yield
    structlog.reset_defaults()


def write_config(path: Path, state_dir: Path, **mqtt: Any) -> Path:
    path.write_text(yaml.safe_dump({"state_dir": str(state_dir), "mqtt": mqtt}))
    return path


@pytest.fixture
def none_config(tmp_path: Path, base_topic: str) -> Path:
    """Enforcement `none` and an unreachable broker: alerts are logged, never fatal."""
    return write_config(tmp_path / "config.yaml", tmp_path / "state", port=1, base_topic=base_topic)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def password_in(out: str) -> str:
    match = re.search(r"broker password: (\S+)", out)
    assert match, out
    return match.group(1)


def test_add_prints_the_password_once_and_the_topics(
    none_config: Path, base_topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`apps add` shows the password and the app's topics; list and show never show it again."""
    status, out, _ = run(
        capsys,
        "apps",
        "add",
        "nodered",
        "--name",
        "Node-RED",
        "--scopes",
        "read:status,command:lock",
        "--config",
        str(none_config),
    )
    assert status == 0
    password = password_in(out)
    assert f"publish    {base_topic}/app/nodered/<vehicle>/cmd/lock   (LOCK)" in out
    assert f"subscribe  {base_topic}/+/status" in out
    for command in (("list", "--json"), ("show", "nodered", "--json")):
        status, listed, _ = run(capsys, "apps", *command, "--config", str(none_config))
        assert status == 0 and password not in listed
    docs = json.loads(run(capsys, "apps", "list", "--json", "--config", str(none_config))[1])
    assert docs[0]["id"] == "nodered" and docs[0]["scopes"] == ["command:lock", "read:status"]


def test_list_columns_line_up_however_long_the_scopes(
    none_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table's columns start where their headings do, with a scope list longer than 48."""
    cfg = ("--config", str(none_config))
    many = "read:status,read:health,command:lock,command:unlock,command:remote_start"
    assert run(capsys, "apps", "add", "everything-app", "--scopes", many, *cfg)[0] == 0
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *cfg)[0] == 0
    status, out, _ = run(capsys, "apps", "list", *cfg)
    heading, *rows = out.splitlines()
    assert status == 0 and len(rows) == 2
    starts = [heading.index(name) for name in ("SCOPES", "LAST SEEN", "FLAGS")]
    for row in rows:
        assert all(row[start - 2 : start] == "  " and row[start] != " " for start in starts[:2])
    listed = "command:lock, command:remote_start, command:unlock, read:health, read:status"
    assert listed in rows[0] and len(listed) > 48


@pytest.mark.parametrize("scopes", ["", " , "])
def test_add_without_a_scope_is_a_usage_error_and_adds_nothing(
    none_config: Path, capsys: pytest.CaptureFixture[str], scopes: str
) -> None:
    """`--scopes ""` (an unset shell variable, say) would make an app that can do nothing."""
    cfg = ("--config", str(none_config))
    with pytest.raises(SystemExit) as exited:
        main(["apps", "add", "nr", "--scopes", scopes, *cfg])
    assert exited.value.code == 2
    assert "--scopes: give at least one scope" in capsys.readouterr().err
    status, out, _ = run(capsys, "apps", "list", "--json", *cfg)
    assert status == 0 and json.loads(out) == []


def test_grant_withdraw_revoke_and_their_errors(
    none_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Grant needs --allow-location for location; revoking twice is a one-line error, exit 1."""
    cfg = ("--config", str(none_config))
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *cfg)[0] == 0
    status, _, err = run(capsys, "apps", "grant", "nr", "read:location", *cfg)
    assert status == 1 and err.strip().splitlines()[-1].startswith("error: read:location is opt")
    status, out, _ = run(
        capsys, "apps", "grant", "nr", "read:location", "command:unlock", "--allow-location", *cfg
    )
    assert status == 0 and "read:location" in out
    status, out, _ = run(capsys, "apps", "withdraw", "nr", "read:location", *cfg)
    assert status == 0 and "read:location" not in out
    status, out, _ = run(capsys, "apps", "withdraw", "nr", "read:health,command:unlock", *cfg)
    assert status == 0 and "nr did not hold read:health: nothing to withdraw there" in out
    assert run(capsys, "apps", "revoke", "nr", *cfg)[0] == 0
    status, _, err = run(capsys, "apps", "revoke", "nr", *cfg)
    assert status == 1 and "error: app 'nr' was already revoked" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("add", "a/b", "--scopes", "read:status"), "error: invalid app id 'a/b'"),
        (("add", "nr", "--scopes", "read:vin"), "error: unknown scope 'read:vin'"),
        (("add", "admin", "--scopes", "read:status"), "error: app id 'admin' is reserved"),
        (
            ("add", "owner-web-login", "--scopes", "read:status"),
            "error: app id 'owner-web-login' is reserved",
        ),
        (("grant", "ghost", "read:status"), "error: no app 'ghost'"),
        (("rate-limit", "ghost", "many"), "error: invalid rate limit 'many'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(
    none_config: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    """Every refusal is a single `error: …` line on stderr and exit status 1."""
    status, _, err = run(capsys, "apps", *argv, "--config", str(none_config))
    assert status == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if line.startswith(message))
    ]


def test_allowlist_none_clears_it_as_the_help_says(
    none_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`allowlist APP none` (or no CIDR) lifts the app's own restriction; `none` beside a network
    is refused; each answer is one sentence that says what holds."""
    cfg = ("--config", str(none_config))
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *cfg)[0] == 0
    status, out, _ = run(capsys, "apps", "allowlist", "nr", "192.168.1.0/24", *cfg)
    assert (status, out) == (0, "nr: REST calls allowed only from 192.168.1.0/24\n")
    for argv in (("none",), ()):
        status, out, _ = run(capsys, "apps", "allowlist", "nr", *argv, *cfg)
        assert (status, out) == (0, "nr: REST calls not restricted beyond web.allow_cidrs\n")
        shown = json.loads(run(capsys, "apps", "show", "nr", "--json", *cfg)[1])
        assert shown["allow_cidrs"] == []
        run(capsys, "apps", "allowlist", "nr", "10.0.0.0/8", *cfg)
    status, _, err = run(capsys, "apps", "allowlist", "nr", "none", "10.1.0.0/16", *cfg)
    assert status == 1 and err.startswith("error: 'none' clears the allowlist")
    assert json.loads(run(capsys, "apps", "show", "nr", "--json", *cfg)[1])["allow_cidrs"] == [
        "10.0.0.0/8"
    ]


def test_revoke_and_disable_say_what_happens_to_an_unmanaged_login(
    none_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With enforcement none, Ownerlink cannot remove or block the broker login: the messages say
    the owner must, and no note asks them to create it."""
    cfg = ("--config", str(none_config))
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *cfg)[0] == 0
    status, out, err = run(capsys, "apps", "disable", "nr", *cfg)
    assert status == 0 and "cannot log in" not in out
    assert "disable its login there yourself" in out and "note:" not in err
    status, out, err = run(capsys, "apps", "revoke", "nr", *cfg)
    assert status == 0 and "is removed" not in out
    assert "remove its login there yourself" in out and "note:" not in err


def test_revoke_and_disable_in_acl_file_mode_point_at_the_reload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """acl-file: the login leaves the rendered files; the note says the broker must reload."""
    config = write_config(tmp_path / "c.yaml", tmp_path / "state", enforcement="acl-file", port=1)
    cfg = ("--config", str(config))
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *cfg)[0] == 0
    status, out, err = run(capsys, "apps", "disable", "nr", *cfg)
    assert status == 0 and "taken out of the broker files" in out and "kill -HUP" in err
    status, out, err = run(capsys, "apps", "revoke", "nr", *cfg)
    assert status == 0 and "removed from the broker files" in out and "kill -HUP" in err
    assert "user nr" not in (tmp_path / "state" / "mosquitto" / "acl").read_text()


@pytest.mark.parametrize(
    "argv", [("list",), ("add", "other", "--scopes", "read:status")], ids=["list", "add"]
)
def test_an_unreadable_audit_log_is_one_error_line_and_changes_nothing(
    none_config: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """audit.jsonl the user cannot read: its path, run as the daemon's user; no app is added."""
    cfg = ("--config", str(none_config))
    assert run(capsys, "apps", "add", "nr", "--scopes", "read:status", *cfg)[0] == 0
    log_file = audit_directory(none_config.parent / "state") / "audit.jsonl"
    log_file.chmod(0)
    try:
        done = run_unprivileged(none_config.parent, "apps", *argv, *cfg)
    finally:
        log_file.chmod(0o600)
    assert_one_error_line(done, f"permission denied: {log_file}", "the user the daemon runs as")
    listed = json.loads(run(capsys, "apps", "list", "--json", *cfg)[1])
    assert [app["id"] for app in listed] == ["nr"]


def test_dynsec_without_admin_login_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dynsec without the admin credentials is a config error naming the key."""
    config = write_config(tmp_path / "c.yaml", tmp_path / "state", enforcement="dynsec")
    status, _, err = run(capsys, "apps", "list", "--config", str(config))
    assert status == 2 and "config error: mqtt.admin_username" in err


def test_acl_file_defaults_to_the_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without mqtt.acl_dir the files go to <state_dir>/mosquitto and the reload hint is shown."""
    config = write_config(tmp_path / "c.yaml", tmp_path / "state", enforcement="acl-file", port=1)
    status, _, err = run(
        capsys, "apps", "add", "nr", "--scopes", "read:status", "--config", str(config)
    )
    assert status == 0 and "kill -HUP" in err
    assert "user nr" in (tmp_path / "state" / "mosquitto" / "acl").read_text()


def test_cli_alerts_reach_mqtt_and_the_webhook(
    tmp_path: Path,
    base_topic: str,
    dynsec_broker: DynsecBroker,
    hook: Hook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An `apps add` from the command line publishes its alert event and posts the webhook."""
    config = _dynsec_config(tmp_path, base_topic, dynsec_broker)
    text = yaml.safe_load(config.read_text())
    text["alerts"] = {"webhook_url": hook.url}
    config.write_text(yaml.safe_dump(text))
    assert run(capsys, "apps", "sync", "--config", str(config))[0] == 0  # daemon login
    daemon = Probe(dynsec_broker.host, dynsec_broker.port, DAEMON_USER, DAEMON_PASSWORD)
    assert daemon.connect() and daemon.subscribe(f"{base_topic}/bridge/event")
    try:
        assert (
            run(capsys, "apps", "add", "nr", "--scopes", "read:status", "--config", str(config))[0]
            == 0
        )
        event = json.loads(daemon.next_payload(f"{base_topic}/bridge/event"))
        assert event["event_type"] == "app_added" and event["app"] == "nr"
        assert hook.attempts.get(timeout=5)["body"]["event_type"] == "app_added"
    finally:
        daemon.close()


def _dynsec_config(tmp_path: Path, base_topic: str, broker: DynsecBroker) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        tmp_path / "state",
        host=broker.host,
        port=broker.port,
        base_topic=base_topic,
        discovery_prefix=f"{base_topic}-ha",
        enforcement="dynsec",
        username=DAEMON_USER,
        password=DAEMON_PASSWORD,
        admin_username=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
    )


async def test_revocation_from_the_cli_is_instant_for_the_daemon(
    tmp_path: Path, base_topic: str, dynsec_broker: DynsecBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Within 1 s of `apps revoke` the app is refused, listeners fired, kicked, alerted, audited."""
    config = _dynsec_config(tmp_path, base_topic, dynsec_broker)
    status, out, _ = await asyncio.to_thread(
        run,
        capsys,
        "apps",
        "add",
        "ha",
        "--scopes",
        "read:status",
        "--home-assistant",
        "--config",
        str(config),
    )
    assert status == 0
    enforcement = build_enforcement(
        mqtt_config(dynsec_broker.host, dynsec_broker.port, base_topic, enforcement="dynsec")
    )
    daemon = make_harness(tmp_path / "state", enforcement)
    revoked = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_change(change: AppChange) -> None:
        if change.kind is ChangeKind.REVOKED and change.app_id == "ha":
            loop.call_soon_threadsafe(revoked.set)

    daemon.registry.subscribe(on_change)
    sync = SyncLoop(registry=daemon.registry, poll_interval_s=0.1)
    await sync.start()
    await asyncio.wait_for(sync.in_sync.wait(), 5)  # the first sync creates the daemon's login
    app = Probe(dynsec_broker.host, dynsec_broker.port, "ha", password_in(out))
    assert app.connect()
    watcher = Probe(dynsec_broker.host, dynsec_broker.port, DAEMON_USER, DAEMON_PASSWORD)
    assert watcher.connect() and watcher.subscribe(f"{base_topic}/bridge/event")
    try:
        started = time.monotonic()
        status, _, _ = await asyncio.to_thread(
            run, capsys, "apps", "revoke", "ha", "--config", str(config)
        )
        # The daemon's part, timed from the CLI's return (the CLI's own start-up, fsync and
        # broker round trips are the machine's speed, not the daemon's reaction); the whole
        # with a bound a loaded machine still meets.
        returned = time.monotonic()
        await asyncio.wait_for(revoked.wait(), 1.0)
        assert await asyncio.to_thread(app.disconnected.wait, 1.0)
        assert time.monotonic() - returned < 1.0 and status == 0
        assert time.monotonic() - started < 3.0
        assert daemon.registry.get("ha") is None
        audit = (audit_directory(tmp_path / "state") / "audit.jsonl").read_text()
        assert '"kind":"app.revoked"' in audit
        event = json.loads(
            await asyncio.to_thread(watcher.next_payload, f"{base_topic}/bridge/event")
        )
        assert event["event_type"] == "app_revoked" and event["app"] == "ha"
    finally:
        watcher.close()
        app.close()
        await sync.stop()
        enforcement.stop()
