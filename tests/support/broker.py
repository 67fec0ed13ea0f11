"""A real Mosquitto for tests: a testcontainers container where Docker runs, else the binary."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.demo.broker import free_port

DYNSEC_PLUGIN_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/usr/lib/mosquitto",
    "/usr/local/lib",
)


def dynsec_plugin() -> Path | None:
    for folder in DYNSEC_PLUGIN_DIRS:
        candidate = Path(folder) / "mosquitto_dynamic_security.so"
        if candidate.exists():
            return candidate
    return None


@dataclass
class MosquittoProcess:
    """A Mosquitto binary on a free loopback port with a temporary config; restartable."""

    extra_config: str = ""
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ownerlink-mq-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        # `user root`: started as root, Mosquitto otherwise drops to the mosquitto user and can
        # no longer read files in our private temporary folder.
        lines = [
            f"listener {self.port} {self.host}",
            "user root" if os.geteuid() == 0 else "",
            "persistence false",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type all",
        ]
        if "allow_anonymous" not in self.extra_config and "plugin " not in self.extra_config:
            lines.append("allow_anonymous true")
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")

    def start(self) -> None:
        self.write_config()
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.host, self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the broker and remove its temporary folder (config, log, plugin files)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {err}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True
