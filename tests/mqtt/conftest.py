"""Fixtures for the MQTT suite: an inbox for MqttClient, a running client, a TLS broker."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.config import MqttConfig
from bridge.mqtt.client import InboundMessage, MqttClient
from tests.support.broker import MosquittoProcess, free_port


class Inbox:
    """Collects what an MqttClient hands to the event loop; lets a test await a topic."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self._new = asyncio.Event()

    def __call__(self, message: InboundMessage) -> None:
        self.messages.append(message)
        self._new.set()

    async def wait_for(
        self, topic: str, payload: bytes | None = None, timeout: float = 5.0
    ) -> InboundMessage:
        async with asyncio.timeout(timeout):
            since = 0
            while True:
                for message in self.messages[since:]:
                    if message.topic == topic and payload in (None, message.payload):
                        return message
                since = len(self.messages)
                self._new.clear()
                await self._new.wait()


@asynccontextmanager
async def running(
    config: MqttConfig, inbox: Callable[[InboundMessage], None] | None = None, **kwargs: Any
) -> AsyncIterator[MqttClient]:
    """A started, connected MqttClient, stopped on exit."""
    client = MqttClient(
        config, loop=asyncio.get_running_loop(), on_message=inbox or (lambda _m: None), **kwargs
    )
    client.start()
    try:
        await client.wait_connected(10)
        yield client
    finally:
        await client.stop()


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsBroker:
    host: str
    port: int  # server certificate for 127.0.0.1 signed by `ca`
    client_cert_port: int  # same, and a client certificate signed by `ca` is required
    wrong_name_port: int  # signed by `ca`, but issued to another host name
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN=Ownerlink test {name}",
        # What a CA certificate must carry for Python 3.13's strict verification (the default).
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )


def _leaf(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=folder,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=folder,
    )


SERVER_EXT = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName={names}
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""
CLIENT_EXT = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def _listener(port: int, folder: Path, cert: str, *, require_client: bool = False) -> str:
    lines = [
        f"listener {port} 127.0.0.1",
        f"cafile {folder / 'ca.crt'}",
        f"certfile {folder / cert}.crt",
        f"keyfile {folder / cert}.key",
    ]
    if require_client:
        lines.append("require_certificate true")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A Mosquitto with three TLS listeners and a CA made for this test module with openssl."""
    if not shutil.which("openssl") or not shutil.which("mosquitto"):
        pytest.skip("openssl and mosquitto are needed for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    _ca(folder, "ca")
    _ca(folder, "other_ca")
    _leaf(folder, "server", "ca", SERVER_EXT.format(names="IP:127.0.0.1,DNS:localhost"))
    _leaf(folder, "elsewhere", "ca", SERVER_EXT.format(names="DNS:broker.elsewhere.example"))
    _leaf(folder, "client", "ca", CLIENT_EXT)
    ports = free_port(), free_port(), free_port()
    extra = "\n".join(
        [
            _listener(ports[0], folder, "server"),
            _listener(ports[1], folder, "server", require_client=True),
            _listener(ports[2], folder, "elsewhere"),
        ]
    )
    proc = MosquittoProcess(extra_config=extra)
    proc.start()
    try:
        yield TlsBroker(
            "127.0.0.1",
            *ports,
            ca=folder / "ca.crt",
            other_ca=folder / "other_ca.crt",
            client_cert=folder / "client.crt",
            client_key=folder / "client.key",
        )
    finally:
        proc.stop()


# -- passwords ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswordBroker:
    host: str
    port: int
    username: str
    password: str


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[PasswordBroker]:
    """A Mosquitto that accepts one username and password, and nobody anonymous."""
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "bridge", "s3cret-pass"],
        check=True,
        capture_output=True,
    )
    proc = MosquittoProcess(extra_config=f"allow_anonymous false\npassword_file {passwords}")
    proc.start()
    try:
        yield PasswordBroker(proc.host, proc.port, "bridge", "s3cret-pass")
    finally:
        proc.stop()
