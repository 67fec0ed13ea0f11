"""Prometheus metrics and the health document, gathered by wrapping parts rather than editing them.

Counters are fed by thin decorators the daemon puts around its parts (the provider, the call
gate, the audit sink); gauges are read from the parts when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
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
    from bridge.daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
T = TypeVar("T")


class Metrics:
    """The daemon's counters, in a registry of their own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.polls = Counter(
            "ownerlink_polls", "Vehicle reads that succeeded", ["vehicle"], registry=self.registry
        )
        self.provider_calls = Counter(
            "ownerlink_provider_calls",
            "Provider requests by kind",
            ["account", "kind"],
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "ownerlink_provider_errors",
            "Provider errors by kind",
            ["account", "error"],
            registry=self.registry,
        )
        self.commands = Counter(
            "ownerlink_commands",
            "Command decisions and outcomes",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.audit_records = Counter(
            "ownerlink_audit_records", "Audit records written", ["kind"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


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


class DaemonGauges(Collector):
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


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
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
