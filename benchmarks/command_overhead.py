"""Command overhead: MQTT command in → provider request out, the pipeline beside a minimal relay.

    .venv/bin/python benchmarks/command_overhead.py [--runs 5] [--commands 100] [--pause-ms 20]
                                                    [--json OUT]

One process, one Mosquitto (started here on a free port), one simulator served over HTTP on a
thread. Three paths take turns, run by run, so they see the same machine state:

- relay: a paho client whose `on_message` writes one line to an O_APPEND file, fsyncs it and
  POSTs the same FordConnect lock request with a synchronous httpx client. The floor: nothing is
  checked, nothing is chained.
- pipeline: the daemon's own MQTT adapter (`MqttClient`) hands the message to the event loop;
  the `CommandPipeline` parses and decides it (the app read from the registry's SQLite table, as
  the daemon does for every command so that a revocation counts at once; scopes, age, rate
  limits, the budget pre-check),
  writes the hash-chained `command.decision` record (io_uring fsyncs it, as in the daemon), queues
  it for the vehicle, and the FordConnect provider charges the persisted budget, builds the POST
  and holds it until the record's fsync has returned. This is what the daemon does.
- pipeline, free gate: the same without the budget (no pre-check, no charge), to show its cost.

Each pipeline run starts on a fresh state directory, so the budget holds what one run spent
(at most two calls per command) rather than everything the benchmark ever did: a real account
never holds more than a day's budget (250 calls by default).

Measured per command: from the moment paho delivered the message (paho's network thread) to the
moment httpx hands the POST to its transport (a recording transport wraps the real one; the
pipeline's request reaches it only after the decision record is durable). Each
command completes before the next is published, so queueing never enters the figure. The first
`--warmup` commands of each path are not counted. The total is also split where the message is
handed to the HTTP side: for the relay when its fsync returns, for the pipeline when
`provider.execute` is called (everything before is the command path itself: hand-over to the
event loop, checks, the audit record, the per-vehicle queue; everything after is the provider:
token, budget charge, httpx, and any wait left for the audit fsync).

Before each command the publisher sleeps `--pause-ms` (20 ms), so every command meets an idle
machine as it would in life. On virtual machines an idle CPU is slow to get going again: the
first millisecond of work after a pause costs several times what it costs on a busy CPU, so the
path that does more work (the pipeline) pays more of that. `--pause-ms 1` shows the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support.broker: the throwaway Mosquitto the tests use

from bridge import logs  # noqa: E402
from bridge.access.apps import AppRegistry  # noqa: E402
from bridge.access.broker import NoEnforcement  # noqa: E402
from bridge.audit.log import AuditLog, audit_directory  # noqa: E402
from bridge.audit.ring import open_ring  # noqa: E402
from bridge.commands.assemble import budget_check, build_pipeline, vehicle_routes  # noqa: E402
from bridge.commands.pipeline import CommandPipeline, InboundCommand  # noqa: E402
from bridge.config import (  # noqa: E402
    AccountConfig,
    AppConfig,
    BudgetConfig,
    CommandsConfig,
    MqttConfig,
    Settings,
    VehicleConfig,
)
from bridge.events import CollectingAlerts  # noqa: E402
from bridge.model import Scope  # noqa: E402
from bridge.mqtt.client import InboundMessage, MqttClient  # noqa: E402
from bridge.polling.budget import Budget  # noqa: E402
from bridge.providers.base import CallGate, FreeGate, Provider  # noqa: E402
from bridge.providers.factory import build_providers  # noqa: E402
from bridge.providers.fordconnect import v1_headers  # noqa: E402
from bridge.providers.tokens import StoredTokens, TokenStore  # noqa: E402
from bridge.simulator import Limits, Simulator, Timings, serve_in_thread  # noqa: E402
from bridge.store import Store  # noqa: E402
from tests.support.broker import MosquittoProcess  # noqa: E402

V1 = "/api/fordconnect/vehicles/v1"
OPEN_LIMITS = Limits(per_minute=10**6, per_day=10**8, suspend_after=10**6)
WAIT_S = 10.0
PAUSE_S = 0.02
TARGET_P50_MS, TARGET_P99_MS, TARGET_RATIO = 5.0, 20.0, 1.5


# -- measuring the moment a request is sent ----------------------------------------------------


class Stamps:
    """Monotonic times at which command POSTs were handed to the network (thread-safe)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def stamp(self, request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/lock"):
            with self.lock:
                self.times.append(time.monotonic())


class AsyncRecorder(httpx.AsyncBaseTransport):
    def __init__(self, stamps: Stamps) -> None:
        self.stamps = stamps
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.stamps.stamp(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncRecorder(httpx.BaseTransport):
    def __init__(self, stamps: Stamps) -> None:
        self.stamps = stamps
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.stamps.stamp(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


# -- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    broker: MosquittoProcess
    base: str
    sim: Simulator
    state_dir: Path
    settings: Settings
    vehicle_id: str
    publisher: paho.Client
    pause_s: float = PAUSE_S
    results: dict[str, list[float]] = field(default_factory=dict)


def make_settings(
    state_dir: Path, base: str, broker: MosquittoProcess, vehicle_id: str
) -> Settings:
    account = AccountConfig(
        provider="fordconnect",
        client_id="ownerlink-sim",
        client_secret="sim-secret",
        application_id="sim-app-id",
        token_url=f"{base}/oauth/token",
        authorize_url=f"{base}/oauth/authorize",
        api_base_url=base + V1,
    )
    return Settings(
        state_dir=state_dir,
        accounts={"home": account},
        vehicles={"car": VehicleConfig(account="home", id=vehicle_id)},
        apps={"bench": AppConfig(scopes=frozenset({Scope.COMMAND_LOCK}))},
        mqtt=MqttConfig(
            host=broker.host,
            port=broker.port,
            base_topic="bench",
            client_id=f"bench-{uuid.uuid4().hex[:6]}",
        ),
        # The limits allow a run's worth of commands; the poll interval lets each finish at once.
        commands=CommandsConfig(rate_limit_per_minute=600, status_poll_interval_s=0.001),
        budget=BudgetConfig(calls_per_day=100_000, calls_per_hour=100_000),
    )


def log_in(sim: Simulator, state_dir: Path) -> str:
    """Tokens as if the owner had logged in; returns the access token (the relay needs it)."""
    tokens = sim.grant(vehicle="all")
    now = time.time()
    TokenStore(state_dir).save(
        "home",
        StoredTokens(
            tokens["access_token"],
            tokens["refresh_token"],
            now + tokens["expires_in"],
            obtained_at=now,
        ),
    )
    return str(tokens["access_token"])


def connect_publisher(broker: MosquittoProcess) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=f"app-{uuid.uuid4().hex[:6]}"
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def publish_and_wait(world: World, topic: str, done: threading.Event) -> None:
    # A moment for the previous command's trailing work (its result message, closing the
    # response) to finish, on both paths alike: each command meets an idle process.
    time.sleep(world.pause_s)
    done.clear()
    world.publisher.publish(topic, b"LOCK", qos=0).wait_for_publish(WAIT_S)
    if not done.wait(WAIT_S):
        raise RuntimeError(f"no completion for {topic}")


@dataclass
class Trace:
    """Per command: when paho delivered it, when it was handed to the HTTP side, when sent."""

    received: list[float] = field(default_factory=list)
    handed: list[float] = field(default_factory=list)
    sent: Stamps = field(default_factory=Stamps)

    def samples(self) -> list[tuple[float, float]]:
        """(total ms, before-hand-over ms) per command."""
        sent = self.sent.times
        if not len(self.received) == len(self.handed) == len(sent):
            raise RuntimeError(f"{len(self.received)} messages but {len(sent)} requests")
        return [
            ((s - r) * 1000, (h - r) * 1000)
            for r, h, s in zip(self.received, self.handed, sent, strict=True)
        ]


class StampedProvider:
    """A provider that notes when `execute` is called, and otherwise is the real one."""

    def __init__(self, inner: Provider, handed: list[float]) -> None:
        self.inner = inner
        self.handed = handed
        self.account = inner.account

    async def execute(self, vehicle_id: str, operation: Any, **kw: Any) -> Any:
        self.handed.append(time.monotonic())
        return await self.inner.execute(vehicle_id, operation, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- the relay ---------------------------------------------------------------------------------


def relay_run(world: World, token: str, count: int) -> list[tuple[float, float]]:
    """paho on_message → one fsync'd line → the same POST with a synchronous httpx client."""
    trace, done = Trace(), threading.Event()
    http = httpx.Client(
        transport=SyncRecorder(trace.sent),
        headers={"Authorization": f"Bearer {token}", **v1_headers("sim-app-id")},
    )
    url = f"{world.base}{V1}/{world.vehicle_id}/lock"
    fd = os.open(world.state_dir / "relay.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        trace.received.append(time.monotonic())
        os.write(fd, b'{"topic":"%s","payload":"%s"}\n' % (message.topic.encode(), message.payload))
        os.fsync(fd)
        trace.handed.append(time.monotonic())
        http.post(url)
        done.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=f"relay-{uuid.uuid4().hex[:6]}"
    )
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(world.broker.host, world.broker.port)
    client.loop_start()
    client.subscribe("bench/relay/cmd/lock", qos=1)
    subscribed.wait(WAIT_S)
    try:
        for _ in range(count):
            publish_and_wait(world, "bench/relay/cmd/lock", done)
    finally:
        client.loop_stop()
        client.disconnect()
        os.close(fd)
        http.close()
    return trace.samples()


# -- the pipeline ------------------------------------------------------------------------------


async def pipeline_run(world: World, count: int, gate: str) -> list[tuple[float, float]]:
    """The daemon's path: MqttClient → CommandPipeline → audit (fsync) → provider → POST."""
    trace, done = Trace(), threading.Event()
    state_dir = world.state_dir / f"run-{uuid.uuid4().hex[:8]}"
    settings = world.settings.model_copy(update={"state_dir": state_dir})
    log_in(world.sim, state_dir)
    store = Store.open(settings.state_dir)
    alerts = CollectingAlerts()
    budget = Budget(store=store, config=settings.budget, alerts=alerts)
    budget.start()
    call_gate: CallGate = budget if gate == "budget" else FreeGate()
    providers = build_providers(
        settings, gate=call_gate, alerts=alerts, transport=AsyncRecorder(trace.sent)
    )
    stamped = {name: StampedProvider(p, trace.handed) for name, p in providers.items()}
    audit = AuditLog(
        audit_directory(settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=settings.audit.rotate_bytes,
    )
    audit.open()
    registry = AppRegistry(
        store=store,
        audit=audit,
        alerts=alerts,
        enforcement=NoEnforcement(),
        clock=lambda: datetime.now(UTC),
    )
    registry.migrate()
    registry.import_declared(settings.apps)  # as the daemon does with the config file's apps
    ring = open_ring()  # as the daemon does: the kernel fsyncs command records where it can
    audit.use_ring(ring)
    holder: list[CommandPipeline] = []

    def on_message(message: InboundMessage) -> None:
        trace.received.append(message.received_monotonic)
        inbound = InboundCommand(message.topic, message.payload, message.retain, datetime.now(UTC))
        holder[0].submit(inbound).add_done_callback(lambda _f: done.set())

    mqtt = MqttClient(settings.mqtt, loop=asyncio.get_running_loop(), on_message=on_message)
    pipeline = build_pipeline(
        settings,
        store=store,
        audit=audit,
        alerts=alerts,
        publisher=mqtt,
        clock=lambda: datetime.now(UTC),
        apps=registry,
        routes=vehicle_routes(settings, stamped, {}),
        budget_ok=budget_check(budget, settings) if gate == "budget" else None,
    )
    holder.append(pipeline)
    await pipeline.start()
    mqtt.start()
    await mqtt.wait_connected(WAIT_S)
    mqtt.subscribe(pipeline.topics.command_filter)
    await asyncio.sleep(0.3)  # SUBACK is not surfaced by the adapter; give it a moment
    topic = pipeline.topics.command("bench", "car", "lock")
    try:
        for _ in range(count):
            await asyncio.to_thread(publish_and_wait, world, topic, done)
    finally:
        await pipeline.stop()
        await mqtt.stop()
        for provider in providers.values():
            await provider.aclose()
        audit.close()
        if ring is not None:
            ring.close()
        store.close()
    refused = [a for a in alerts.alerts if a.kind.value == "command_refused"]
    if refused:
        raise RuntimeError(f"commands were refused: {refused[0].message}")
    return trace.samples()


# -- reporting ---------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


Runs = list[list[tuple[float, float]]]


def summary(runs: Runs) -> dict[str, Any]:
    totals = [[total for total, _ in run] for run in runs]
    pooled = [v for run in totals for v in run]
    before = [split for run in runs for _, split in run]
    return {
        "commands": len(pooled),
        "p50_ms": percentile(pooled, 50),
        "p99_ms": percentile(pooled, 99),
        "mean_ms": statistics.fmean(pooled),
        "max_ms": max(pooled),
        "run_p50_ms": [percentile(r, 50) for r in totals],
        "run_p99_ms": [percentile(r, 99) for r in totals],
        "median_run_p50_ms": statistics.median(percentile(r, 50) for r in totals),
        # Up to the hand-over to the HTTP side (relay: its fsync done; pipeline: execute called).
        "before_handover_p50_ms": percentile(before, 50),
        "before_handover_p99_ms": percentile(before, 99),
    }


def machine(state_dir: Path) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "state_dir": str(state_dir),
        "fsync_p50_ms": fsync_cost(state_dir),
    }


def fsync_cost(directory: Path, samples: int = 200) -> float:
    """What one small append + fsync costs on the state directory's filesystem."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(samples):
            start = time.perf_counter()
            os.write(fd, b"x" * 200 + b"\n")
            os.fsync(fd)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def report(results: dict[str, Runs], info: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"machine": info}
    doc["paths"] = {name: summary(runs) for name, runs in results.items()}
    relay, daemon = doc["paths"]["relay"], doc["paths"]["pipeline"]
    free = doc["paths"]["pipeline (free gate)"]
    doc["ratio_p50"] = daemon["p50_ms"] / relay["p50_ms"]
    doc["ratio_p99"] = daemon["p99_ms"] / relay["p99_ms"]
    doc["ratio_p50_free_gate"] = free["p50_ms"] / relay["p50_ms"]
    doc["ratio_p50_before_handover"] = (
        daemon["before_handover_p50_ms"] / relay["before_handover_p50_ms"]
    )
    doc["targets"] = {
        f"pipeline p50 <= {TARGET_P50_MS} ms": daemon["p50_ms"] <= TARGET_P50_MS,
        f"pipeline p99 <= {TARGET_P99_MS} ms": daemon["p99_ms"] <= TARGET_P99_MS,
        f"pipeline p50 within {TARGET_RATIO}x of the relay": doc["ratio_p50"] <= TARGET_RATIO,
    }
    return doc


def print_report(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['python']}, {m['os']}")
    print(f"state dir {m['state_dir']}: one 200-byte append+fsync takes {m['fsync_p50_ms']:.3f} ms")
    print(
        f"\n{'path':<22}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'mean':>8}{'max':>8}"
        f"{'hand-over p50/p99':>20}   run p50s"
    )
    for name, s in doc["paths"].items():
        runs = " ".join(f"{v:.2f}" for v in s["run_p50_ms"])
        split = f"{s['before_handover_p50_ms']:.2f}/{s['before_handover_p99_ms']:.2f}"
        print(
            f"{name:<22}{s['commands']:>6}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['mean_ms']:>8.2f}{s['max_ms']:>8.2f}{split:>20}   {runs}"
        )
    print(
        f"\npipeline / relay: p50 {doc['ratio_p50']:.2f}x, p99 {doc['ratio_p99']:.2f}x; "
        f"free gate p50 {doc['ratio_p50_free_gate']:.2f}x; "
        f"up to the hand-over p50 {doc['ratio_p50_before_handover']:.2f}x"
    )
    for target, met in doc["targets"].items():
        print(f"  {'met ' if met else 'MISS'}  {target}")


# -- main --------------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    broker = MosquittoProcess()
    broker.start()
    sim = Simulator(
        vehicles=1,
        seed=1,
        auto_consent=True,
        limits=OPEN_LIMITS,
        timings=Timings(command_delay_s=0.0),
    )
    try:
        with serve_in_thread(sim) as base:
            vehicle_id = sim.vehicles[0].vehicle_id
            settings = make_settings(state_dir, base, broker, vehicle_id)
            token = log_in(sim, state_dir)
            world = World(
                broker,
                base,
                sim,
                state_dir,
                settings,
                vehicle_id,
                connect_publisher(broker),
                pause_s=args.pause_ms / 1000,
            )
            results = measure(world, token, args)
            world.publisher.loop_stop()
            world.publisher.disconnect()
    finally:
        broker.stop()
    doc = report(results, machine(state_dir))
    doc["pause_ms"] = args.pause_ms
    return doc


def measure(world: World, token: str, args: argparse.Namespace) -> dict[str, Runs]:
    paths: dict[str, Callable[[int], list[tuple[float, float]]]] = {
        "relay": lambda n: relay_run(world, token, n),
        "pipeline": lambda n: asyncio.run(pipeline_run(world, n, "budget")),
        "pipeline (free gate)": lambda n: asyncio.run(pipeline_run(world, n, "free")),
    }
    for run in paths.values():
        run(args.warmup)
    results: dict[str, Runs] = {name: [] for name in paths}
    for number in range(args.runs):
        for name, run in paths.items():
            results[name].append(run(args.commands))
        print(f"run {number + 1}/{args.runs} done", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per path (default 5)")
    parser.add_argument("--commands", type=int, default=100, help="commands per run (max 500)")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted commands per path")
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=PAUSE_S * 1000,
        help="idle time before each command (default 20: commands come seconds apart in life, "
        "and an idle CPU is slower to get going; 1 shows the same paths on a busy CPU)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the audit log and database go (default: a temporary folder)",
    )
    args = parser.parse_args()
    args.commands = min(args.commands, 500)  # the per-vehicle rate limit is 600 a minute
    # Logs would go to the terminal at info; the daemon's logging is not what is measured.
    logs.configure("warning", "json", stream=open(os.devnull, "w"))  # noqa: SIM115, PTH123
    with tempfile.TemporaryDirectory(prefix="ownerlink-bench-") as tmp:
        state_dir = args.state_dir or Path(tmp)
        state_dir.mkdir(parents=True, exist_ok=True)
        doc = run_all(args, state_dir)
    print_report(doc)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
