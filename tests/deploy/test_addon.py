"""The Home Assistant add-on: its start script (ha-addon/run.py) turns the add-on's options and the
Supervisor's MQTT service into settings the daemon accepts, and the manifest files agree.

The Supervisor is a small HTTP server here; no image is built and no real Supervisor runs.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bridge.config import Settings, load_config
from bridge.demo.broker import free_port
from bridge.web.netguard import ip_allowed, parse_ip
from tests.support.broker import MosquittoProcess

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "ha-addon"
BIN = Path(sys.executable).parent
TOKEN = "supervisor-token-5d1e"
BROKER_PASSWORD = "broker-pass-8c2f"
CLIENT_SECRET = "client-secret-77ab"
SUPERVISOR_NETWORK = "172.30.32.2/32"
SECRETS = (TOKEN, BROKER_PASSWORD, CLIENT_SECRET)


def load_addon() -> ModuleType:
    """ha-addon/run.py as a module (compiled here, so no __pycache__ lands in the add-on)."""
    path = ADDON / "run.py"
    module = ModuleType("ownerlink_addon_run")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


addon = load_addon()


# -- a fake Supervisor ----------------------------------------------------------------------------


@dataclass
class FakeSupervisor:
    """Answers `GET /services/mqtt` like the Supervisor: `{"result": "ok", "data": {...}}`."""

    service: dict[str, Any] = field(
        default_factory=lambda: {
            "host": "core-mosquitto",
            "port": 1883,
            "ssl": False,
            "protocol": "3.1.1",
            "username": "addons",
            "password": BROKER_PASSWORD,
            "addon": "core_mosquitto",
        }
    )
    # None: answer normally; else (status, message) for every request.
    failure: tuple[int, str] | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, authorization))
        if authorization != f"Bearer {TOKEN}":
            return 401, {"result": "error", "message": "Unauthorized"}
        if self.failure is not None:
            return self.failure[0], {"result": "error", "message": self.failure[1]}
        if path != "/services/mqtt":
            return 404, {"result": "error", "message": "Service does not exist"}
        return 200, {"result": "ok", "data": self.service}


@pytest.fixture
def supervisor() -> Iterator[FakeSupervisor]:
    fake = FakeSupervisor()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = fake.answer(self.path, self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# -- the add-on's folders, in a temporary directory -----------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> Any:
    """AddonPaths under tmp_path: /data (options.json, state), /config and /share/ownerlink."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    return addon.AddonPaths(
        options=data / "options.json",
        config=tmp_path / "config" / "config.yaml",
        state_dir=data,
        acl_dir=tmp_path / "share" / "ownerlink",
    )


def write_options(paths: Any, **extra: Any) -> None:
    """options.json as the Supervisor writes it: the defaults of config.yaml, then `extra`."""
    options = dict(manifest()["options"])
    options.update(extra)
    paths.options.write_text(json.dumps(options))


def write_user_config(paths: Any, document: dict[str, Any]) -> None:
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(yaml.safe_dump(document))


def base_environ(**extra: str) -> dict[str, str]:
    """The container's environment: what the Ownerlink image sets, plus the Supervisor's token."""
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OWNERLINK_CONFIG": "/config/config.yaml",
        "OWNERLINK_STATE_DIR": "/data",
        "OWNERLINK_WEB__HOST": "0.0.0.0",  # as the root Dockerfile sets it
        "SUPERVISOR_TOKEN": TOKEN,
        "PYTHONDONTWRITEBYTECODE": "1",  # the driver imports run.py from ha-addon/
        **extra,
    }


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What the daemon's own loader makes of the environment the script produced."""
    for name in list(os.environ):
        if name.startswith("OWNERLINK_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("OWNERLINK_"):
            monkeypatch.setenv(name, value)
    return load_config()


def config_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ownerlink"), "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ADDON / "config.yaml").read_text())
    return loaded


# -- the start script -----------------------------------------------------------------------------


def test_options_and_the_mqtt_service_become_the_daemon_settings(
    paths: Any,
    supervisor: FakeSupervisor,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Broker from the Supervisor, level and enforcement from the options, the watchdog allowed."""
    write_options(
        paths,
        log_level="debug",
        ford_client_id="client-id-1",
        ford_client_secret=CLIENT_SECRET,
        ford_application_id="app-id-1",
    )
    environ = base_environ(SUPERVISOR_API=supervisor.url)
    env = addon.prepare(paths, environ)

    assert supervisor.requests == [("/services/mqtt", f"Bearer {TOKEN}")]
    assert env["OWNERLINK_MQTT__HOST"] == "core-mosquitto"
    assert env["OWNERLINK_MQTT__PORT"] == "1883"
    assert env["OWNERLINK_MQTT__USERNAME"] == "addons"
    assert env["OWNERLINK_MQTT__PASSWORD"] == BROKER_PASSWORD
    assert env["OWNERLINK_LOGGING__LEVEL"] == "debug"
    assert env["OWNERLINK_MQTT__ENFORCEMENT"] == "acl-file"
    assert env["OWNERLINK_STATE_DIR"] == str(paths.state_dir)
    assert env["OWNERLINK_CONFIG"] == str(paths.config)
    # The daemon never sees the Supervisor's token: it has no use for it.
    assert "SUPERVISOR_TOKEN" not in env

    settings = settings_from(env, monkeypatch)
    assert settings.mqtt.host == "core-mosquitto" and settings.mqtt.port == 1883
    assert settings.mqtt.username == "addons"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == BROKER_PASSWORD
    assert settings.mqtt.tls.enabled is False
    assert settings.logging.level == "debug"
    assert settings.mqtt.enforcement == "acl-file"
    assert settings.mqtt.acl_dir == paths.acl_dir  # where the Mosquitto add-on can read it
    assert settings.state_dir == paths.state_dir
    assert settings.web.host == "0.0.0.0"  # the watchdog comes from outside
    assert SUPERVISOR_NETWORK in settings.web.allow_cidrs
    assert settings.web.ingress_from == (SUPERVISOR_NETWORK,)  # its Ingress header, from it only
    assert {"127.0.0.0/8", "::1/128"} <= set(settings.web.allow_cidrs)  # the image's HEALTHCHECK
    account = settings.accounts["ford"]
    assert account.provider == "fordconnect"
    assert account.client_id == "client-id-1"
    assert account.client_secret.get_secret_value() == CLIENT_SECRET
    assert account.application_id == "app-id-1"

    # A commented starter file for the owner, private, that adds no settings.
    assert paths.config.is_file()
    assert paths.config.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(paths.config.read_text()) is None

    out, err = capfd.readouterr()
    assert "OWNERLINK_MQTT__PASSWORD" in err  # names what it set
    for secret in SECRETS:
        assert secret not in out + err


def test_the_daemon_accepts_the_result(paths: Any, supervisor: FakeSupervisor) -> None:
    """`ownerlink config check` with the produced environment: exit 0, nothing unknown."""
    write_options(paths, ford_client_id="client-id-1", ford_client_secret=CLIENT_SECRET)
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    result = config_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 account(s)" in result.stdout
    assert "broker core-mosquitto:1883" in result.stdout
    assert f"state in {paths.state_dir}" in result.stdout
    assert "warning" not in result.stderr  # every OWNERLINK_* variable names a setting
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


def test_without_an_account_the_daemon_still_starts_with_defaults(
    paths: Any, supervisor: FakeSupervisor
) -> None:
    """A fresh install (options at their defaults, no config file): config check exits 0."""
    write_options(paths)
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    assert "OWNERLINK_ACCOUNTS" not in env
    result = config_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 account(s)" in result.stdout


def test_the_owners_config_file_wins(
    paths: Any, supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys set in /config/config.yaml are not overridden by options or the image's defaults."""
    own_state = paths.state_dir / "elsewhere"
    user = {
        "state_dir": str(own_state),
        "logging": {"level": "warning"},
        "mqtt": {"enforcement": "none", "username": "ownerlink-bridge"},
        "web": {"allow_cidrs": ["192.168.1.0/24"]},
        "accounts": {"ford": {"client_id": "from-the-file"}},
        "vehicles": {"car": {"account": "ford", "id": "0123456789abcdef0123456789abcdef"}},
    }
    write_user_config(paths, user)
    before = paths.config.read_text()
    write_options(
        paths,
        log_level="debug",
        enforcement="acl-file",
        ford_client_id="from-the-options",
        ford_client_secret=CLIENT_SECRET,
    )
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)

    assert paths.config.read_text() == before  # never rewritten
    for name in (
        "OWNERLINK_STATE_DIR",  # the image's default is dropped, not just left alone
        "OWNERLINK_LOGGING__LEVEL",
        "OWNERLINK_MQTT__ENFORCEMENT",
        "OWNERLINK_MQTT__ACL_DIR",  # enforcement none: no broker files at all
        "OWNERLINK_MQTT__USERNAME",
    ):
        assert name not in env
    # The owner's list stays, with the Supervisor's network added for the watchdog.
    assert json.loads(env["OWNERLINK_WEB__ALLOW_CIDRS"]) == ["192.168.1.0/24", SUPERVISOR_NETWORK]

    settings = settings_from(env, monkeypatch)
    assert settings.state_dir == own_state
    assert settings.logging.level == "warning"
    assert settings.mqtt.enforcement == "none"
    assert settings.mqtt.acl_dir is None
    assert settings.mqtt.username == "ownerlink-bridge"
    # The rest of the broker still comes from the Supervisor.
    assert settings.mqtt.host == "core-mosquitto"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == BROKER_PASSWORD
    assert settings.web.allow_cidrs == ("192.168.1.0/24", SUPERVISOR_NETWORK)
    account = settings.accounts["ford"]
    assert account.client_id == "from-the-file"
    assert account.client_secret.get_secret_value() == CLIENT_SECRET  # filled from the options
    assert set(settings.vehicles) == {"car"}
    result = config_check(env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broker_named_in_the_file_is_used_instead_of_the_supervisors(
    paths: Any, supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mqtt.host in the file: the Supervisor is not asked, and its login is not handed on."""
    write_user_config(paths, {"mqtt": {"host": "broker.lan", "port": 8883}})
    write_options(paths)
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    assert supervisor.requests == []
    assert {name for name in env if name.startswith("OWNERLINK_MQTT__")} == {
        "OWNERLINK_MQTT__ENFORCEMENT",
        "OWNERLINK_MQTT__ACL_DIR",
    }
    settings = settings_from(env, monkeypatch)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.lan", 8883)
    assert settings.mqtt.password is None


def test_tls_from_the_service_is_passed_on(
    paths: Any, supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor.service.update(port=8883, ssl=True)
    write_options(paths)
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    settings = settings_from(env, monkeypatch)
    assert settings.mqtt.tls.enabled is True and settings.mqtt.port == 8883


def test_a_supervisor_without_the_mqtt_service_stops_the_add_on_with_advice(
    paths: Any, supervisor: FakeSupervisor
) -> None:
    """Service not enabled (HTTP 400): one clear error, no retry loop, no secret in it."""
    supervisor.failure = (400, "Service not enabled")
    write_options(paths)
    with pytest.raises(addon.AddonError) as caught:
        addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    message = str(caught.value)
    assert "Service not enabled" in message and "Mosquitto" in message
    assert len(supervisor.requests) == 1
    assert TOKEN not in message


def test_a_missing_token_is_an_error_not_a_silent_default(
    paths: Any, supervisor: FakeSupervisor
) -> None:
    write_options(paths)
    environ = base_environ()
    del environ["SUPERVISOR_TOKEN"]
    with pytest.raises(addon.AddonError, match="SUPERVISOR_TOKEN"):
        addon.prepare(paths, environ, supervisor_url=supervisor.url)
    assert supervisor.requests == []


def test_an_unreadable_options_file_is_an_error(paths: Any, supervisor: FakeSupervisor) -> None:
    paths.options.write_text("{not json")
    with pytest.raises(addon.AddonError, match="options"):
        addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)


def test_a_broken_config_file_is_left_for_the_daemon_to_report(
    paths: Any, supervisor: FakeSupervisor
) -> None:
    """The script does not crash on it; the daemon names the problem and exits 2, as usual."""
    paths.config.parent.mkdir(parents=True)
    paths.config.write_text("mqtt: [unclosed\n")
    write_options(paths)
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    result = config_check(env)
    assert result.returncode == 2
    assert str(paths.config) in result.stderr


def test_the_supervisor_network_passes_the_daemons_allowlist(
    paths: Any, supervisor: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog's address (the Supervisor, 172.30.32.2) gets through; the LAN does not."""
    write_options(paths)
    env = addon.prepare(paths, base_environ(), supervisor_url=supervisor.url)
    cidrs = settings_from(env, monkeypatch).web.allow_cidrs
    assert ip_allowed(parse_ip("172.30.32.2"), cidrs)
    assert ip_allowed(parse_ip("127.0.0.1"), cidrs)
    assert not ip_allowed(parse_ip("192.168.1.20"), cidrs)


# -- the script as the container runs it ----------------------------------------------------------


def run_script(paths: Any, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`python run.py ARGS` as the image's ENTRYPOINT, with the add-on's folders moved to tmp."""
    driver = (
        "import sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(ADDON)!r})\n"
        "import run\n"
        "run.main(run.AddonPaths(\n"
        f"    options=Path({str(paths.options)!r}), config=Path({str(paths.config)!r}),\n"
        f"    state_dir=Path({str(paths.state_dir)!r}), acl_dir=Path({str(paths.acl_dir)!r})))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", driver, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_the_script_becomes_a_daemon_that_logs_in_to_the_supervisors_broker(
    paths: Any, supervisor: FakeSupervisor, own_broker: MosquittoProcess
) -> None:
    """End to end: a password-protected Mosquitto stands in for the Mosquitto add-on. The script
    execs `ownerlink run` in its own process, which logs in with the Supervisor's credentials
    (/healthz says ready only when connected), writes the broker files to /share, and stops
    cleanly on the SIGTERM the Supervisor sends."""
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    passwords = own_broker.workdir / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "addons", BROKER_PASSWORD],
        check=True,
        capture_output=True,
        timeout=10,
    )
    own_broker.extra_config = f"allow_anonymous false\npassword_file {passwords}"
    own_broker.restart()
    supervisor.service.update(host=own_broker.host, port=own_broker.port)
    web_port = free_port()
    write_user_config(paths, {"web": {"port": web_port}})
    write_options(paths)

    proc = run_script(paths, base_environ(SUPERVISOR_API=supervisor.url))
    try:
        deadline, status = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            status = healthz(web_port)
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"healthz {status}, exit {proc.poll()}"
        # exec, not a child: the process the Supervisor started is now the daemon.
        # (The console script's shebang puts the interpreter first: python …/ownerlink run.)
        argv = [
            part for part in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0") if part
        ]
        assert argv[-1] == b"run" and argv[-2].endswith(b"ownerlink"), argv
        assert not any(secret.encode() in b" ".join(argv) for secret in SECRETS)
        assert (paths.acl_dir / "acl").is_file()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    for secret in SECRETS:
        assert secret not in output


def test_arguments_run_that_ownerlink_command_with_the_add_ons_settings(
    paths: Any, supervisor: FakeSupervisor
) -> None:
    """`docker exec … run.py login ford` must see the `ford` account from the options, which
    lives only in the environment the script makes (a plain `ownerlink` there would not)."""
    write_options(paths, ford_client_id="client-id-1", ford_client_secret=CLIENT_SECRET)
    proc = run_script(paths, base_environ(SUPERVISOR_API=supervisor.url), "config", "check")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "config OK" in output and "1 account(s)" in output
    for secret in SECRETS:
        assert secret not in output


def test_the_script_exits_1_when_it_cannot_start(paths: Any, supervisor: FakeSupervisor) -> None:
    """No token (not running under the Supervisor): a one-line reason and exit status 1."""
    write_options(paths)
    env = base_environ(SUPERVISOR_API=supervisor.url)
    del env["SUPERVISOR_TOKEN"]
    proc = run_script(paths, env)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "ownerlink add-on: SUPERVISOR_TOKEN is not set" in output


def test_the_script_uses_only_the_standard_library_and_ownerlinks_dependencies() -> None:
    tree = ast.parse((ADDON / "run.py").read_text())
    allowed = set(sys.stdlib_module_names) | {"__future__", "bridge", "yaml"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in allowed, name


# -- the manifest and the image -------------------------------------------------------------------


def test_build_yaml_builds_from_the_ownerlink_image_of_the_same_version() -> None:
    """Without build.yaml the Supervisor's own base image would be used, and has no ownerlink."""
    config = manifest()
    build = yaml.safe_load((ADDON / "build.yaml").read_text())
    image = f"ghcr.io/ownerlink/ownerlink:{config['version']}"
    assert build["build_from"] == dict.fromkeys(config["arch"], image)
    assert f"ARG BUILD_FROM={image}" in (ADDON / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert config["version"] == project["version"]


def test_the_dockerfile_runs_the_start_script_as_root() -> None:
    lines = [
        line.strip()
        for line in (ADDON / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] in {"root", "0", "0:0", "root:root"}
    assert "COPY run.py /opt/ownerlink-addon/run.py" in lines
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == [
        "python3",
        "/opt/ownerlink-addon/run.py",
    ]
    command = next(line for line in lines if line.startswith("CMD "))
    assert json.loads(command.removeprefix("CMD ")) == ["run"]


def test_the_manifest_options_match_the_schema_and_secrets_are_hidden() -> None:
    config = manifest()
    assert set(config["options"]) <= set(config["schema"])
    assert config["schema"]["ford_client_secret"].startswith("password")
    assert config["services"] == ["mqtt:need"]
    assert {"addon_config:rw", "share:rw"} <= set(config["map"])
    # The watchdog asks the daemon's own port, which the add-on exposes.
    assert config["watchdog"] == "http://[HOST]:[PORT:8088]/healthz"
    assert "8088/tcp" in config["ports"]
    # The sidebar's page is served by the daemon's own listener, for administrators only.
    assert config["ingress"] is True
    assert config["ingress_port"] == 8088
    assert config["panel_admin"] is True
