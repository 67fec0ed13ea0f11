"""Fixtures for the access tests: a Mosquitto running the dynamic-security plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from bridge.config import MqttConfig
from tests.access.support import Hook
from tests.support.broker import MosquittoProcess, dynsec_plugin

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-test-password-1"
DAEMON_USER = "ownerlink"
DAEMON_PASSWORD = "daemon-test-password-1"


@dataclass
class DynsecBroker:
    """A private Mosquitto with the dynamic-security plugin and an `admin` client."""

    proc: MosquittoProcess
    dynsec_file: Path

    @property
    def host(self) -> str:
        return self.proc.host

    @property
    def port(self) -> int:
        return self.proc.port

    def ctrl(self, *args: str) -> str:
        """Run `mosquitto_ctrl dynsec …` as the admin (changes made "by hand")."""
        out = subprocess.run(
            [
                "mosquitto_ctrl",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-u",
                ADMIN_USER,
                "-P",
                ADMIN_PASSWORD,
                "dynsec",
                *args,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def dynsec_broker() -> Iterator[DynsecBroker]:
    """A fresh Mosquitto with dynamic security for one test (skipped where the plugin is absent)."""
    plugin = dynsec_plugin()
    if plugin is None or not shutil.which("mosquitto_ctrl"):
        _unavailable("mosquitto_dynamic_security.so or mosquitto_ctrl is not installed")
    assert plugin is not None
    proc = MosquittoProcess()
    dynsec_file = proc.workdir / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(dynsec_file), ADMIN_USER, ADMIN_PASSWORD],
        check=True,
        capture_output=True,
        timeout=10,
    )
    proc.extra_config = f"plugin {plugin}\nplugin_opt_config_file {dynsec_file}"
    proc.start()
    try:
        yield DynsecBroker(proc, dynsec_file)
    finally:
        proc.stop()


def mqtt_config(host: str, port: int, base_topic: str, **overrides: object) -> MqttConfig:
    """Broker settings for a test: unique base topic and discovery prefix, the daemon login."""
    values: dict[str, object] = {
        "host": host,
        "port": port,
        "base_topic": base_topic,
        "discovery_prefix": f"{base_topic}-ha",
        "username": DAEMON_USER,
        "password": SecretStr(DAEMON_PASSWORD),
        "admin_username": ADMIN_USER,
        "admin_password": SecretStr(ADMIN_PASSWORD),
    }
    values.update(overrides)
    return MqttConfig.model_validate(values)


@pytest.fixture
def hook() -> Iterator[Hook]:
    """A webhook receiver on a free loopback port, in a thread."""
    server = Hook([])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()
