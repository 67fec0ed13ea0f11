"""Prometheus metrics and the health document, gathered by wrapping parts rather than editing them.

Counters are fed by thin decorators the daemon puts around its parts (the provider, the call
gate, the audit sink); gauges are read from the parts when Prometheus scrapes.

The counters are plain numbers here, and prometheus_client renders them (and the gauges) when
`/metrics` is first asked for: most owners never scrape it, and the library costs about 1 MB of
memory that the daemon would otherwise carry for nothing (its import brings an HTTP server, a
WSGI server and gzip along).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.audit.pending import Pending
from bridge.errors import ProviderError
from bridge.events import CommandAudit
from bridge.model import CommandOutcome, Operation, VehicleInfo, VehicleState
from bridge.providers.base import CallGate, CallKind, Commit, OnAccepted, Provider

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from bridge.daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
T = TypeVar("T")


class Collector(Protocol):
    """What prometheus_client's registry asks of a collector."""

    def collect(self) -> Iterable[Metric]: ...


class Count:
    """One labelled counter: `labels(*values).inc(n)`, as prometheus_client's `Counter` has it."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}  # the `_created` sample: when first counted

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return _Child(self, values)

    def family(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in self.values.items():
            family.add_metric(values, value, created=self.created[values])
        return family


class _Child:
    __slots__ = ("_count", "_values")

    def __init__(self, count: Count, values: tuple[str, ...]) -> None:
        self._count = count
        self._values = values

    def inc(self, amount: float = 1) -> None:
        count, values = self._count, self._values
        if values not in count.values:
            count.created[values] = time.time()
        count.values[values] = count.values.get(values, 0) + amount


class Metrics:
    """The daemon's counters, and the collectors read at scrape time (no process-global state)."""

    def __init__(self) -> None:
        self.polls = Count("ownerlink_polls", "Vehicle reads that succeeded", ("vehicle",))
        self.provider_calls = Count(
            "ownerlink_provider_calls", "Provider requests by kind", ("account", "kind")
        )
        self.provider_errors = Count(
            "ownerlink_provider_errors", "Provider errors by kind", ("account", "error")
        )
        self.commands = Count(
            "ownerlink_commands", "Command decisions and outcomes", ("decision", "reason")
        )
        self.audit_records = Count("ownerlink_audit_records", "Audit records written", ("kind",))
        self._counts = (
            self.polls,
            self.provider_calls,
            self.provider_errors,
            self.commands,
            self.audit_records,
        )
        self._collectors: list[Collector] = []

    def add_collector(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def collect(self) -> Iterator[Metric]:
        for count in self._counts:
            yield count.family()

    async def load(self) -> None:
        """Import prometheus_client off the event loop, before the first `render`."""
        if "prometheus_client" not in sys.modules:
            await asyncio.to_thread(importlib.import_module, "prometheus_client")

    def render(self) -> bytes:
        """The text exposition of every counter and collector."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        for collector in (self, *self._collectors):
            registry.register(collector)
        return generate_latest(registry)


class CountingGate:
    """A CallGate that counts every provider request it lets through."""

    def __init__(self, inner: CallGate, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> Commit | None:
        commit = self._inner.charge(account, kind, record=record)
        self._metrics.provider_calls.labels(account, kind.value).inc()
        return commit


class CountingAudit:
    """An AuditSink that counts records (and command decisions) on their way to the real log."""

    def __init__(self, inner: CommandAudit, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = self._inner.append(kind, **fields)
        self._count(kind, fields)
        return record

    def append_pending(self, kind: str, **fields: Any) -> Pending:
        pending = self._inner.append_pending(kind, **fields)
        self._count(kind, fields)
        return pending

    def _count(self, kind: str, fields: dict[str, Any]) -> None:
        self._metrics.audit_records.labels(kind).inc()
        if kind == "command.suppressed":  # refusals counted, not recorded one by one
            for reason, count in fields.get("reasons", {}).items():
                self._metrics.commands.labels("refused", str(reason)).inc(count)
        elif kind.startswith("command."):
            decision = fields.get("decision") or fields.get("status") or "unknown"
            self._metrics.commands.labels(str(decision), str(fields.get("reason", ""))).inc()


class CountingProvider:
    """A Provider proxy that counts errors by their kind (ReauthRequired, RateLimited, …)."""

    def __init__(self, inner: Provider, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.account = inner.account

    async def list_vehicles(self) -> list[VehicleInfo]:
        return await self._counted(self._inner.list_vehicles())

    async def read(self, vehicle_id: str) -> VehicleState:
        return await self._counted(self._inner.read(vehicle_id))

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        return self._inner.supported_operations(info)

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        return await self._counted(
            self._inner.execute(vehicle_id, operation, on_accepted=on_accepted)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _counted(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except ProviderError as exc:
            self._metrics.provider_errors.labels(self.account, type(exc).__name__).inc()
            raise
        return result


class DaemonGauges:
    """Gauges read from the running daemon at scrape time."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def collect(self) -> Iterable[Metric]:
        daemon = self._daemon
        yield _gauge("ownerlink_up", "1 once the daemon is online", int(daemon.ready.is_set()))
        yield _gauge(
            "ownerlink_mqtt_connected",
            "1 while connected to the broker",
            1 if daemon.mqtt.connected else 0,
        )
        yield _gauge(
            "ownerlink_mqtt_reconnects", "Broker reconnects since start", daemon.mqtt.reconnects
        )
        depth = daemon.mqtt.queue_depth()
        yield _gauge(
            "ownerlink_mqtt_held_messages",
            "Messages held for the broker while it is away (one per retained topic at most)",
            depth.held,
        )
        yield _gauge(
            "ownerlink_mqtt_unacknowledged_messages",
            "Messages handed to paho and not yet acknowledged by the broker",
            depth.in_paho,
        )
        yield _gauge(
            "ownerlink_audit_head_seq",
            "Sequence number of the newest audit record",
            daemon.audit.head[0],
        )
        yield from self._budget()

    def _budget(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        used = GaugeMetricFamily(
            "ownerlink_budget_used", "Provider calls in the last 24 h", labels=["account"]
        )
        left = GaugeMetricFamily(
            "ownerlink_budget_left", "Provider calls left in the last 24 h", labels=["account"]
        )
        now = self._daemon.clock()
        for account in self._daemon.settings.accounts:
            usage = self._daemon.budget.usage(account, now)
            used.add_metric([account], usage.used_day)
            left.add_metric([account], usage.left_day)
        yield used
        yield left


def _gauge(name: str, doc: str, value: float) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value)


def health(daemon: Daemon, now: Callable[[], datetime]) -> tuple[bool, dict[str, Any]]:
    """(ready, document) for /healthz: alive if it answers; ready once online and connected."""
    checks: Mapping[str, bool] = {
        "started": daemon.ready.is_set(),
        "mqtt": daemon.mqtt.connected,
        "audit": daemon.audit_problem is None,
    }
    ready = all(checks.values())
    document = {
        "status": "ok" if ready else "degraded",
        "live": True,
        "ready": ready,
        "checks": dict(checks),
        "started_at": daemon.started_at.isoformat() if daemon.started_at else None,
        "now": now().isoformat(),
    }
    return ready, document


def routes(daemon: Daemon) -> list[Route]:
    """`/healthz` (JSON; 503 until ready) and `/metrics` (Prometheus text)."""

    async def healthz(_request: Request) -> Response:
        ready, document = health(daemon, daemon.clock)
        return JSONResponse(document, status_code=200 if ready else 503)

    async def metrics(_request: Request) -> Response:
        await daemon.metrics.load()
        return Response(daemon.metrics.render(), media_type=CONTENT_TYPE)

    return [Route("/healthz", healthz), Route("/metrics", metrics)]


def observability_app(daemon: Daemon) -> Starlette:
    """The small app `ownerlink run --metrics-only` serves when the owner page is off."""
    from bridge.web.netguard import AllowlistMiddleware, HostGuard, allowed_hosts

    web = daemon.settings.web
    app = Starlette(routes=routes(daemon))
    app.add_middleware(HostGuard, hosts=allowed_hosts(web.allowed_hosts, web.public_url))
    app.add_middleware(AllowlistMiddleware, allow_cidrs=web.allow_cidrs)
    return app
