"""Fixtures for doctor: a whole owner installation on disk, a simulator, special brokers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.audit.log import AuditLog, audit_directory
from bridge.config import load_config
from bridge.events import CollectingAlerts
from bridge.polling.budget import Budget
from bridge.providers.base import CallKind
from bridge.simulator import Simulator, serve_in_thread
from bridge.store import Store
from tests.conftest import BrokerAddress
from tests.providers.simulated import SIM_CLIENT, connect, log_in, make_sim
from tests.support.broker import MosquittoProcess, dynsec_plugin

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-doctor-password-1"
V1_PATH = "/api/fordconnect/vehicles/v1"


@dataclass
class Install:
    """An owner's installation: config file, state directory, a logged-in account `home`."""

    root: Path
    sim: Simulator
    base: str
    mqtt: dict[str, Any]
    account: dict[str, Any]
    budget: dict[str, Any]
    vehicles: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def write(self) -> Path:
        """(Re)write the config file from the current settings."""
        doc = {
            "state_dir": str(self.state_dir),
            "mqtt": self.mqtt,
            "accounts": {"home": self.account},
            "budget": self.budget,
            "vehicles": self.vehicles,
            "logging": {"level": "error"},
        }
        self.config.write_text(yaml.safe_dump(doc))
        return self.config

    def provider_calls(self) -> int:
        """Every API call the simulator has counted (authenticated ones only)."""
        return sum(meter.calls for meter in self.sim.limiter.meters.values())

    def spend(self, calls: int, kind: CallKind = CallKind.READ) -> None:
        """Charge `calls` calls to the account's budget, as the daemon's polling (or its
        commands) would."""
        settings = load_config(self.config)
        store = Store.open(self.state_dir)
        try:
            budget = Budget(store=store, config=settings.budget, alerts=CollectingAlerts())
            budget.start()
            for _ in range(calls):
                budget.charge("home", kind)
        finally:
            store.close()


async def _log_in(install: Install) -> None:
    """The owner's `ownerlink login home` against the simulator over real sockets."""
    account = connect(load_config(install.config), "home", None)
    try:
        await log_in(account, None)
    finally:
        await account.parts.provider.aclose()


def _write_audit(state_dir: Path) -> None:
    directory = audit_directory(state_dir)
    with AuditLog(directory, clock=lambda: datetime.now(UTC), rotate_bytes=1 << 20) as audit:
        for n in range(5):
            audit.append("app.added", app=f"app{n}", scopes=["read:status"])


@pytest.fixture
def served() -> Iterator[tuple[Simulator, str]]:
    """The simulator over real sockets."""
    sim = make_sim()
    with serve_in_thread(sim) as base:
        yield sim, base


@pytest.fixture
def install(
    tmp_path: Path, served: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> Install:
    """A healthy installation: logged in, a budget with two calls, an intact audit log."""
    sim, base = served
    account = {
        "provider": "fordconnect",
        **SIM_CLIENT,
        "application_id": "sim-app-id",
        "authorize_url": f"{base}/oauth/authorize",
        "token_url": f"{base}/oauth/token",
        "api_base_url": base + V1_PATH,
        "redirect_uri": "http://127.0.0.1:8742/callback",
    }
    mqtt = {"host": broker.host, "port": broker.port, "base_topic": base_topic}
    setup = Install(tmp_path, sim, base, mqtt, account, budget={})
    setup.write()
    Store.open(setup.state_dir).close()
    asyncio.run(_log_in(setup))
    setup.spend(2)
    _write_audit(setup.state_dir)
    return setup


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def dynsec_broker() -> Iterator[MosquittoProcess]:
    """A private Mosquitto with the dynamic-security plugin and an `admin` client."""
    plugin = dynsec_plugin()
    if plugin is None or not shutil.which("mosquitto_ctrl"):
        _unavailable("mosquitto_dynamic_security.so or mosquitto_ctrl is not installed")
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
        yield proc
    finally:
        proc.stop()


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    """Certificates made with the openssl binary (skipped where it is missing)."""
    if not shutil.which("openssl"):
        _unavailable("openssl is not installed")
    folder = tmp_path / "pki"
    folder.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=doctor test CA",
        # What a CA certificate must carry for Python 3.13's strict verification (the default).
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=folder,
    )
    (folder / "san.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
        cwd=folder,
    )
    return Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key")
