"""Injected fakes for the command path: a provider, a publish sink, a clock, a pipeline builder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.audit.log import AuditLog
from bridge.commands.apps import AppLookup, ConfigApps
from bridge.commands.dedup import DedupStore
from bridge.commands.forward import VehicleRoute
from bridge.commands.pipeline import CommandPipeline, InboundCommand, ResultSender
from bridge.commands.stepup import StepUp
from bridge.commands.unrecorded import UnrecordedEndings
from bridge.config import AppConfig, CommandsConfig, StepUpConfig
from bridge.events import CollectingAlerts
from bridge.model import (
    App,
    CommandOutcome,
    CommandStatus,
    Operation,
    Scope,
    VehicleInfo,
    VehicleState,
)
from bridge.mqtt.topics import Publish, Topics
from bridge.providers.base import OnAccepted, OnRefused
from bridge.store import Store

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
ALL_OPERATIONS = frozenset(Operation)


class FakeClock:
    """A settable clock: `clock()` returns the current fake time; `advance` moves it on."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeProvider:
    """A Provider that records what it was asked to do and answers as scripted."""

    account: str = "acct"
    outcome: CommandOutcome = field(default_factory=lambda: CommandOutcome(CommandStatus.SUCCEEDED))
    error: BaseException | None = None
    accept: bool = True
    gate: asyncio.Event | None = None  # when set, execute waits for it before finishing
    executed: list[tuple[str, Operation]] = field(default_factory=list)

    async def list_vehicles(self) -> list[VehicleInfo]:
        return [VehicleInfo("car-1")]

    async def read(self, vehicle_id: str) -> VehicleState:
        return VehicleState(vehicle_id, None)

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        return ALL_OPERATIONS

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        self.executed.append((vehicle_id, operation))
        if self.accept and on_accepted is not None:
            await on_accepted("cmd-1")
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.outcome

    async def aclose(self) -> None:
        return None


class DictApps:
    """An AppLookup over App values (for disabled apps and custom rate limits)."""

    def __init__(self, *apps: App) -> None:
        self.apps = {app.id: app for app in apps}
        self.touched: list[tuple[str, str]] = []

    def current(self, app_id: str) -> App | None:
        return self.apps.get(app_id)

    def touch(self, app_id: str, command: str) -> None:
        self.touched.append((app_id, command))


class ListSink:
    """A PublishSink that keeps messages in a list."""

    def __init__(self) -> None:
        self.messages: list[Publish] = []

    def publish(self, message: Publish) -> None:
        self.messages.append(message)

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages if m.topic.endswith("/result")]


@dataclass
class Rig:
    """A pipeline with real SQLite, real audit log and fakes for the rest."""

    pipeline: CommandPipeline
    provider: FakeProvider
    sink: ListSink
    alerts: CollectingAlerts
    audit: AuditLog
    clock: FakeClock
    store: Store
    stepup: StepUp
    topics: Topics
    confirmed: list[str]
    state_dir: Path

    def inbound(
        self,
        app: str,
        command: str,
        payload: bytes | str,
        *,
        vehicle: str = "car",
        retain: bool = False,
    ) -> InboundCommand:
        data = payload.encode() if isinstance(payload, str) else payload
        return InboundCommand(
            self.topics.command(app, vehicle, command), data, retain, self.clock()
        )

    async def send(self, app: str, command: str, payload: bytes | str, **kw: Any) -> Any:
        return await self.pipeline.submit(self.inbound(app, command, payload, **kw))

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.state_dir / "audit" / "audit.jsonl"
        out = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in out if kind is None or r["kind"] == kind]


APPS = {
    "ha": AppConfig(scopes=frozenset(Scope)),
    "reader": AppConfig(scopes=frozenset({Scope.READ_STATUS})),
    "locker": AppConfig(scopes=frozenset({Scope.COMMAND_LOCK})),
}


async def make_rig(
    state_dir: Path,
    *,
    apps: dict[str, AppConfig] | None = None,
    commands: CommandsConfig | None = None,
    stepup_config: StepUpConfig | None = None,
    supported: Iterable[Operation] = ALL_OPERATIONS,
    provider: FakeProvider | None = None,
    budget_ok: Callable[[str], bool] | None = None,
    clock: FakeClock | None = None,
    lookup: AppLookup | None = None,
    delivery: ResultSender | None = None,
    on_refused: OnRefused | None = None,
    provider_hold: Callable[[str], str | None] | None = None,
) -> Rig:
    """Build and start a pipeline on `state_dir` (reusing it models a restart)."""
    clock = clock or FakeClock()
    store = Store.open(state_dir)
    alerts = CollectingAlerts()
    audit = AuditLog(state_dir / "audit", clock=clock, rotate_bytes=1 << 20)
    audit.open()
    stepup_cfg = stepup_config or StepUpConfig()
    stepup = StepUp(store=store, state_dir=state_dir, config=stepup_cfg, alerts=alerts)
    stepup.start()
    cmds = commands or CommandsConfig(rate_limit_per_minute=600)
    ids = DedupStore(store=store, window_s=cmds.dedup_window_s)
    ids.start()
    kept = UnrecordedEndings(store)
    kept.start()
    provider = provider or FakeProvider()
    sink = ListSink()
    topics = Topics(base="ol")
    confirmed: list[str] = []
    pipeline = CommandPipeline(
        topics=topics,
        commands=cmds,
        stepup_required_for=stepup_cfg.required_for,
        apps=lookup or ConfigApps(APPS if apps is None else apps, clock=clock),
        vehicles={"car": VehicleRoute(provider, "car-1", frozenset(supported))},
        audit=audit,
        stepup=stepup,
        ids=ids,
        publisher=sink,
        alerts=alerts,
        clock=clock,
        budget_ok=budget_ok,
        on_command_done=confirmed.append,
        delivery=delivery,
        on_refused=on_refused,
        provider_hold=provider_hold,
        kept=kept,
    )
    await pipeline.start()
    return Rig(
        pipeline, provider, sink, alerts, audit, clock, store, stepup, topics, confirmed, state_dir
    )
