"""The daemon's read-only views for the web page, and the web server built from the daemon."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bridge.model import VehicleState

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from bridge.daemon import Daemon
    from bridge.web.ports import BudgetView, VehicleView
    from bridge.web.server import WebServer


class DaemonVehicles:
    """`VehiclesView` over the poller and the latest states the daemon has seen."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.latest: dict[str, VehicleState] = {}

    def remember(self, slug: str, state: VehicleState) -> None:
        self.latest[slug] = state

    def vehicles(self) -> Sequence[VehicleView]:
        from bridge.web.ports import VehicleView

        views = []
        for vehicle in self._daemon.vehicles:
            status = self._daemon.poller.status(vehicle.slug)
            next_poll = status.get("next_poll")
            views.append(
                VehicleView(
                    slug=vehicle.slug,
                    name=vehicle.name or vehicle.info.model,
                    state=self.latest.get(vehicle.slug),
                    available=bool(status.get("online")),
                    next_poll=datetime.fromisoformat(next_poll) if next_poll else None,
                )
            )
        return views

    def budget(self) -> BudgetView:
        from bridge.web.ports import BudgetView

        daemon = self._daemon
        now = daemon.clock()
        accounts = {v.account for v in daemon.vehicles} or set(daemon.settings.accounts)
        used = sum(daemon.budget.usage(a, now).used_day for a in accounts)
        per_hour = [0] * 24
        for account in accounts:
            for at in daemon.budget.call_times(account, now - timedelta(days=1), now):
                per_hour[at.hour] += 1
        count = max(1, len(accounts))
        return BudgetView(
            calls_per_day=daemon.settings.budget.calls_per_day * count,
            used_today=used,
            per_hour=per_hour,
            calls_per_hour=daemon.settings.budget.calls_per_hour * count,
        )


def build_web_server(daemon: Daemon, sock: socket.socket | None = None) -> WebServer:
    """The owner page and the local OAuth API, wired to the daemon's real parts, built on the
    first request that needs them (`bridge.web.lazy`); `/healthz` and `/metrics` are served
    without them."""
    import importlib

    from bridge.metrics import observability_app
    from bridge.web import schema
    from bridge.web.lazy import LazyApp
    from bridge.web.server import WebServer

    # The page's tables exist from the start, whether or not the page is ever opened.
    schema.migrate(daemon.store)

    async def build() -> ASGIApp:
        # The imports are most of the cost (Jinja2, the page's modules): off the event loop.
        await asyncio.to_thread(importlib.import_module, "bridge.web.app")
        return build_web_app(daemon)

    light = observability_app(daemon)
    lazy = LazyApp(light=light, light_paths=frozenset({"/healthz", "/metrics"}), build=build)
    return WebServer(lazy, daemon.settings.web, sock=sock)


def build_web_app(daemon: Daemon) -> ASGIApp:
    """The full app: owner page, OAuth server, REST API (`/healthz` and `/metrics` stay with the
    light app in front of it)."""
    from bridge.audit.log import audit_directory
    from bridge.web.adapters import AuditFiles, OwnerStepUp
    from bridge.web.app import create_web_app

    settings = daemon.settings
    return create_web_app(
        settings=settings,
        store=daemon.store,
        registry=daemon.registry,
        audit=daemon.audit_sink,
        audit_reader=AuditFiles(audit_directory(settings.state_dir)),
        pipeline=daemon.pipeline,
        vehicles_view=daemon.vehicles_view,
        stepup=OwnerStepUp(
            verifier=daemon.stepup, state_dir=settings.state_dir, clock=daemon.clock
        ),
        clock=daemon.clock,
    )
