"""Fixtures shared by every test: a real Mosquitto broker and unique topic prefixes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.broker import MosquittoProcess, docker_available

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int


def _no_broker(reason: str) -> None:
    # Under CI a missing broker is a failure, never a silent skip.
    if IN_CI:
        pytest.fail(f"no MQTT broker for the tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerAddress]:
    """A real Mosquitto for the whole test session: testcontainers or the binary."""
    if docker_available():
        from testcontainers.mqtt import MosquittoContainer

        with MosquittoContainer() as container:
            yield BrokerAddress(
                container.get_container_host_ip(), int(container.get_exposed_port(1883))
            )
        return
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        _no_broker("mosquitto is not installed and no Docker engine is reachable")
    proc = MosquittoProcess()
    proc.start()
    try:
        yield BrokerAddress(proc.host, proc.port)
    finally:
        proc.close()


@pytest.fixture
def own_broker() -> Iterator[MosquittoProcess]:
    """A private Mosquitto for one test (for restarts, kills and special configs)."""
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        _no_broker("mosquitto is not installed")
    proc = MosquittoProcess()
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def base_topic() -> str:
    """A unique base topic per test so tests sharing a broker never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}"
