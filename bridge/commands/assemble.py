"""Putting the command path together from settings: for the daemon and `ownerlink command`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from bridge.audit.chain import records_newest_first
from bridge.commands.apps import AppLookup
from bridge.commands.dedup import DedupStore
from bridge.commands.forward import VehicleRoute
from bridge.commands.pipeline import BudgetCheck, CommandPipeline, OnCommandDone
from bridge.commands.ratelimit import WINDOW_S
from bridge.commands.recover import recent_charges
from bridge.commands.stepup import StepUp
from bridge.commands.turns import CarTurns
from bridge.commands.unrecorded import UnrecordedEndings
from bridge.config import Settings
from bridge.events import AlertSink, CommandAudit
from bridge.model import VehicleInfo
from bridge.mqtt.topics import PublishSink, Topics
from bridge.polling.budget import Budget
from bridge.providers.base import Provider
from bridge.store import Store


def vehicle_id_of(settings: Settings, slug: str) -> str:
    """The provider's id for a configured vehicle (a Query account's vehicle is its account)."""
    vehicle = settings.vehicles[slug]
    return vehicle.id or vehicle.account


def vehicle_routes(
    settings: Settings, providers: Mapping[str, Provider], infos: Mapping[str, VehicleInfo]
) -> dict[str, VehicleRoute]:
    """A route per configured vehicle whose account has a provider. `infos` (by slug) says what
    each car is; a car not described there gets the operations every car of its provider has."""
    routes = {}
    for slug, vehicle in settings.vehicles.items():
        provider = providers.get(vehicle.account)
        if provider is None:
            continue
        vehicle_id = vehicle_id_of(settings, slug)
        info = infos.get(slug) or VehicleInfo(vehicle_id)
        routes[slug] = VehicleRoute(provider, vehicle_id, provider.supported_operations(info))
    return routes


def budget_check(budget: Budget, settings: Settings) -> BudgetCheck:
    """`budget_ok` for the pipeline: a command may be spent when both windows have a call left."""

    def check(slug: str) -> bool:
        vehicle = settings.vehicles.get(slug)
        if vehicle is None:
            return True  # decided elsewhere: unknown_vehicle
        return budget.admits(vehicle.account)

    return check


def build_pipeline(
    settings: Settings,
    *,
    store: Store,
    audit: CommandAudit,
    routes: Mapping[str, VehicleRoute],
    apps: AppLookup,
    publisher: PublishSink,
    alerts: AlertSink,
    clock: Callable[[], datetime],
    budget_ok: BudgetCheck | None = None,
    on_command_done: OnCommandDone | None = None,
) -> CommandPipeline:
    """The pipeline with its step-up verifier and id store (their tables created if needed)."""
    stepup = StepUp(
        store=store, state_dir=settings.state_dir, config=settings.stepup, alerts=alerts
    )
    stepup.start()
    ids = DedupStore(store=store, window_s=settings.commands.dedup_window_s)
    ids.start()
    kept = UnrecordedEndings(store)
    kept.start()
    return CommandPipeline(
        topics=Topics(
            base=settings.mqtt.base_topic, discovery_prefix=settings.mqtt.discovery_prefix
        ),
        commands=settings.commands,
        stepup_required_for=settings.stepup.required_for,
        apps=apps,
        vehicles=routes,
        audit=audit,
        stepup=stepup,
        ids=ids,
        publisher=publisher,
        alerts=alerts,
        clock=clock,
        budget_ok=budget_ok,
        on_command_done=on_command_done,
        turns=CarTurns(settings.state_dir),  # shared with the daemon and other commands
        kept=kept,
    )


def last_minute_charges(audit_dir: Path, now: datetime) -> list[tuple[str, str, float]]:
    """The commands of the last minute that count against the rate limits, from the audit log,
    for `CommandPipeline.restore_rates`: a restart, or each `ownerlink command` run in a loop,
    would otherwise begin with a fresh allowance. Blocking file reads: call it off the loop."""
    return recent_charges(records_newest_first(audit_dir), now - timedelta(seconds=WINDOW_S))
