"""A reusable harness for whole-daemon tests: `ownerlink run` as a subprocess, a simulator, MQTT.

    with running_simulator(vehicles=1, speed=60) as sim, MqttObserver(host, port) as mqtt:
        config = DaemonConfig(tmp_path, sim_url=sim.url, host=host, port=port, base=base_topic,
                              vehicles=sim.aliases()).write()
        login_cli(config)                     # `ownerlink login --print-url`, then --redirect-url
        daemon = DaemonProcess(config)
        daemon.start(); daemon.wait_online(mqtt)
        ...
        daemon.kill()                         # SIGKILL; or daemon.stop() for SIGTERM

Everything the daemon says goes to files under the state directory's parent (`logs/`), one pair
per start, so a test can scan every line afterwards. The simulator runs in the test process on a
thread; its admin API (`/sim/...`) is the ground truth. For runs that need simulated days rather
than real seconds, `SimTimeDaemon` runs the real daemon in-process on the simulator's clock, with
`RecordingTransport` counting every provider call on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.audit.chain import chain_files, parse_line
from bridge.config import Settings
from bridge.daemon import Daemon
from bridge.polling.timers import ApsTimer
from bridge.simulator import Limits, SimClock, Simulator, Timings, serve_in_thread

if TYPE_CHECKING:
    from tests.conftest import BrokerAddress

ACCOUNT = "sim"
ROOT = Path(__file__).resolve().parents[2]
# The sim's published test client; the harness never needs the real thing.
SIM_CLIENT_ID = "ownerlink-sim"
SIM_CLIENT_SECRET = "sim-secret"
SIM_APPLICATION_ID = "sim-app-id"
# Apps every harness config declares: Home Assistant (discovery) and a command-sending app.
HA_APP = "homeassistant"
CHAOS_APP = "chaos"
APP_SCOPES = {
    HA_APP: ["read:status", "read:health", "command:lock", "command:refresh"],
    CHAOS_APP: ["read:status", "command:lock", "command:unlock"],
}
FINAL_STATUSES = frozenset({"rejected", "succeeded", "failed", "timed_out"})
# Generous limits for subprocess work on a shared 2-core machine; each is a deadline, not a sleep.
START_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0


# -- waiting -------------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], Any], timeout: float, *, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; raise AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], Any], timeout: float, *, interval: float = 0.02, what: str = "condition"
) -> Any:
    """`wait_until` for code running beside an in-process daemon: yields to the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


# -- the simulator -------------------------------------------------------------------------------


@dataclass
class SimHandle:
    """The simulator object and its base URL; ground truth is read through the admin API."""

    sim: Simulator
    url: str

    def aliases(self) -> dict[str, str]:
        """`car-1`, `car-2`, … → the simulator's vehicle ids (the slugs the harness configures)."""
        return {f"car-{i + 1}": v.vehicle_id for i, v in enumerate(self.sim.vehicles)}

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.url}{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def vehicles(self) -> list[dict[str, Any]]:
        documents: list[dict[str, Any]] = self.get("/sim/vehicles")["vehicles"]
        return documents

    def accounts(self) -> list[dict[str, Any]]:
        documents: list[dict[str, Any]] = self.get("/sim/accounts")["accounts"]
        return documents

    def executed(self) -> list[dict[str, Any]]:
        """Every command that reached any car, with the simulator's (provider) command id."""
        return [e | {"vehicle_id": v["vehicle_id"]} for v in self.vehicles() for e in v["executed"]]

    def set_faults(self, spec: str) -> None:
        self.post("/sim/faults", {"spec": spec})

    def expire_tokens(self) -> int:
        return int(self.post("/sim/tokens/expire")["expired"])


@contextlib.contextmanager
def running_simulator(
    *,
    vehicles: int = 1,
    seed: int = 11,
    speed: float = 1.0,
    command_delay_s: float = 0.2,
    limits: Limits | None = None,
    faults: str | None = None,
    timings: Timings | None = None,
    start: datetime | None = None,
) -> Iterator[SimHandle]:
    """The simulator over real sockets on a thread, generous limits unless told otherwise.

    Access tokens live 20 simulated minutes *in real time* (as the demo does): the daemon's token
    manager runs on the wall clock, and a sped-up lifetime would make every token look stale.
    """
    sim = Simulator(
        vehicles=vehicles,
        seed=seed,
        clock=SimClock(speed=speed, start=start),
        auto_consent=True,
        admin=True,
        token_lifetime=1200.0 * speed,
        limits=limits or Limits(per_minute=100_000, per_day=10_000_000),
        faults=faults,
        timings=timings or Timings(command_delay_s=command_delay_s),
    )
    with serve_in_thread(sim) as url:
        yield SimHandle(sim, url)


# -- the configuration ---------------------------------------------------------------------------


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A deep merge of two YAML-ready documents (`extra` wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class DaemonConfig:
    """A config file for one daemon under `root`: state in `root/state`, logs in `root/logs`."""

    root: Path
    sim_url: str
    host: str
    port: int
    base: str
    vehicles: dict[str, str]
    discovery_prefix: str | None = None
    web_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_simulator(
        cls, root: Path, sim: SimHandle, broker: BrokerAddress, base: str, **options: Any
    ) -> DaemonConfig:
        """The usual test daemon: the simulator's vehicles, on `broker`, under `base`."""
        return cls(
            root,
            sim_url=sim.url,
            host=broker.host,
            port=broker.port,
            base=base,
            vehicles=sim.aliases(),
            **options,
        )

    @property
    def path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def prefix(self) -> str:
        """The discovery prefix: unique per test unless given (tests may share a broker)."""
        return self.discovery_prefix or f"{self.base}-ha"

    def document(self) -> dict[str, Any]:
        api = f"{self.sim_url}/api/fordconnect/vehicles/v1"
        doc: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "mqtt": {
                "host": self.host,
                "port": self.port,
                "client_id": f"ownerlink-{self.base}",
                "base_topic": self.base,
                "discovery_prefix": self.prefix,
            },
            "accounts": {
                ACCOUNT: {
                    "provider": "fordconnect",
                    "client_id": SIM_CLIENT_ID,
                    "client_secret": SIM_CLIENT_SECRET,
                    "application_id": SIM_APPLICATION_ID,
                    "authorize_url": f"{self.sim_url}/oauth/authorize",
                    "token_url": f"{self.sim_url}/oauth/token",
                    "api_base_url": api,
                    "request_timeout_s": 5,
                }
            },
            "vehicles": {
                alias: {"account": ACCOUNT, "id": vid} for alias, vid in self.vehicles.items()
            },
            "apps": {
                HA_APP: {"scopes": APP_SCOPES[HA_APP], "home_assistant": True},
                CHAOS_APP: {"scopes": APP_SCOPES[CHAOS_APP]},
            },
            # Commands flow every second in these suites: lift the per-minute and budget limits
            # that would otherwise (rightly) refuse them; the provider suite sets its own budget.
            "commands": {"rate_limit_per_minute": 600, "status_poll_interval_s": 0.1},
            "budget": {"calls_per_day": 100_000, "calls_per_hour": 100_000},
            "web": {"enabled": self.web_port is not None, "port": self.web_port or 0},
            "logging": {"level": "info", "format": "json"},
        }
        return merge(doc, self.extra)

    def write(self) -> DaemonConfig:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.path.write_text(yaml.safe_dump(self.document(), sort_keys=False))
        self.path.chmod(0o600)
        return self


# -- the command line ----------------------------------------------------------------------------


def cli(
    *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """`python -m bridge ARGS` (the `ownerlink` command) in a subprocess; never raises on status."""
    return subprocess.run(  # noqa: PLW1510 - the caller checks the status it cares about
        [sys.executable, "-m", "bridge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=child_env(),
    )


def child_env() -> dict[str, str]:
    """The environment for children: ours without OWNERLINK_* (the config file alone decides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNERLINK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def login_cli(config: DaemonConfig, account: str = ACCOUNT) -> str:
    """Log in as the owner would: `--print-url`, follow Ford's (the simulator's) consent, then
    `--redirect-url`. Returns everything both commands printed (for secret scans)."""
    started = cli("login", account, "--print-url", "--no-qr", "--config", str(config.path))
    assert started.returncode == 0, started.stderr
    url = next(w for w in started.stdout.split() if w.startswith("http"))
    consent = httpx.get(url, follow_redirects=False, timeout=10)
    assert consent.status_code in (302, 303, 307), consent.text
    done = cli(
        "login",
        account,
        "--redirect-url",
        consent.headers["location"],
        "--config",
        str(config.path),
    )
    assert done.returncode == 0, done.stderr
    return "\n".join((started.stdout, started.stderr, done.stdout, done.stderr))


def login_direct(config: DaemonConfig) -> None:
    """The same OAuth exchange in-process (the demo's), for tests about something else: two
    Python start-ups less than `login_cli`."""
    from bridge.config import load_config
    from bridge.demo.run import login

    asyncio.run(login(load_config(config.path)))


def audit_verify(config: DaemonConfig) -> subprocess.CompletedProcess[str]:
    """`ownerlink audit verify --config FILE`."""
    return cli("audit", "verify", "--config", str(config.path))


# -- the daemon process --------------------------------------------------------------------------


def _ignore_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class DaemonProcess:
    """`python -m bridge run --config FILE` as a child process; output kept in files per start."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0  # time.monotonic() of the latest start
        self._files: list[Any] = []

    def start(self, *, ignore_hangup: bool = False) -> None:
        """Start it; `ignore_hangup` as `nohup` would (SIGHUP ignored from the start)."""
        if self.alive:
            raise RuntimeError("the daemon is already running")
        self.starts += 1
        out = (self.config.log_dir / f"run-{self.starts}.out").open("wb")
        err = (self.config.log_dir / f"run-{self.starts}.err").open("wb")
        self._files = [out, err]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(self.config.path)],
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env=child_env(),
            preexec_fn=_ignore_hangup if ignore_hangup else None,  # noqa: PLW1509 - no threads use it
        )

    def wait_online(self, mqtt: MqttObserver, timeout: float = START_TIMEOUT_S) -> float:
        """Wait for `<base>/bridge/state` = online published after the latest start; the delay."""
        topic = f"{self.config.base}/bridge/state"
        since = self.started_at

        def online() -> float | None:
            if not self.alive:
                raise AssertionError(f"the daemon exited with {self.returncode}:\n{self.tail()}")
            hit = mqtt.first(topic, b"online", since=since)
            return hit.at if hit else None

        at: float = wait_until(online, timeout, what="the daemon to come online")
        return at - since

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the clean stop; returns the exit status."""
        return self._end(signal.SIGTERM, timeout)

    def hang_up(self, timeout: float = 20.0) -> int:
        """SIGHUP, as when the terminal or ssh session it runs in goes away; the exit status."""
        return self._end(signal.SIGHUP, timeout)

    def kill(self) -> int:
        """SIGKILL (kill -9): no chance to clean up."""
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError(f"the daemon ignored {sig.name} for {timeout:g} s") from None
        finally:
            for handle in self._files:
                handle.close()
            self._files = []
        return code

    def output(self) -> str:
        """Everything every run of the daemon printed, stdout and stderr."""
        parts = []
        for path in sorted(self.config.log_dir.glob("run-*")):
            parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


@contextlib.contextmanager
def daemon_running(config: DaemonConfig, mqtt: MqttObserver) -> Iterator[DaemonProcess]:
    """Start the daemon, wait until online, and always end it (SIGTERM, then SIGKILL)."""
    daemon = DaemonProcess(config)
    daemon.start()
    try:
        daemon.wait_online(mqtt)
        yield daemon
    finally:
        if daemon.alive:
            with contextlib.suppress(AssertionError):
                daemon.stop()


# -- MQTT ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    at: float  # time.monotonic() on receipt
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttObserver:
    """A paho client that records every message on its filters and can publish commands.

    It reconnects within ~0.2 s (the daemon waits at least 1 s), so after a broker restart it is
    usually subscribed again before the daemon republishes; `subscribed` records when (monotonic
    and wall clock), so a test can tell when it was not. A message it receives live has
    `retain=False`; a retained one replayed when it subscribes has `retain=True`. Publishes are
    QoS 1; paho keeps them while disconnected and resends after reconnecting (`acks`: PUBACKs).
    """

    def __init__(
        self,
        host: str,
        port: int,
        filters: tuple[str, ...] = ("#",),
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.filters = host, port, filters
        self.messages: list[Message] = []
        self.acks: dict[int, float] = {}
        self.subscribed: list[tuple[float, float]] = []  # (monotonic, wall) of each SUBACK
        self._triggers: list[tuple[str, bytes, Callable[[], object]]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self._client.max_inflight_messages_set(1000)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    def __enter__(self) -> MqttObserver:
        self._client.connect_async(self.host, self.port, keepalive=10)
        self._client.loop_start()
        wait_until(lambda: self.subscribed, 10, what="the observer to subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters])

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        with self._lock:
            self.subscribed.append((time.monotonic(), time.time()))

    def _on_message(self, _c: paho.Client, _u: Any, message: Any) -> None:
        payload = bytes(message.payload)
        with self._lock:
            self.messages.append(Message(time.monotonic(), message.topic, payload, message.retain))
            fired = [t for t in self._triggers if t[0] == message.topic and t[1] == payload]
            self._triggers = [t for t in self._triggers if t not in fired]
        for _, _, action in fired:
            action()

    def when(self, topic: str, payload: bytes, action: Callable[[], object]) -> None:
        """Run `action` once, on paho's thread, the moment `payload` arrives on `topic` (to act
        with no delay at all, as an automation reacting to the message would)."""
        with self._lock:
            self._triggers.append((topic, payload, action))

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            self.acks[mid] = time.monotonic()

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1 (queued by paho while disconnected); returns the message id."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        return int(info.mid)

    def dump(self, path: Path) -> None:
        """Every message as JSON lines (kept with the run's files for a post-mortem)."""
        with path.open("w") as out:
            for m in self.snapshot():
                payload = m.payload.decode(errors="replace")
                out.write(
                    json.dumps(
                        {"at": m.at, "topic": m.topic, "retain": m.retain, "payload": payload}
                    )
                    + "\n"
                )

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def first(
        self, topic: str, payload: bytes | None = None, *, since: float = 0.0
    ) -> Message | None:
        """The first message on `topic` (with `payload`, if given) received at or after `since`."""
        for message in self.snapshot():
            wanted = payload is None or message.payload == payload
            if message.at >= since and message.topic == topic and wanted:
                return message
        return None

    def on(self, topic_prefix: str, since: float = 0.0) -> list[Message]:
        return [m for m in self.snapshot() if m.at >= since and m.topic.startswith(topic_prefix)]

    def results(self, base: str) -> list[dict[str, Any]]:
        """Every command result under `base`, decoded, in arrival order.

        QoS 1 is at-least-once: a result the broker took but did not acknowledge before a restart
        comes again, byte for byte. Such copies are one result and are dropped here; two results
        the bridge published (another status, another timestamp) always differ.
        """
        out, seen = [], set()
        for message in self.snapshot():
            if message.topic.startswith(f"{base}/app/") and message.topic.endswith("/result"):
                if (message.topic, message.payload) in seen:
                    continue
                seen.add((message.topic, message.payload))
                out.append(message.json() | {"_topic": message.topic, "_at": message.at})
        return out

    def latest_retained_state(
        self, prefixes: tuple[str, ...], since: float = 0.0
    ) -> dict[str, bytes]:
        """Topic → last payload for every topic under `prefixes` (empty payloads are clears)."""
        latest: dict[str, bytes] = {}
        for message in self.snapshot():
            if message.at >= since and message.topic.startswith(prefixes):
                latest[message.topic] = message.payload
        return {t: p for t, p in latest.items() if p}


@dataclass(frozen=True, slots=True)
class Sent:
    """One publish of a command: its id, when, paho's message id (for the PUBACK), which try."""

    id: str
    at: float
    mid: int
    attempt: int = 1


class CommandStream:
    """Publishes `{"action": "LOCK", "id": <unique>}` every `interval_s` on its own thread.

    With `retry_after_s`, it behaves like a careful app: a command with no final result that long
    after its last try is sent again under the same id (the bridge must answer `duplicate_id` if
    it already ran it), until it has an answer. `finish()` stops new commands but keeps
    retrying; `stop()` ends the thread.
    """

    def __init__(
        self,
        mqtt: MqttObserver,
        topic: str,
        *,
        base: str,
        interval_s: float = 1.0,
        prefix: str = "lock",
        retry_after_s: float | None = None,
    ) -> None:
        self.mqtt, self.topic, self.base = mqtt, topic, base
        self.interval_s, self.prefix = interval_s, prefix
        self.retry_after_s = retry_after_s
        self.sent: list[Sent] = []
        self.ids: list[str] = []
        self._new = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="command-stream", daemon=True)

    def start(self) -> CommandStream:
        self._thread.start()
        return self

    def finish(self) -> None:
        """No new commands from now on (retries go on)."""
        self._new = False

    def stop(self) -> None:
        self._new = False
        self._stop.set()
        self._thread.join(10)

    def answered(self) -> set[str]:
        """Ids with a final result (any, a `duplicate_id` refusal included)."""
        return {
            str(r.get("id"))
            for r in self.mqtt.results(self.base)
            if r.get("status") in FINAL_STATUSES
        }

    def unanswered(self) -> list[str]:
        done = self.answered()
        return [cid for cid in self.ids if cid not in done]

    def _run(self) -> None:
        due = time.monotonic()
        # Event.wait paces the stream (a fixed rate), and ends it at once when stop() is called.
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            if self._new:
                self.ids.append(f"{self.prefix}-{len(self.ids) + 1}")
                self._send(self.ids[-1], 1)
            if self.retry_after_s is not None:
                self._retry(self.retry_after_s)
            due += self.interval_s

    def _retry(self, after_s: float) -> None:
        last: dict[str, Sent] = {s.id: s for s in self.sent}
        now = time.monotonic()
        for command_id in self.unanswered():
            previous = last[command_id]
            if now - previous.at >= after_s:
                self._send(command_id, previous.attempt + 1)

    def _send(self, command_id: str, attempt: int) -> None:
        at = time.monotonic()
        mid = self.mqtt.publish(self.topic, json.dumps({"action": "LOCK", "id": command_id}))
        self.sent.append(Sent(command_id, at, mid, attempt))


# -- secrets -------------------------------------------------------------------------------------


def run_sources(
    config: DaemonConfig, mqtt: MqttObserver, *extra: tuple[str, str]
) -> dict[str, str]:
    """Every text a secret must never appear in: daemon output, what the bridge (and the broker,
    for it) published, the audit files, and any `extra` (name, text) pairs."""
    sources = {
        path.name: path.read_text(errors="replace") for path in sorted(config.log_dir.glob("run-*"))
    }
    # Everything on the broker except the commands the test itself sent (they carry codes).
    sources["mqtt"] = "\n".join(
        f"{m.topic} {m.payload.decode(errors='replace')}"
        for m in mqtt.snapshot()
        if "/cmd/" not in m.topic
    )
    for path in chain_files(config.state_dir / "audit"):
        sources[f"audit/{path.name}"] = path.read_text(errors="replace")
    sources.update(dict(extra))
    return sources


def known_secrets(config: DaemonConfig, sim: SimHandle, *tokens: str) -> dict[str, list[str]]:
    """Secret values of a run: tokens (files now, plus any collected earlier), the client secret,
    and the VINs; keys only some tests have (passwords, step-up secret) are added by them."""
    found = set(tokens)
    for doc in token_files_parse(config.state_dir).values():
        found.update(v for k, v in doc.items() if k.endswith("token") and isinstance(v, str))
    return {
        "token": sorted(found),
        "client secret": [SIM_CLIENT_SECRET],
        "vin": [str(v["vin"]) for v in sim.vehicles()],
    }


# -- state on disk -------------------------------------------------------------------------------


def audit_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every parsable audit record, oldest first, across rotated files."""
    records = []
    for path in chain_files(state_dir / "audit"):
        for raw in path.read_bytes().splitlines():
            record = parse_line(raw)
            if record is not None:
                records.append(record)
    return records


def sqlite_integrity(path: Path) -> str:
    """`PRAGMA integrity_check` on a state database (read-only, so a live writer is undisturbed)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def token_files_parse(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Every token file, parsed; raises if one is not a JSON object with an access token field."""
    out = {}
    for path in sorted((state_dir / "tokens").glob("*.json")):
        if path.name.endswith(".login.json"):
            continue
        doc = json.loads(path.read_text())
        assert isinstance(doc, dict) and "access_token" in doc, f"{path} is not a token file"
        out[path.stem] = doc
    return out


def iso(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


PAHO_SOCKET_ERROR = "bridge.mqtt.paho failed to receive on socket"


def error_lines(output: str) -> list[str]:
    """The daemon's JSON log lines at error level or above, and plain-text ERROR lines."""
    found = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.startswith(("ERROR", "CRITICAL")):
                found.append(line)
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
            continue
        found.append(line)
    return found


# -- the daemon in-process, on simulated time ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireCall:
    """One HTTP request the daemon sent to the provider, at simulated time `at` (epoch s)."""

    at: float
    method: str
    path: str
    status: int | None  # None: no answer (timeout, dropped connection)


class _CountedStream(httpx.AsyncByteStream):
    """A response body that says when it is finished with (read to the end, or closed)."""

    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._inner, self._done, self._open = inner, done, True

    async def __aiter__(self) -> Any:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._open:
                self._open = False
                self._done()


class RecordingTransport(httpx.AsyncBaseTransport):
    """The daemon's real HTTP transport, recording every request it sends (the wire truth).

    `in_flight` counts requests whose answer has not been read to the end; `on_response(request,
    response)`, when set, runs before the daemon sees an answer (to stage a race exactly).
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._clock = clock
        self.calls: list[WireCall] = []
        self.in_flight = 0
        self.on_response: Callable[[httpx.Request, httpx.Response], None] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        at = self._clock().timestamp()
        self.in_flight += 1
        try:
            response = await self._inner.handle_async_request(request)
        except Exception:
            self.in_flight -= 1
            self.calls.append(WireCall(at, request.method, request.url.path, None))
            raise
        self.calls.append(WireCall(at, request.method, request.url.path, response.status_code))
        if self.on_response is not None:
            self.on_response(request, response)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CountedStream(response.stream, self._finished)
        return response

    def _finished(self) -> None:
        self.in_flight -= 1

    async def aclose(self) -> None:
        await self._inner.aclose()


class SimTimeDaemon(Daemon):
    """The real Daemon with the simulator's clock as its own, its poll timer sped up to match.

    `Daemon(clock=...)` takes any clock, but builds its Poller with a real-time APScheduler timer:
    a poll planned 15 simulated minutes ahead would wait 15 real minutes. The poll timer is the
    only part that has to know the speed (APScheduler sleeps in real time), so it alone is
    replaced, before `start()` starts it. Token lifetimes are real time already (see
    `running_simulator`); command timeouts and status polling are real time by design.
    """

    def __init__(
        self, settings: Settings, *, sim: SimHandle, transport: httpx.AsyncBaseTransport
    ) -> None:
        super().__init__(settings, clock=sim.sim.now, transport=transport, serve_web=False)
        self.speed = sim.sim.clock.speed

    def _build_poller(self) -> None:
        super()._build_poller()
        self.poller._timer = ApsTimer(clock=self.clock, speed=self.speed)
