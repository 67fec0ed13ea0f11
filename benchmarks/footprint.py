"""Footprint: `ownerlink run` as a subprocess — time to online, steady RSS, idle CPU, and growth.

    .venv/bin/python benchmarks/footprint.py [--quick] [--runs 3] [--json OUT]

One process hosts the simulator (uvicorn on a thread, reached over HTTP) and an MQTT observer; the
benchmark starts its own Mosquitto. Each run starts `ownerlink run --config FILE` with a fresh
state directory and a fresh base topic, then measures from outside the daemon:

- time to online: from `Popen` to the first `<base>/bridge/state` = `online` seen on the broker,
  and to the first `<base>/<vehicle>/status` document (the daemon fully up and publishing);
- steady RSS (psutil) once the run has settled, and CPU % of one core over a quiet window;
- the same with `web.enabled: false`, with the web page on *and opened once* (one request
  for the login page once every vehicle has been polled: the page is built on its first request),
  and beside a long audit log that the start reads through (`write_history`: 40,000 records,
  17 MB), runs of the four interleaved (side by side);
- RSS and CPU with 1, 10, 100 and 500 vehicles on one account (each measured once every vehicle
  has been polled), the per-vehicle RSS slope, and 100 vehicles on 100 accounts for the cost of
  an account.

The helpers here (`Rig`, `Observer`, `DaemonProcess`, `machine`) are shared with fleet.py.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
import uvicorn
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support.broker

from bridge.providers.tokens import StoredTokens, TokenStore  # noqa: E402
from bridge.simulator import Limits, SimClock, Simulator, create_app  # noqa: E402
from tests.support.broker import MosquittoProcess  # noqa: E402

MB = 1024 * 1024
HISTORY_RECORDS = 40_000  # the "history" variant's audit log (see `write_history`)
V1_PATH = "/api/fordconnect/vehicles/v1"
# The simulator must never be what limits a run: no account limit a fleet could reach.
OPEN_LIMITS = Limits(per_minute=1_000_000, per_day=100_000_000, suspend_after=1_000_000)
# A budget big enough for 500 vehicles on one account (listing alone costs one call per vehicle).
BIG_BUDGET = {"calls_per_day": 100_000, "calls_per_hour": 50_000}
HA_SCOPES = ["read:status", "read:health", "command:lock", "command:unlock", "command:refresh"]
# "Idle CPU ≈ 0", made checkable: below half a percent of one core.
IDLE_CPU_TARGET_PCT = 0.5
RSS_TARGET_MB = 60.0
ONLINE_TARGET_S = 2.0


# -- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on (printed with every benchmark)."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    version = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [mosquitto, "-h"], check=False, capture_output=True, text=True, timeout=5
        )
        version = (out.stdout or out.stderr).splitlines()[0].strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "mosquitto": version,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; "
        f"{info['python']}; {info['mosquitto']}; load {info['load_avg_at_start']}",
        flush=True,
    )
    if "daemon_install" in info:
        print(f"daemon under test: {info['daemon_install']}", flush=True)


# -- the simulator, instrumented ---------------------------------------------------------------


class Arrivals:
    """ASGI wrapper recording when each GET reached the simulator (wall clock, path)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.items: list[tuple[float, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            self.items.append((time.time(), scope["path"]))
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.contextmanager
def serve(sim: Simulator) -> Iterator[tuple[str, Arrivals]]:
    """The simulator over real sockets on a thread, every GET's arrival recorded."""
    arrivals = Arrivals(create_app(sim))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        arrivals,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not server.ready.wait(10):
            raise RuntimeError("the simulator did not start")
        yield f"http://127.0.0.1:{port}", arrivals
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# -- watching the broker -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    at: float  # wall clock on arrival (time.time(), comparable with the daemon's clock)
    topic: str
    payload: bytes


class Observer:
    """An MQTT 5 client recording every message under the given filters, with waits."""

    def __init__(self, host: str, port: int, filters: list[str]) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._filters = filters
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-observer-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=60)

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(time.time(), msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def __enter__(self) -> Observer:
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the observer could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def wait(self, predicate: Callable[[list[Message]], Any], timeout: float) -> Any:
        """Wait until `predicate(messages)` is truthy; return its value (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self.messages)
                left = deadline - time.monotonic()
                if value or left <= 0:
                    return value or None
                self._cond.wait(min(left, 0.5))

    def snapshot(self) -> list[Message]:
        with self._cond:
            return list(self.messages)


def first(topic_test: Callable[[str], bool], payload: bytes | None = None) -> Callable[..., Any]:
    """A predicate: the first message whose topic passes (and payload matches), else None."""

    def find(messages: list[Message]) -> Message | None:
        for m in messages:
            if topic_test(m.topic) and (payload is None or m.payload == payload):
                return m
        return None

    return find


def status_topics(base: str) -> Callable[[list[Message]], set[str]]:
    return lambda ms: {
        m.topic for m in ms if m.topic.startswith(base) and m.topic.endswith("/status")
    }


def nth_status(base: str, n: int) -> Callable[[list[Message]], Message | None]:
    """A predicate: the message that brought the n-th vehicle's first status document."""

    def find(messages: list[Message]) -> Message | None:
        seen: set[str] = set()
        for m in messages:
            if m.topic.startswith(base) and m.topic.endswith("/status") and m.topic not in seen:
                seen.add(m.topic)
                if len(seen) >= n:
                    return m
        return None

    return find


# -- a world for daemons: broker, simulator, configs -------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One daemon run: how many vehicles, grouped how into accounts, and its settings."""

    label: str
    vehicles: int = 1
    per_account: int = 1_000_000  # vehicles per account (default: all on one account)
    web: bool = True
    open_page: bool = False  # ask for the owner page once before measuring (it is built then)
    budget: dict[str, Any] = field(default_factory=lambda: dict(BIG_BUDGET))
    polling: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # Records written to the audit log before the measured start (by a first start, then as
    # `ownerlink command`s would while the daemon is stopped): the start reads them all.
    audit_records: int = 0


@dataclass(frozen=True, slots=True)
class Prepared:
    spec: RunSpec
    state_dir: Path
    config: Path
    base: str
    prefix: str
    slugs: dict[str, str]  # slug -> the simulator's vehicle id
    accounts: int


class Rig:
    """Mosquitto, one simulator (over HTTP, GETs timed) and a scratch folder for the runs."""

    def __init__(self, *, vehicles: int, seed: int = 7, sim_speed: float = 1.0) -> None:
        self.sim = Simulator(
            vehicles=vehicles,
            seed=seed,
            clock=SimClock(speed=sim_speed),
            auto_consent=True,
            admin=True,
            limits=OPEN_LIMITS,
            token_lifetime=1200.0 * sim_speed,
        )
        # No per-subscriber queue limit: this process's own observer, sharing a GIL with the
        # simulator, must not lose part of a burst to Mosquitto's default of 1000 queued messages.
        self.broker = MosquittoProcess(extra_config="max_queued_messages 0")
        self.folder = Path(tempfile.mkdtemp(prefix="ownerlink-bench-"))
        self._stack = contextlib.ExitStack()
        self.url = ""
        self.arrivals = Arrivals(None)

    def __enter__(self) -> Rig:
        self.broker.start()
        self._stack.callback(self.broker.stop)
        self.url, self.arrivals = self._stack.enter_context(serve(self.sim))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.broker.workdir, ignore_errors=True)

    def prepare(self, spec: RunSpec) -> Prepared:
        """A state folder with logged-in accounts and a config file for `spec`."""
        run = uuid.uuid4().hex[:8]
        state = self.folder / f"{spec.label}-{run}"
        state.mkdir(mode=0o700)
        ids = [v.vehicle_id for v in self.sim.vehicles[: spec.vehicles]]
        groups = [ids[i : i + spec.per_account] for i in range(0, len(ids), spec.per_account)]
        accounts: dict[str, dict[str, Any]] = {}
        vehicles: dict[str, dict[str, Any]] = {}
        for n, group in enumerate(groups):
            name = f"a{n:03d}"
            self._login(state, name, group, hint=f"{run}-{name}")
            accounts[name] = self._account()
            for vid in group:
                vehicles[f"v{len(vehicles):03d}"] = {"account": name, "id": vid}
        base, prefix = f"bench{run}", f"ha{run}"
        document = self._config(spec, state, base, prefix, accounts, vehicles)
        path = state / "config.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)
        slugs = {slug: v["id"] for slug, v in vehicles.items()}
        return Prepared(spec, state, path, base, prefix, slugs, len(accounts))

    def _login(self, state: Path, name: str, vehicle_ids: list[str], hint: str) -> None:
        """What `ownerlink login` ends with: the account's tokens in the state folder."""
        tokens = self.sim.grant(vehicle=",".join(vehicle_ids), login_hint=hint)
        now = time.time()
        TokenStore(state).save(
            name,
            StoredTokens(
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                expires_at=now + tokens["expires_in"] / self.sim.clock.speed,
                refresh_expires_at=now + tokens["refresh_token_expires_in"],
                obtained_at=now,
            ),
        )

    def _account(self) -> dict[str, Any]:
        client = self.sim.auth.client
        return {
            "provider": "fordconnect",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "application_id": client.application_id,
            "authorize_url": f"{self.url}/oauth/authorize",
            "token_url": f"{self.url}/oauth/token",
            "api_base_url": f"{self.url}{V1_PATH}",
        }

    def _config(
        self,
        spec: RunSpec,
        state: Path,
        base: str,
        prefix: str,
        accounts: dict[str, Any],
        vehicles: dict[str, Any],
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "state_dir": str(state),
            "mqtt": {
                "host": self.broker.host,
                "port": self.broker.port,
                "client_id": f"ownerlink-{base}",
                "base_topic": base,
                "discovery_prefix": prefix,
            },
            "accounts": accounts,
            "vehicles": vehicles,
            "apps": {
                "homeassistant": {"name": "HA", "scopes": HA_SCOPES, "home_assistant": True},
            },
            "budget": spec.budget,
            "web": {"enabled": spec.web, "port": 0},
            "logging": {"level": "warning", "format": "json"},
        }
        if spec.polling:
            document["polling"] = spec.polling
        return document


# -- the daemon as a process -------------------------------------------------------------------


# Where the daemon under test is installed the way users install it (see runtime_install).
RUNTIME_VENV = ROOT / ".venv-runtime"


class _Install:
    python: Path | None = None  # the daemon's interpreter; None: this one's (--dev-venv)


def runtime_install() -> None:
    """Measure the daemon as `pip install .` gives it to a user (the Docker image, pipx on a Pi):
    the project and its runtime dependencies in an environment of their own, no test tools.

    The development environment also holds the test tools, and some of them change what the
    daemon loads: httpx imports rich and pygments for its command line when they are there,
    structlog imports rich and greenlet. That is about 4 MB the daemon would never carry when
    installed. The environment is made on first use; `pip install` of a folder reinstalls the
    project every time (and adds any dependency pyproject.toml gained), so the figures are this
    checkout's.
    """
    python = RUNTIME_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {RUNTIME_VENV.name} (runtime dependencies only) ...", file=sys.stderr)
        _quietly(sys.executable, "-m", "venv", str(RUNTIME_VENV))
    pip = (str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check")
    _quietly(*pip, str(ROOT))
    _Install.python = python


def _quietly(*command: str) -> None:
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)


def add_install_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dev-venv",
        action="store_true",
        help="run the daemon from this environment (with the test tools) instead of a "
        "runtime-only install in .venv-runtime",
    )


def choose_install(args: argparse.Namespace) -> str:
    """Set up the daemon's environment as asked; returns its name for the report."""
    if args.dev_venv:
        return "development environment (test tools installed)"
    runtime_install()
    return "runtime-only install (`pip install .`)"


def ownerlink_command() -> list[str]:
    if _Install.python is not None:
        return [str(_Install.python.with_name("ownerlink"))]
    script = Path(sys.executable).with_name("ownerlink")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bridge"]


class DaemonProcess:
    """`ownerlink run --config FILE` in a subprocess, observed with psutil."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.log_path = prepared.state_dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.started_at = 0.0  # wall clock, just before Popen

    def start(self) -> None:
        env = {**os.environ, **self.prepared.spec.env}
        log = self.log_path.open("wb")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [*ownerlink_command(), "run", "--config", str(self.prepared.config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        log.close()
        self.ps = psutil.Process(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def uss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_full_info().uss)

    def web_port(self) -> int:
        """The port the daemon listens on for its web page (configured as 0: a free one)."""
        assert self.ps is not None
        for conn in self.ps.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                return int(conn.laddr.port)
        raise RuntimeError("the daemon is not listening")

    def threads(self) -> int:
        assert self.ps is not None
        return int(self.ps.num_threads())

    def stop(self, timeout: float = 20.0) -> tuple[int | None, float]:
        """SIGTERM; the exit status and how long the daemon took to stop."""
        if self.proc is None:
            return None, 0.0
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, time.monotonic() - began

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": line, "level": "raw"})
        return out


def problems(lines: list[dict[str, Any]]) -> dict[str, int]:
    """Warnings and errors the daemon logged, counted by event."""
    counts: dict[str, int] = {}
    for line in lines:
        if line.get("level") in ("warning", "error", "critical", "raw"):
            key = f"{line.get('level')}: {str(line.get('event'))[:80]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


# -- one footprint run -------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    vehicles: int
    accounts: int
    web: bool
    online_s: float | None
    first_status_s: float | None
    all_polled_s: float | None
    polled: int
    rss_mb: float
    uss_mb: float
    cpu_pct: float
    window_s: float
    threads: int
    stop_s: float
    exit_code: int | None
    log_problems: dict[str, int]


def measure(rig: Rig, spec: RunSpec, *, settle_s: float, window_s: float) -> RunResult:
    """Start the daemon, wait until online and every vehicle polled, settle, then sample."""
    prepared = rig.prepare(spec)
    base = prepared.base
    if spec.audit_records:
        write_history(rig, prepared)
    with Observer(rig.broker.host, rig.broker.port, [f"{base}/#"]) as observer:
        daemon = DaemonProcess(prepared)
        daemon.start()
        try:
            online = observer.wait(first(lambda t: t == f"{base}/bridge/state", b"online"), 30)
            status = observer.wait(first(lambda t: t.endswith("/status")), 30)
            # An account's vehicles are first polled 0.5 s apart: N on one account need ~N/2 s.
            everyone = observer.wait(nth_status(base, spec.vehicles), 30 + spec.vehicles * 0.6)
            polled = len(status_topics(base)(observer.snapshot()))
            all_at = everyone.at if everyone else None
            if spec.open_page:
                open_page(daemon.web_port())
            quiet_from = max(daemon.started_at + settle_s, (all_at or time.time()) + 5)
            time.sleep(max(0.0, quiet_from - time.time()))
            cpu, rss, uss = sample(daemon, window_s)
            threads = daemon.threads()
        finally:
            code, stop_s = daemon.stop()
    t0 = daemon.started_at
    return RunResult(
        label=spec.label,
        vehicles=spec.vehicles,
        accounts=prepared.accounts,
        web=spec.web,
        online_s=online.at - t0 if online else None,
        first_status_s=status.at - t0 if status else None,
        all_polled_s=all_at - t0 if all_at else None,
        polled=polled,
        rss_mb=rss / MB,
        uss_mb=uss / MB,
        cpu_pct=cpu,
        window_s=window_s,
        threads=threads,
        stop_s=stop_s,
        exit_code=code,
        log_problems=problems(daemon.log_lines()),
    )


def write_history(rig: Rig, prepared: Prepared) -> None:
    """A month of an owner's commands in the audit log, as `ownerlink command` writes them while
    the daemon is stopped (a short first start creates the state database and the log), so the
    measured start reads them all: what the first start after an upgrade or a long stop does.
    At about 430 bytes a record, 40,000 are a full rotated file (10 MiB) and 7 MB more."""
    from bridge.audit.log import AuditLog, audit_directory

    base = prepared.base
    with Observer(rig.broker.host, rig.broker.port, [f"{base}/bridge/state"]) as observer:
        daemon = DaemonProcess(prepared)
        daemon.start()
        try:
            observer.wait(first(lambda t: t == f"{base}/bridge/state", b"online"), 30)
        finally:
            daemon.stop()
    ticks = itertools.count()
    month_ago = datetime.now(UTC) - timedelta(days=30)
    log = AuditLog(
        audit_directory(prepared.state_dir),
        clock=lambda: month_ago + timedelta(seconds=30 * next(ticks)),
        rotate_bytes=10 * MB,
    )
    log.open()
    try:
        for n in range(prepared.spec.audit_records // 2):
            command = {
                "id": f"{n:032x}",
                "app": "owner",
                "vehicle": next(iter(prepared.slugs)),
                "command": "lock",
                "action": "LOCK",
                "source": "owner",
                "scope": "command:lock",
            }
            log.append("command.decision", decision="allowed", reason="ok", **command)
            log.append("command.outcome", status="succeeded", reason="ok", detail="", **command)
    finally:
        log.close()


def open_page(port: int) -> None:
    """What an owner's first visit does: ask for the login page (the page is built for it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=30) as answer:
        if answer.status != 200:
            raise RuntimeError(f"the owner page answered {answer.status}")


def sample(daemon: DaemonProcess, window_s: float) -> tuple[float, float, float]:
    """CPU % of one core over the window, and the median RSS sampled each second in it; USS."""
    cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
    rss = [daemon.rss()]
    while time.monotonic() - t0 < window_s:
        time.sleep(min(1.0, max(0.0, window_s - (time.monotonic() - t0))))
        rss.append(daemon.rss())
    cpu = 100.0 * (daemon.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    return cpu, statistics.median(rss), daemon.uss()


# -- the benchmark -----------------------------------------------------------------------------


def median_of(runs: list[RunResult], attr: str) -> float | None:
    values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
    return statistics.median(values) if values else None


def fit(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Least-squares line through (vehicles, MB): slope (MB/vehicle), intercept, R²."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in points)
    return slope, intercept, 1.0 - ss_res / ss_tot if ss_tot else 1.0


def run_footprint(quick: bool, runs: int) -> dict[str, Any]:
    settle, window = (8.0, 5.0) if quick else (20.0, 10.0)
    sizes = [10] if quick else [10, 100, 500]
    results: list[RunResult] = []
    with Rig(vehicles=max(sizes)) as rig:
        for i in range(runs):
            # Alternate which variant goes first, so neither always runs on a warmer machine.
            variants = [
                RunSpec(label="web"),
                RunSpec(label="webopen", open_page=True),
                RunSpec(label="noweb", web=False),
                RunSpec(label="history", audit_records=HISTORY_RECORDS),
            ]
            for spec in variants if i % 2 == 0 else variants[::-1]:
                results.append(report(measure(rig, spec, settle_s=settle, window_s=window)))
        for n in sizes:
            spec = RunSpec(label=f"{n}v-1a", vehicles=n)
            results.append(report(measure(rig, spec, settle_s=settle, window_s=window)))
        if not quick:
            spec = RunSpec(label="100v-100a", vehicles=100, per_account=1)
            results.append(report(measure(rig, spec, settle_s=settle, window_s=window)))
    return summarise(results, quick=quick, runs=runs)


def report(r: RunResult) -> RunResult:
    def s(x: float | None) -> str:
        return "  n/a" if x is None else f"{x:5.2f}"

    print(
        f"{r.label:10} vehicles {r.vehicles:4d} accounts {r.accounts:3d} "
        f"web {'on ' if r.web else 'off'} online {s(r.online_s)} s  "
        f"first status {s(r.first_status_s)} s  all polled "
        f"{s(r.all_polled_s)} s ({r.polled})  RSS {r.rss_mb:6.1f} MB  USS {r.uss_mb:6.1f} MB  "
        f"CPU {r.cpu_pct:5.2f} % over {r.window_s:.0f} s  threads {r.threads}  "
        f"stop {r.stop_s:.2f} s exit {r.exit_code}"
        + (f"  log: {r.log_problems}" if r.log_problems else ""),
        flush=True,
    )
    return r


def summarise(results: list[RunResult], *, quick: bool, runs: int) -> dict[str, Any]:
    by = {
        label: [r for r in results if r.label == label]
        for label in dict.fromkeys(r.label for r in results)
    }
    variants: dict[str, dict[str, Any]] = {}
    for label in ("web", "webopen", "noweb", "history"):
        rs = by.get(label, [])
        variants[label] = {
            k: median_of(rs, k)
            for k in ("online_s", "first_status_s", "rss_mb", "uss_mb", "cpu_pct", "stop_s")
        } | {"runs": len(rs)}
    scale: list[dict[str, Any]] = [
        {
            "vehicles": 1,
            "accounts": 1,
            "rss_mb": variants["web"]["rss_mb"],
            "cpu_pct": variants["web"]["cpu_pct"],
            "all_polled_s": median_of(by["web"], "all_polled_s"),
        }
    ]
    for label, rs in by.items():
        if label.endswith("v-1a"):
            r = rs[0]
            scale.append(
                {
                    "vehicles": r.vehicles,
                    "accounts": 1,
                    "rss_mb": r.rss_mb,
                    "cpu_pct": r.cpu_pct,
                    "all_polled_s": r.all_polled_s,
                }
            )
    points = [(p["vehicles"], p["rss_mb"]) for p in scale]
    slope, intercept, r2 = fit(points)
    steps = [
        {"from": a[0], "to": b[0], "kb_per_vehicle": (b[1] - a[1]) * 1024 / (b[0] - a[0])}
        for a, b in itertools.pairwise(points)
    ]
    per_account = None
    if "100v-100a" in by and "100v-1a" in by:
        per_account = (by["100v-100a"][0].rss_mb - by["100v-1a"][0].rss_mb) * 1024 / 99
    web, noweb = variants["web"], variants["noweb"]
    targets = {
        "rss_le_60mb_one_vehicle": max(web["rss_mb"], noweb["rss_mb"]) <= RSS_TARGET_MB,
        "rss_le_60mb_after_reading_a_long_audit_log": variants["history"]["rss_mb"] is not None
        and variants["history"]["rss_mb"] <= RSS_TARGET_MB,
        "idle_cpu_approx_0": max(web["cpu_pct"], noweb["cpu_pct"]) <= IDLE_CPU_TARGET_PCT,
        "online_within_2s": max(web["online_s"] or 99, noweb["online_s"] or 99) <= ONLINE_TARGET_S,
        "first_status_within_2s": max(web["first_status_s"] or 99, noweb["first_status_s"] or 99)
        <= ONLINE_TARGET_S,
        "rss_linear_in_vehicles": r2 >= 0.98 if len(points) > 2 else None,
    }
    return {
        "benchmark": "footprint",
        "mode": "quick" if quick else "full",
        "runs_per_variant": runs,
        "variants": variants,
        "scale": scale,
        "slope_kb_per_vehicle": slope * 1024,
        "intercept_mb": intercept,
        "r2": r2,
        "steps": steps,
        "per_account_kb": per_account,
        "targets": targets,
        "results": [asdict(r) for r in results],
    }


def print_summary(summary: dict[str, Any]) -> None:
    v = summary["variants"]
    print("\nmedians of", summary["runs_per_variant"], "runs (one vehicle):")
    names = {
        "web": "web on",
        "webopen": "web on, page opened",
        "noweb": "web off",
        "history": f"web on, after reading {HISTORY_RECORDS} audit records",
    }
    for label in ("web", "webopen", "noweb", "history"):
        x = v[label]
        if not x["runs"]:
            continue
        print(
            f"  {names[label]}: online {x['online_s']:.2f} s, "
            f"first status {x['first_status_s']:.2f} s, RSS {x['rss_mb']:.1f} MB "
            f"(USS {x['uss_mb']:.1f}), "
            f"idle CPU {x['cpu_pct']:.2f} %"
        )
    print(
        f"  web page costs {v['web']['rss_mb'] - v['noweb']['rss_mb']:+.1f} MB RSS "
        f"(ratio {v['web']['rss_mb'] / v['noweb']['rss_mb']:.2f}) until it is opened, "
        f"{v['webopen']['rss_mb'] - v['noweb']['rss_mb']:+.1f} MB once it was"
    )
    print(
        "RSS by vehicles (one account): "
        + ", ".join(f"{p['vehicles']}: {p['rss_mb']:.1f} MB" for p in summary["scale"])
    )
    print(
        f"  slope {summary['slope_kb_per_vehicle']:.1f} KB/vehicle, R² {summary['r2']:.4f}; steps "
        + ", ".join(
            f"{s['from']}→{s['to']}: {s['kb_per_vehicle']:.1f} KB" for s in summary["steps"]
        )
    )
    if summary["per_account_kb"] is not None:
        print(f"  an extra account costs {summary['per_account_kb']:.0f} KB")
    t = summary["targets"]
    print(
        "SUMMARY: footprint "
        + ", ".join(
            f"{k} {'PASS' if ok else ('n/a' if ok is None else 'FAIL')}" for k, ok in t.items()
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run each, short windows")
    parser.add_argument("--runs", type=int, default=None, help="runs per variant (default 3)")
    parser.add_argument("--json", type=Path, help="write the results here")
    add_install_option(parser)
    args = parser.parse_args()
    info = machine() | {"daemon_install": choose_install(args)}
    print_machine(info)
    runs = args.runs or (1 if args.quick else 3)
    began = time.monotonic()
    summary = run_footprint(args.quick, runs) | {"machine": info}
    summary["wall_s"] = time.monotonic() - began
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
