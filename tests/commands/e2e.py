"""End-to-end rig: the real simulator over HTTP, real providers, a real broker, the pipeline.

The MQTT side uses the daemon's own adapter (`bridge.mqtt.client.MqttClient`); a paho client
plays the app. Ground truth comes from the simulator's admin API (`/sim/vehicles`): the list of
commands each car actually executed.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.audit.log import AuditLog, audit_directory
from bridge.commands.assemble import budget_check, build_pipeline, vehicle_routes
from bridge.commands.pipeline import CommandPipeline, InboundCommand
from bridge.config import (
    BudgetConfig,
    CommandsConfig,
    MqttConfig,
    Settings,
    StepUpConfig,
    VehicleConfig,
)
from bridge.events import CollectingAlerts
from bridge.model import App, Scope
from bridge.mqtt.client import InboundMessage, MqttClient
from bridge.mqtt.topics import Topics
from bridge.polling.budget import Budget
from bridge.providers.base import Provider
from bridge.providers.factory import build_providers
from bridge.simulator import Simulator
from bridge.store import Store
from tests.commands.fakes import DictApps
from tests.conftest import BrokerAddress
from tests.providers.simulated import connect, log_in, sim_account

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
APPS = (
    App("ha", "Home Assistant", frozenset(Scope), CREATED),
    App("reader", "Reader", frozenset({Scope.READ_STATUS}), CREATED),
    App("off", "Disabled", frozenset(Scope), CREATED, enabled=False),
    App("slow", "Slow", frozenset(Scope), CREATED, rate_limit_per_minute=1),
)
RESULT_WAIT_S = 10.0


def now() -> datetime:
    return datetime.now(UTC)


def e2e_settings(
    state_dir: Path, base: str, sim: Simulator, broker: BrokerAddress, base_topic: str, **extra: Any
) -> Settings:
    """The simulator's three cars as ev (0), ice (1) and broke (2: its budget check says no)."""
    vehicles = {
        slug: VehicleConfig(account="home", id=sim.vehicles[n].vehicle_id)
        for n, slug in enumerate(("ev", "ice", "broke"))
    }
    options: dict[str, Any] = {
        "state_dir": state_dir,
        "accounts": {"home": sim_account(base)},
        "vehicles": vehicles,
        "mqtt": MqttConfig(
            host=broker.host,
            port=broker.port,
            base_topic=base_topic,
            client_id=f"ownerlink-{uuid.uuid4().hex[:6]}",
        ),
        "commands": CommandsConfig(
            status_poll_interval_s=0.02, timeout_s=5, rate_limit_per_minute=600
        ),
        "budget": BudgetConfig(calls_per_day=10_000, calls_per_hour=5_000),
        "stepup": StepUpConfig(max_failures=2),
        **extra,
    }
    return Settings(**options)


PROBE_APP = "probe"  # the app name of ready()'s probe commands; nothing else uses it


class AppClient:
    """A paho client playing an app: publishes commands, collects results."""

    def __init__(self, broker: BrokerAddress, topics: Topics) -> None:
        self.topics = topics
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        # The readiness probe's answers have their own queue: a probe answered late (it was sent
        # again meanwhile) must never be read as the result of the test's own command.
        self.probes: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            protocol=paho.MQTTv5,
            client_id=f"app-{uuid.uuid4().hex[:8]}",
        )
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{topics.base}/app/+/+/result", qos=1)

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        app = message.topic.split("/")[-3]
        (self.probes if app == PROBE_APP else self.results).put(json.loads(message.payload))

    def send(
        self, app: str, vehicle: str, command: str, payload: bytes | str, *, retain: bool = False
    ) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        info = self.client.publish(
            self.topics.command(app, vehicle, command), data, qos=1, retain=retain
        )
        info.wait_for_publish(5)

    async def next(self, timeout: float = RESULT_WAIT_S) -> dict[str, Any]:
        """The next result, whatever its status; queue.Empty after `timeout`.

        The timeout is the queue's own: cancelling a waiting thread would leave it to swallow
        the next result."""
        return await asyncio.to_thread(self.results.get, True, timeout)

    async def final(self, timeout: float = RESULT_WAIT_S) -> dict[str, Any]:
        """The next final result (accepted ones are skipped)."""
        while True:
            doc = await self.next(timeout)
            if doc["status"] != "accepted":
                return doc

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class E2E:
    """Everything one end-to-end test needs."""

    sim: Simulator
    base: str
    settings: Settings
    pipeline: CommandPipeline
    app: AppClient
    alerts: CollectingAlerts
    audit: AuditLog
    mqtt: MqttClient
    seen: list[InboundMessage] = field(default_factory=list)

    def executed(self) -> list[list[str]]:
        """Ground truth: the commands each simulated car executed (admin API over HTTP)."""
        doc = httpx.get(f"{self.base}/sim/vehicles", timeout=5).json()
        return [[e["command"] for e in v["executed"]] for v in doc["vehicles"]]

    async def command(
        self, app: str, vehicle: str, command: str, payload: bytes | str, **kw: Any
    ) -> dict[str, Any]:
        self.app.send(app, vehicle, command, payload, **kw)
        return await self.app.final()

    def listen(self) -> None:
        self.mqtt.subscribe(self.pipeline.topics.command_filter)

    async def ready(self) -> None:
        """Wait until the command subscription is live (a probe command gets its answer)."""
        deadline = time.monotonic() + RESULT_WAIT_S
        while True:
            self.app.send(PROBE_APP, "ev", "lock", b"!")
            try:
                doc = await asyncio.to_thread(self.app.probes.get, True, 0.5)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise
                continue
            assert doc["reason"] == "malformed"
            return


async def _describe(providers: dict[str, Provider], settings: Settings) -> dict[str, Any]:
    infos = {i.vehicle_id: i for i in await providers["home"].list_vehicles()}
    return {slug: infos[v.id] for slug, v in settings.vehicles.items() if v.id in infos}


@asynccontextmanager
async def running(
    settings: Settings,
    sim: Simulator,
    base: str,
    broker: BrokerAddress,
    *,
    listen: bool = True,
    budget_ok: Callable[[str], bool] | None = None,
    fsync: Callable[[int], None] = os.fsync,
) -> AsyncIterator[E2E]:
    """Log in to the simulator, compose the command path, connect it to the broker."""
    account = connect(settings, "home", None)
    await log_in(account, None, vehicle="all")
    await account.parts.provider.aclose()
    store = Store.open(settings.state_dir)
    alerts = CollectingAlerts()
    budget = Budget(store=store, config=settings.budget, alerts=alerts)
    budget.start()
    providers = build_providers(settings, gate=budget, alerts=alerts)
    audit = AuditLog(
        audit_directory(settings.state_dir), clock=now, rotate_bytes=1 << 20, fsync=fsync
    )
    audit.open()
    real_budget = budget_check(budget, settings)
    loop = asyncio.get_running_loop()
    holder: list[CommandPipeline] = []

    def on_message(message: InboundMessage) -> None:
        holder[0].submit(InboundCommand(message.topic, message.payload, message.retain, now()))

    mqtt = MqttClient(settings.mqtt, loop=loop, on_message=on_message)
    pipeline = build_pipeline(
        settings,
        store=store,
        audit=audit,
        alerts=alerts,
        clock=now,
        publisher=mqtt,
        routes=vehicle_routes(settings, providers, await _describe(providers, settings)),
        apps=DictApps(*APPS),
        budget_ok=budget_ok or (lambda slug: slug != "broke" and real_budget(slug)),
    )
    holder.append(pipeline)
    await pipeline.start()
    mqtt.start()
    await mqtt.wait_connected(10)
    app = AppClient(broker, pipeline.topics)
    e2e = E2E(sim, base, settings, pipeline, app, alerts, audit, mqtt)
    try:
        if listen:
            e2e.listen()
            await e2e.ready()
        yield e2e
    finally:
        app.close()
        await pipeline.stop()
        await mqtt.stop()
        for provider in providers.values():
            await provider.aclose()
        audit.close()
        store.close()
