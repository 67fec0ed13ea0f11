"""The running daemon: builds every part from the settings, starts them in order, stops in reverse.

Composition only. Each part owns its behaviour; this module decides who talks to whom:

    providers ─► poller ─► publisher ─► MQTT            (the poll flow)
    MQTT / REST ─► pipeline ─► audit ─► provider ─► result ─► poller (confirmation read)
    registry changes ─► discovery, location policy, (broker enforcement inside the registry)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import fcntl
import os
import signal
import socket
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bridge import sdnotify
from bridge.access.alerts import AlertHub
from bridge.access.apps import AppChange, AppRegistry
from bridge.access.broker import build_enforcement
from bridge.access.sync import SyncLoop
from bridge.access.webhook import WebhookSender
from bridge.audit.anchor import ANCHOR_FIX, MalformedHead, anchor_problem, fetch_head
from bridge.audit.log import AuditLog, audit_directory
from bridge.audit.read import records_after
from bridge.audit.ring import open_ring
from bridge.audit.witness import replaced_database
from bridge.commands.assemble import last_minute_charges
from bridge.commands.dedup import DedupStore
from bridge.commands.delivery import ResultDelivery, oldest_owed, record_time, undelivered
from bridge.commands.forward import VehicleRoute
from bridge.commands.inflight import no_owner_command_running
from bridge.commands.pipeline import CommandPipeline, InboundCommand
from bridge.commands.reasons import Reason
from bridge.commands.results import error_text
from bridge.commands.settled import load_settled, read_after, save_settled, settled_through
from bridge.commands.stepup import StepUp
from bridge.commands.turns import CarTurns
from bridge.commands.unrecorded import UnrecordedEndings
from bridge.config import Settings
from bridge.errors import (
    AuditError,
    AuditTampered,
    BrokerError,
    ConfigError,
    ProviderError,
    StateError,
)
from bridge.events import Alert, AlertKind
from bridge.files import open_lock
from bridge.logs import get_logger
from bridge.metrics import (
    CountingAudit,
    CountingGate,
    CountingProvider,
    DaemonGauges,
    Metrics,
    observability_app,
)
from bridge.model import Powertrain, Scope, VehicleInfo, VehicleState
from bridge.mqtt.client import InboundMessage, MqttClient
from bridge.mqtt.discovery import VehicleDescription
from bridge.mqtt.memory import RetainedDiscovery
from bridge.mqtt.publisher import DiscoveryManager, StatePublisher
from bridge.mqtt.topics import Publish, Topics, encode
from bridge.polling.budget import Budget
from bridge.polling.history import ActivityHistory
from bridge.polling.holds import AccountHolds
from bridge.polling.scheduler import Poller
from bridge.providers.base import Provider
from bridge.providers.factory import build_providers
from bridge.providers.tokens import TokenStore
from bridge.store import Store, ensure_private_dir
from bridge.vehicles import BridgedVehicle, VehicleMemory, derived_slug, resolve_vehicles
from bridge.views import DaemonVehicles

log = get_logger(__name__)

# How often the daemon looks for app changes made by another process (`ownerlink apps revoke`):
# revocation must take effect within a second.
REGISTRY_POLL_S = 0.25
# How often a daemon that started during an `ownerlink command` looks whether it has ended.
OWNER_COMMAND_WAIT_S = 1.0
# The `source` of the decision records `ownerlink command` writes.
OWNER_SOURCE = "owner"
# How often the daemon looks for a new login made by `ownerlink login` in another process.
LOGIN_WATCH_S = 2.0
# How often the daemon looks for audit records written by another process (one stat each time).
AUDIT_WATCH_S = 1.0
# An account that could not be listed at start (no vehicles configured, none remembered) is
# listed again after this long, then twice as long each time, at most LIST_RETRY_MAX_S.
LIST_RETRY_S = 60.0
LIST_RETRY_MAX_S = 3600.0
# How long the start-up check waits for the broker's retained audit head once subscribed.
ANCHOR_WAIT_S = 3.0
# How long to wait before asking again when the broker gave no answer (commands wait meanwhile).
ANCHOR_RETRY_S = 5.0
# Held (flock) by the running daemon for its whole life: one daemon per state directory.
INSTANCE_LOCK = "daemon.lock"
# App ids the registry refuses: the owner's own identity and the daemon's.
RESERVED_APP_IDS = ("owner", "ownerlink", "admin")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Anchor(enum.Enum):
    """Where the daemon stands with the audit head the broker holds (see `_check_anchor`)."""

    UNCHECKED = "unchecked"
    CHECKING = "checking"
    HELD = "held"  # the log contains the broker's head: ours may replace it
    BROKEN = "broken"  # it does not: commands stop, and the broker keeps its copy


class Daemon:
    """Ownerlink's long-running process. `await start()`, then `await stop()` (or `run()`)."""

    web: Any

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
        serve_web: bool | None = None,
        metrics_only: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self.serve_web = settings.web.enabled if serve_web is None else serve_web
        self.metrics_only = metrics_only
        self.metrics = Metrics()
        self.topics = Topics(
            base=settings.mqtt.base_topic, discovery_prefix=settings.mqtt.discovery_prefix
        )
        self.started_at: datetime | None = None
        self.ready = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._vehicles: list[BridgedVehicle] = []
        self._descriptions: dict[str, VehicleDescription] = {}
        self._account_of: dict[str, str] = {}
        self._instance_lock: int | None = None  # see claim_state_dir
        self._web_socket: socket.socket | None = None  # see _claim_web_port

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start, wait for SIGTERM, SIGINT or SIGHUP, stop. The exit status for the CLI.

        SIGHUP too: the terminal or ssh session the daemon was started from hung up. Its default
        action would kill the process mid-command, with no outcome recorded until the next start.
        Unless it is ignored already (`nohup`): then the owner asked to outlive the terminal.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_requested.set)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            loop.add_signal_handler(signal.SIGHUP, self._stop_requested.set)
        try:
            if await self.start_unless_stopped():
                sdnotify.notify("READY=1")
                await self._wait_watched()
            sdnotify.notify("STOPPING=1")
        finally:
            await self.stop()
        return 0

    async def _wait_watched(self) -> None:
        """`wait_for_stop()`, telling systemd's watchdog (when it watches) that the event loop
        still runs: every MQTT message, poll and command goes through it."""
        interval = sdnotify.watchdog_interval()
        feeding = (
            None if interval is None else asyncio.ensure_future(sdnotify.feed_watchdog(interval))
        )
        try:
            await self.wait_for_stop()
        finally:
            if feeding is not None:
                feeding.cancel()
                await asyncio.gather(feeding, return_exceptions=True)

    async def start_unless_stopped(self) -> bool:
        """`start()`, abandoned when a stop is asked for first (then False; `stop()` next).

        A car maker's API that hangs while the daemon starts makes each call wait out
        `request_timeout_s`, a token refresh and then the vehicle list, account after account:
        a SIGTERM in that window waited for all of it, past systemd's TimeoutStopSec (20 s), and
        the daemon was killed instead of stopping."""
        starting = asyncio.ensure_future(self.start())
        stopping = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # we were cancelled ourselves: so is the start
            starting.cancel()
            raise
        finally:
            stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return False
        starting.result()  # a start that failed says why
        return True

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def wait_for_stop(self) -> None:
        await self._stop_requested.wait()

    async def start(self) -> None:
        """Build and start every part; returns once the daemon is online."""
        self.started_at = self.clock()
        self._loop = asyncio.get_running_loop()
        self._build_state()
        self._claim_web_port()
        self._build_mqtt()
        await self._build_access()
        self._build_commands_base()
        await self._build_providers()
        self._build_publishing()
        self._build_pipeline()
        self._build_poller()
        await self._start_parts()
        await self._build_web()
        self.ready.set()
        log.info("ownerlink online", vehicles=[v.slug for v in self._vehicles])

    async def stop(self) -> None:
        """Stop in reverse order; every task awaited, the MQTT `offline` published last."""
        if getattr(self, "_anchor_abort", None) is not None:
            self._anchor_abort.set()
        names = ("_login_watch", "_audit_watch", "_owner_wait")
        watches = [getattr(self, name, None) for name in names]
        watches.extend(getattr(self, "_listings", ()))
        watches.append(getattr(self, "_anchor_check", None))
        for watch in filter(None, watches):
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        for name in ("web", "poller", "registry_sync", "pipeline", "publisher", "alerts"):
            part = getattr(self, name, None)
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        await self._close_io()

    async def _close_io(self) -> None:
        if getattr(self, "mqtt", None) is not None:
            await self.mqtt.stop()
        for provider in getattr(self, "providers", {}).values():
            with contextlib.suppress(Exception):
                await provider.aclose()
        if getattr(self, "registry", None) is not None:
            with contextlib.suppress(Exception):
                self.registry.enforcement.stop()
        if getattr(self, "audit", None) is not None:
            self.audit.close()
        ring = getattr(self, "fsync_ring", None)
        if ring is not None:
            ring.close()
        if getattr(self, "store", None) is not None:
            self.store.close()
        if self._web_socket is not None:  # bound, but the start ended before serving on it
            self._web_socket.close()
            self._web_socket = None
        lock, self._instance_lock = self._instance_lock, None
        if lock is not None:
            os.close(lock)  # the next daemon may start on this state directory

    # -- building --------------------------------------------------------------------------------

    def _build_state(self) -> None:
        settings = self.settings
        self._instance_lock = claim_state_dir(settings.state_dir)
        self.store = Store.open(settings.state_dir)
        _warn_if_open_to_others(settings.state_dir)
        replaced = replaced_database(self.store, audit_directory(settings.state_dir))
        if replaced is not None:
            # Starting would quietly undo revocations and re-run executed command ids.
            raise StateError(replaced)
        self.audit = AuditLog(
            audit_directory(settings.state_dir),
            clock=self.clock,
            rotate_bytes=settings.audit.rotate_bytes,
            on_head=self._publish_audit_head,
        )
        # Parts write through the counting wrapper; the daemon keeps the log itself for its head.
        self.audit_sink = CountingAudit(self.audit, self.metrics)
        # Command records are fsync'd by the kernel where io_uring is allowed (bridge.audit.ring).
        self.fsync_ring = open_ring()
        self.audit.use_ring(self.fsync_ring)
        self.audit_problem: str | None = None
        self._audit_tampered = False  # the problem is damage to the log, not a write error
        self._anchor = Anchor.UNCHECKED
        self._anchor_abort = threading.Event()  # set on stop: the check's thread ends at once
        try:
            self.audit.open()
        except AuditTampered as exc:
            # Damage other than a torn tail: keep running (state, polling) but take no commands.
            self.audit_problem, self._audit_tampered = str(exc), True
            log.error(  # noqa: TRY400 - the problem is the message; a traceback adds nothing
                "audit log failed verification; commands are refused", problem=str(exc)
            )
        except AuditError as exc:
            # It cannot be opened or repaired (permissions, a read-only or full disk): no
            # commands either, but no tampering alarm for what is a disk or permission problem.
            self.audit_problem = str(exc)
            log.error(  # noqa: TRY400 - the problem is the message; a traceback adds nothing
                "audit log unusable; commands are refused", problem=str(exc)
            )

    def _build_mqtt(self) -> None:
        self.mqtt = MqttClient(
            self.settings.mqtt,
            loop=asyncio.get_running_loop(),
            on_message=self._on_message,
            on_connect=self._on_connect,
        )
        webhook = None
        if self.settings.alerts.webhook_url:
            webhook = WebhookSender(
                url=self.settings.alerts.webhook_url,
                timeout_s=self.settings.alerts.webhook_timeout_s,
                retries=self.settings.alerts.webhook_retries,
            )
        self.alerts = AlertHub(topics=self.topics, publisher=self.mqtt, webhook=webhook)
        # Connect now so alerts raised while the rest starts reach the broker (paho queues them
        # until the connection is up). Subscribe first: the client sends its subscriptions before
        # it publishes `online`, so whoever sees `online` knows its commands are heard. Messages
        # arriving before the pipeline exists wait in `_early` and are judged once it does (a
        # retained command is refused then, as at any other time).
        self._early: list[InboundMessage] | None = []
        self.mqtt.subscribe(self.topics.command_filter, qos=1)
        self.mqtt.subscribe(self.topics.ha_status, qos=1)
        self.mqtt.start()

    async def _build_access(self) -> None:
        enforcement = build_enforcement(self.settings.mqtt, state_dir=self.settings.state_dir)
        self.registry = AppRegistry(
            store=self.store,
            audit=self.audit_sink,
            alerts=self.alerts,
            enforcement=enforcement,
            clock=self.clock,
            reserved_ids=(*RESERVED_APP_IDS, *self.settings.mqtt.own_logins),
        )
        self.registry.migrate()
        self._refuse_login_clash()
        # Broker I/O (dynsec round trips) stays off the event loop.
        await asyncio.to_thread(self._start_registry)
        if enforcement.hint:
            log.info("broker enforcement", mode=enforcement.mode, hint=enforcement.hint)

    def _refuse_login_clash(self) -> None:
        """An app registered under the bridge's own broker login (before that name was the
        login) would be given the daemon's broker identity, and revoking it would delete it."""
        mqtt = self.settings.mqtt
        clash = next((app.id for app in self.registry.list() if mqtt.own_login(app.id)), None)
        if clash is not None:
            raise ConfigError(
                [
                    f"mqtt.username / mqtt.admin_username: {clash!r} is also the id of a connected "
                    "app; give the bridge another broker login (revoking the app would delete "
                    "the broker login they share)"
                ]
            )

    def _start_registry(self) -> None:
        self.registry.enforcement.start()
        if self.audit_problem is None:
            # Before the config's apps join: a revocation the database lacks must hold first.
            directory = audit_directory(self.settings.state_dir)
            self.registry.catch_up(partial(records_after, directory), self.audit.head[0])
        # Apps declared in the config file join the registry (once; a revoked one stays revoked).
        # Pushing them to the broker is the sync loop's job, which retries while it is down.
        self.registry.import_declared(self.settings.apps)

    def _build_commands_base(self) -> None:
        settings = self.settings
        self.budget = Budget(
            store=self.store, config=settings.budget, alerts=self.alerts, clock=self.clock
        )
        self.budget.start()
        self.stepup = StepUp(
            store=self.store,
            state_dir=settings.state_dir,
            config=settings.stepup,
            alerts=self.alerts,
        )
        self.stepup.start()
        self.command_ids = DedupStore(store=self.store, window_s=settings.commands.dedup_window_s)
        self.command_ids.start()
        self.kept_endings = UnrecordedEndings(self.store)
        self.kept_endings.start()

    async def _build_providers(self) -> None:
        gate = CountingGate(self.budget, self.metrics)
        built = build_providers(
            self.settings,
            gate=gate,
            alerts=self.alerts,
            transport=self.transport,
            on_refused=self._refused,
        )
        self.providers: dict[str, Provider] = {
            name: CountingProvider(provider, self.metrics) for name, provider in built.items()
        }
        self.vehicle_memory = VehicleMemory(self.store)
        self.vehicle_memory.start()
        self.holds = AccountHolds(store=self.store)
        self.holds.start()
        # An account the car maker asked for no calls (a 429 or suspension the last run met) is
        # not even listed before that time.
        now = self.clock()
        held = [a for a in self.settings.accounts if self.holds.current(a, now) is not None]
        self._vehicles = await resolve_vehicles(
            self.settings, self.providers, self.vehicle_memory, held=held
        )
        # Looked up for every command (budget check): keyed once here, not searched each time.
        self._account_of = {v.slug: v.account for v in self._vehicles}

    def _build_publishing(self) -> None:
        ha_app = self.registry.home_assistant_app()
        self.discovery = DiscoveryManager(
            self.mqtt,
            self.topics,
            mode=self.settings.mqtt.discovery_mode,
            ha_app=ha_app.id if ha_app else None,
            ha_scopes=ha_app.scopes if ha_app and ha_app.enabled else frozenset(),
            stepup_scopes=self.settings.stepup.required_for,
            memory=RetainedDiscovery(self.store),
        )
        self.publisher = StatePublisher(
            self.mqtt,
            self.topics,
            location_allowed=self._location_allowed,
            discovery=self.discovery,
        )

    def _build_pipeline(self) -> None:
        self.delivery = ResultDelivery(store=self.store, sink=self.mqtt, topics=self.topics)
        # Kept: a car bridged without its details learns what it can do from its first read.
        self._routes = routes = {
            v.slug: VehicleRoute(
                provider=self.providers[v.account], vehicle_id=v.vehicle_id, supported=v.operations
            )
            for v in self._vehicles
        }
        self.pipeline = CommandPipeline(
            topics=self.topics,
            commands=self.settings.commands,
            stepup_required_for=self.settings.stepup.required_for,
            apps=self.registry,
            vehicles=routes,
            audit=self.audit_sink,
            stepup=self.stepup,
            ids=self.command_ids,
            publisher=self.mqtt,
            alerts=self.alerts,
            clock=self.clock,
            budget_ok=self._command_budget_ok,
            on_command_done=self._confirm,
            delivery=self.delivery,
            on_refused=self._refused,
            provider_hold=self._provider_hold,
            turns=CarTurns(self.settings.state_dir),  # shared with `ownerlink command`
            kept=self.kept_endings,
        )
        if self.audit_problem is not None:
            tampered = self._audit_tampered
            self.pipeline.halt(Reason.AUDIT_TAMPERED if tampered else Reason.AUDIT_UNAVAILABLE)
        else:
            self.pipeline.hold(Reason.AUDIT_UNCHECKED)  # until _check_anchor has an answer

    def _build_poller(self) -> None:
        self.vehicles_view = DaemonVehicles(self)
        self.history = history = ActivityHistory(store=self.store)
        history.start()
        self.poller = Poller(
            providers=self.providers,
            vehicles={v.slug: (v.account, v.vehicle_id) for v in self._vehicles},
            budget=self.budget,
            config=self.settings.polling,
            on_state=self._on_state,
            on_availability=self.publisher.set_availability,
            on_budget=self.publisher.publish_budget,
            alerts=self.alerts,
            clock=self.clock,
            history=history,
            holds=self.holds,
        )

    async def _start_parts(self) -> None:
        await self.alerts.start()
        self.discovery.start()
        self._descriptions = {v.slug: self._describe(v) for v in self._vehicles}
        for description in self._descriptions.values():
            self.discovery.add_vehicle(description)
        # Vehicles taken out of the config while we were stopped: their entities, and their
        # retained state (the last position above all) that any client could still read.
        self.discovery.clear_forgotten(
            on_forgotten=self.publisher.forget_vehicle, bridged_before=self._polled_before()
        )
        # Before the check starts: once it has passed, the results owed from here are sent.
        self._start_mark = self.delivery.start(self.audit.head[0])
        if self.audit_problem is None:
            self._check_anchor()
        self.registry.subscribe(self._on_registry_change)
        self.registry_sync = SyncLoop(registry=self.registry, poll_interval_s=REGISTRY_POLL_S)
        await self.registry_sync.start()
        if self.audit_problem is None:
            directory = audit_directory(self.settings.state_dir)
            charges = await asyncio.to_thread(last_minute_charges, directory, self.clock())
            self.pipeline.restore_rates(charges)
        await self.pipeline.start()
        early, self._early = self._early or [], None
        for message in early:
            self._on_message(message)
        await self.poller.start()
        self._login_watch = asyncio.get_running_loop().create_task(self._watch_logins())
        self._listings = [
            asyncio.get_running_loop().create_task(self._list_later(account))
            for account in self._unlisted_accounts()
        ]
        if self.audit_problem is not None:
            if self._audit_tampered:
                self.alerts.emit(Alert(AlertKind.AUDIT_TAMPERED, self.audit_problem, self.clock()))
            return
        # The anchor check goes on in the background (usually a second): commands that come
        # meanwhile wait for it in the pipeline, and nothing else needs to.
        self._audit_watch = asyncio.get_running_loop().create_task(self._watch_audit())

    def _polled_before(self) -> list[str]:
        """The vehicles earlier runs polled: what an upgrade from a version that kept no record of
        its discovery knows of the cars it bridged (`DiscoveryManager.clear_forgotten`).
        Nothing while an account's cars are still to be listed: they are not forgotten, only not
        known yet, and clearing them would remove the owner's entities."""
        if self._unlisted_accounts():
            return []
        try:
            return self.history.vehicles()
        except StateError:  # then only a vehicle taken out of the config keeps its entities
            log.exception("could not read which vehicles earlier runs polled")
            return []

    async def _finish_interrupted_safely(self) -> None:
        try:
            await self._finish_interrupted(self._start_mark)
        except Exception:  # the commands waiting for the check must not wait for ever
            log.exception("could not answer the commands the last stop left open")

    async def _finish_interrupted(self, mark: int) -> None:
        """Final results a crash kept from MQTT apps go out again, and commands it left at the
        car without an outcome get theirs (`timed_out`) now. Only the records after the point
        the last start settled are read (bridge.commands.settled): the log is kept forever."""
        directory = audit_directory(self.settings.state_dir)
        settled = load_settled(self.store, self.audit.head[0])
        # Held (when free) before the log is read: an `ownerlink command` ending in between
        # would otherwise have its outcome written after our read, and be answered twice.
        with no_owner_command_running(self.settings.state_dir) as alone:
            now = self.clock()
            found = await asyncio.to_thread(
                read_after, directory, settled=settled, mark=mark, oldest=oldest_owed(now)
            )
            owed = undelivered(found.results, after_seq=mark, now=now)
            resent = self.delivery.republish(owed)
            if resent:
                log.warning(
                    "final results kept from the broker by the last stop sent again", n=resent
                )
            interrupted, owner = found.interrupted, []
            if not alone:
                # An `ownerlink command` is still waiting for the car: it writes its outcome.
                owner = [d for d in interrupted if d.get("source") == OWNER_SOURCE]
                interrupted = [d for d in interrupted if d.get("source") != OWNER_SOURCE]
            answered = self._answer_interrupted(interrupted)
            # Settled once answered: past the results sent again (a kill may beat their PUBACK)
            # and, until they are answered too, before the owner commands left open.
            later = settled_through(found.newest, (seq for seq, _ in owed))
            if answered:
                self._save_settled(settled_through(later, (_seq(d) for d in owner)))
            if owner:
                self._owner_wait = asyncio.get_running_loop().create_task(
                    self._finish_owner_commands_later(directory, later if answered else None)
                )

    async def _finish_owner_commands_later(self, directory: Path, settle_to: int | None) -> None:
        """Once no `ownerlink command` runs, answer the owner commands still without an outcome:
        their process died before the car answered (bridge.commands.inflight). Then the start's
        read is settled as far as it would have been without them (`settle_to`)."""
        while True:
            await asyncio.sleep(OWNER_COMMAND_WAIT_S)
            try:
                with no_owner_command_running(self.settings.state_dir) as alone:
                    if not alone:
                        continue
                    head = self.audit.head[0]
                    settled = load_settled(self.store, head)
                    # Only the open commands are wanted here: no result is after the head.
                    found = await asyncio.to_thread(
                        read_after, directory, settled=settled, mark=head
                    )
                    left = [d for d in found.interrupted if d.get("source") == OWNER_SOURCE]
                    if self._answer_interrupted(left) and settle_to is not None:
                        self._save_settled(settle_to)
                    return
            except Exception:  # a background task: say so, never die silently
                log.exception("could not answer owner commands left open")
                return

    def _answer_interrupted(self, interrupted: list[Mapping[str, Any]]) -> bool:
        """Answer them; False when not all could be (the audit log failed: pipeline halted)."""
        self._charge_interrupted(interrupted)
        finished = self.pipeline.finish_interrupted(interrupted)
        if finished:
            log.warning(
                "commands interrupted by the last stop were answered timed_out", count=finished
            )
        return finished == len(interrupted)

    def _save_settled(self, seq: int) -> None:
        try:
            save_settled(self.store, seq)
        except StateError:  # the next start reads further back, nothing worse
            log.exception("could not record how far the audit log was settled", seq=seq)

    def _charge_interrupted(self, decisions: list[Mapping[str, Any]]) -> None:
        """A command the last stop interrupted may have reached the car before its budget row
        was written (bridge.polling.budget): charge it now unless a row names its record."""
        for decision in decisions:
            account = self._account_of.get(str(decision.get("vehicle")))
            at, seq = record_time(decision), decision.get("seq")
            if account is None or at is None or not isinstance(seq, int):
                continue
            try:
                if self.budget.charge_interrupted(account, at, seq):
                    log.info("interrupted command charged to the budget", seq=seq, account=account)
            except sqlite3.Error:
                log.exception("could not charge an interrupted command", seq=seq)

    def _claim_web_port(self) -> None:
        """Bind the page's address before anything else starts: a port another program holds
        stops the start here (PortInUse, exit status 1, which systemd retries), not after the
        broker has seen us online and the first polls have gone out."""
        if self.serve_web or self.metrics_only:
            from bridge.web.server import listen_socket

            self._web_socket = listen_socket(self.settings.web)

    async def _build_web(self) -> None:
        self.metrics.add_collector(DaemonGauges(self))
        self.web = None
        if self.serve_web and not self.metrics_only:
            from bridge.views import build_web_server  # the web stack loads only when served

            self.web = build_web_server(self, self._web_socket)
        elif self.metrics_only:
            from bridge.web.server import WebServer

            self.web = WebServer(observability_app(self), self.settings.web, sock=self._web_socket)
        if self.web is not None:
            await self.web.start()

    # -- reactions -------------------------------------------------------------------------------

    def _on_message(self, message: InboundMessage) -> None:
        """Runs on the event loop (the MQTT adapter hands messages over); never blocks."""
        if self._early is not None:
            self._early.append(message)  # the pipeline does not exist yet (see _build_mqtt)
            return
        if message.topic == self.topics.ha_status:
            self.publisher.handle_ha_status(message.payload)
            return
        self.pipeline.submit(
            InboundCommand(message.topic, message.payload, message.retain, self.clock())
        )

    def _on_connect(self) -> None:
        """Every (re)connect: discovery and every state again, and the audit anchor."""
        if getattr(self, "publisher", None) is None:
            return  # the first connect during start-up: start() publishes everything itself
        self.publisher.republish_all()
        if self._anchor is Anchor.HELD:
            self._publish_current_audit_head()

    def _check_anchor(self) -> None:
        """Compare the head the broker holds with the log before publishing ours, which would
        otherwise overwrite the evidence of records cut off the end while we were stopped.
        Commands wait for the answer (`Reason.AUDIT_UNCHECKED`)."""
        self._anchor = Anchor.CHECKING
        self._anchor_check = asyncio.get_running_loop().create_task(self._anchor_checked())

    async def _anchor_checked(self) -> None:
        while True:
            try:
                problem = await self._anchor_problem()
                break
            except (BrokerError, OSError) as exc:  # no answer is not "no head": ask again
                log.warning(
                    "audit log not yet checked against the broker's head; commands wait",
                    error=str(exc),
                    retry_in_s=ANCHOR_RETRY_S,
                )
                await asyncio.sleep(ANCHOR_RETRY_S)
            except Exception as exc:  # a check that cannot be made must not pass, nor hang
                log.exception("audit log could not be checked against the broker's head")
                problem = f"the audit log could not be compared with it: {error_text(exc)}"
                break
        if problem is None:
            # Only now: records and results written over a log cut short would fork the
            # evidence and tell apps of an "interrupted" command what the broker's head denies.
            # Commands still wait (held), so these answers come before any new one.
            await self._finish_interrupted_safely()
            self._anchor = Anchor.HELD
            self.pipeline.release()
            self._publish_current_audit_head()
            return
        self._anchor = Anchor.BROKEN  # never overwrite the broker's copy: it is the evidence
        self.audit_problem = f"{problem}. {ANCHOR_FIX}"
        log.error("audit log does not contain the broker's head; commands stopped", problem=problem)
        self.pipeline.halt(Reason.AUDIT_TAMPERED)
        self.pipeline.release()
        self.alerts.emit(Alert(AlertKind.AUDIT_TAMPERED, self.audit_problem, self.clock()))

    async def _anchor_problem(self) -> str | None:
        """Why the log lacks the broker's head, or None (also when the broker holds none).
        Raises BrokerError when the broker gave no answer either way."""
        try:
            held = await asyncio.to_thread(
                fetch_head, self.settings, ANCHOR_WAIT_S, self._anchor_abort
            )
        except MalformedHead as exc:
            # Not a head we ever published: nothing to compare with; ours replaces it.
            log.warning("the broker's audit head is unreadable; replacing it", error=str(exc))
            return None
        if held is None:
            return None
        directory = audit_directory(self.settings.state_dir)
        return await asyncio.to_thread(anchor_problem, directory, held, self.audit.head)

    def _publish_current_audit_head(self) -> None:
        """The anchor again (once checked, and on every reconnect): the broker, or a broker
        restarted without persistence, may hold an older head or none until the next record.
        Only a head known to be on disk: one the log lacks after a power cut reads as tampering."""
        seq, head = self.audit.durable_head
        if seq:
            self._publish_audit_head(seq, head)

    def _publish_audit_head(self, seq: int, head: str) -> None:
        if self._anchor is not Anchor.HELD:
            return  # published once the broker's copy has been checked (see _check_anchor)
        payload = encode({"seq": seq, "hash": head})
        # Latest-only: while the broker is away a newer head replaces one not yet sent; the
        # anchor is the newest durable head, and a reconnect publishes that one again anyway.
        message = Publish(self.topics.audit_head, payload, retain=True, latest_only=True)
        self.mqtt.publish(message)

    def _on_registry_change(self, change: AppChange) -> None:
        # Changes made through the web page arrive on a worker thread: hop onto the loop.
        self._loop.call_soon_threadsafe(self._apply_registry_change, change)

    def _apply_registry_change(self, change: AppChange) -> None:
        ha_app = self.registry.home_assistant_app()
        scopes = ha_app.scopes if ha_app and ha_app.enabled else frozenset[Scope]()
        self.discovery.set_ha_app(ha_app.id if ha_app else None, scopes)
        self.publisher.location_policy_changed()
        log.info("app change applied", app=change.app_id, change=change.kind.value)

    async def _watch_logins(self) -> None:
        """A login in another process (`ownerlink login`) rewrites the token file: poll that
        account again at once instead of waiting for the re-login back-off to expire."""
        tokens = TokenStore(self.settings.state_dir)
        seen = {account: _mtime(tokens.path(account)) for account in self.settings.accounts}
        while True:
            await asyncio.sleep(LOGIN_WATCH_S)
            for account, before in seen.items():
                now = _mtime(tokens.path(account))
                if now != before:
                    seen[account] = now
                    # Our own token refreshes rewrite the file too: only a re-login matters.
                    if self._waiting_for_login(account):
                        log.info("new login seen; polling the account again", account=account)
                        self.poller.resume(account)

    async def _watch_audit(self) -> None:
        """Records another process wrote (`ownerlink apps revoke`, `ownerlink command`) go into
        the head on the broker within a second, so a log cut back to before them is caught by
        `audit verify --mqtt`; their commands count against the rate limits and have the car
        read again; and a log cut short or replaced under the running daemon stops commands and
        raises an alert at once, instead of waiting for the next command."""
        while self.audit.failed is None:
            await asyncio.sleep(AUDIT_WATCH_S)
            if self.audit.changed_on_disk():
                with contextlib.suppress(AuditError):  # failed/tampered say what went wrong
                    await asyncio.to_thread(self.audit.refresh)
            foreign = self.audit.taken_in()
            self.pipeline.count_elsewhere(foreign)
            self._confirm_foreign(foreign)
        self.audit_problem = self.audit.failed
        if not self.audit.tampered:
            log.error("audit log unusable; commands stopped", problem=self.audit_problem)
            self.pipeline.halt(Reason.AUDIT_UNAVAILABLE)
            return
        log.error("audit log tampered with; commands stopped", problem=self.audit_problem)
        self.pipeline.halt(Reason.AUDIT_TAMPERED)
        self.alerts.emit(Alert(AlertKind.AUDIT_TAMPERED, self.audit.failed, self.clock()))

    def _unlisted_accounts(self) -> list[str]:
        """With no vehicles configured, the accounts the start bridged no car of: their list
        was unavailable (an outage at the very first start, nothing remembered)."""
        if self.settings.vehicles:
            return []
        bridged = {v.account for v in self._vehicles}
        return [account for account in self.settings.accounts if account not in bridged]

    async def _list_later(self, account: str) -> None:
        """List the account again until it answers, then bridge its cars without a restart.
        Before, a daemon whose first start fell in an outage bridged nothing until restarted."""
        provider, delay = self.providers[account], LIST_RETRY_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, LIST_RETRY_MAX_S)
            if self.holds.current(account, self.clock()) is not None:
                continue  # the car maker asked for no calls yet (see resolve_vehicles)
            try:
                infos = await provider.list_vehicles()
            except ProviderError as exc:
                log.info("vehicle list still unavailable", account=account, error=str(exc))
                continue
            if not infos:
                continue
            self.vehicle_memory.remember_list(account, infos)
            for info in infos:
                self._bridge_later(account, info)
            log.info("vehicles listed", account=account, n=len(infos))
            return

    def _bridge_later(self, account: str, info: VehicleInfo) -> None:
        provider = self.providers[account]
        vehicle = BridgedVehicle(
            slug=derived_slug(account, info.vehicle_id),
            account=account,
            vehicle_id=info.vehicle_id,
            info=info,
            name=None,
            operations=provider.supported_operations(info),
        )
        if vehicle.slug in self._account_of:
            return
        self._vehicles.append(vehicle)
        self._account_of[vehicle.slug] = account
        self._routes[vehicle.slug] = VehicleRoute(
            provider=provider, vehicle_id=vehicle.vehicle_id, supported=vehicle.operations
        )
        self._descriptions[vehicle.slug] = self._describe(vehicle)
        self.discovery.add_vehicle(self._descriptions[vehicle.slug])
        self.poller.add_vehicle(vehicle.slug, account, vehicle.vehicle_id)

    def _waiting_for_login(self, account: str) -> bool:
        return any(
            self.poller.status(v.slug).get("reauth_required")
            for v in self._vehicles
            if v.account == account
        )

    def _describe(self, vehicle: BridgedVehicle) -> VehicleDescription:
        """How discovery first offers a car: as listed, with the doors, windows and tyres it
        reported last time (so a restart sends Home Assistant the same entities again)."""
        description = VehicleDescription.from_info(
            vehicle.slug, vehicle.info, operations=vehicle.operations, name=vehicle.name
        )
        positions = self.vehicle_memory.positions(vehicle.slug)
        if positions is None:
            return description
        doors, windows, tyres = positions
        return dataclasses.replace(description, doors=doors, windows=windows, tyres=tyres)

    def _on_state(self, slug: str, state: VehicleState) -> None:
        self.metrics.polls.labels(slug).inc()
        if slug not in self.vehicles_view.latest:
            self._learn_from_read(slug, state)
            # The first read tells which doors, windows and tyres this car reports: offer those.
            offered = self._descriptions[slug]
            described = offered.with_positions_from(state)
            positions = (described.doors, described.windows, described.tyres)
            # What was offered came from the memory (or the defaults a start without one uses):
            # only a change is worth a write.
            if positions != (offered.doors, offered.windows, offered.tyres):
                self.vehicle_memory.remember_positions(slug, positions)
            self._descriptions[slug] = described
            self.discovery.add_vehicle(described)
        self.vehicles_view.remember(slug, state)
        self.publisher.update(slug, state)

    def _learn_from_read(self, slug: str, state: VehicleState) -> None:
        """A car bridged from the config alone (the car maker could not list the account at
        start, and no earlier list was remembered) has no powertrain, model or name: charging
        was not among what it could do, nor offered to Home Assistant, until a restart. Its
        first read says what it is (FordConnect v1 does), and from then on what it can do and
        what Home Assistant is offered follow."""
        index = next((i for i, v in enumerate(self._vehicles) if v.slug == slug), None)
        said = state.info
        if index is None or said is None or said.powertrain is Powertrain.UNKNOWN:
            return
        vehicle = self._vehicles[index]
        if vehicle.info.powertrain is not Powertrain.UNKNOWN:
            return
        info = dataclasses.replace(said, vehicle_id=vehicle.vehicle_id)
        provider = self.providers[vehicle.account]
        learned = dataclasses.replace(
            vehicle, info=info, operations=provider.supported_operations(info)
        )
        self._vehicles[index] = learned
        self._routes[slug] = dataclasses.replace(self._routes[slug], supported=learned.operations)
        offered = self._descriptions[slug]
        described = VehicleDescription.from_info(
            slug, info, operations=learned.operations, name=vehicle.name
        )
        self._descriptions[slug] = dataclasses.replace(
            described, doors=offered.doors, windows=offered.windows, tyres=offered.tyres
        )
        log.info(
            "vehicle described by its first read", vehicle=slug, powertrain=str(info.powertrain)
        )

    def _location_allowed(self) -> bool:
        return any(app.has(Scope.READ_LOCATION) for app in self.registry.list())

    def _command_budget_ok(self, vehicle: str) -> bool:
        account = self._account_of.get(vehicle)
        return account is not None and self.budget.admits(account)

    def _provider_hold(self, vehicle: str) -> str | None:
        """Why no command may go to this vehicle's account now: a 429's Retry-After ahead."""
        account = self._account_of.get(vehicle)
        poller = getattr(self, "poller", None)
        until = None if account is None or poller is None else poller.retry_after(account)
        if until is None:
            return None
        return (
            "the car maker asked for no calls before "
            f"{until.isoformat(timespec='seconds')} (Retry-After)"
        )

    def _confirm(self, vehicle: str) -> None:
        self.poller.request_confirmation(vehicle)

    def _confirm_foreign(self, records: list[dict[str, Any]]) -> None:
        """A command another process (`ownerlink command`) sent to one of our cars ended: read
        the car once soon, as after our own, so its lock state is the car's and not the one from
        before (an unlock left Home Assistant showing `locked` until the next regular poll)."""
        slugs = {v.slug for v in self._vehicles}
        for vehicle in {
            r.get("vehicle")
            for r in records
            if r.get("kind") == "command.outcome" and r.get("status") != "rejected"
        }:
            if isinstance(vehicle, str) and vehicle in slugs:
                self._confirm(vehicle)

    def _refused(self, account: str, error: ProviderError) -> None:
        """A 429 or 403 on the command path reaches the same account guard as a read's."""
        self.poller.refused(account, error)

    @property
    def vehicles(self) -> list[BridgedVehicle]:
        return list(self._vehicles)


def _seq(record: Mapping[str, Any]) -> int:
    """A record's seq; 0 for one without (then nothing is taken as settled)."""
    seq = record.get("seq")
    return seq if isinstance(seq, int) else 0


def claim_state_dir(state_dir: Path) -> int:
    """Take the state directory for this daemon alone, or raise StateError naming the one that
    has it. Two daemons on one directory would both poll (twice the calls the budget plans for),
    both refresh the rotating refresh token (logging each other out), and, with different broker
    client ids, both execute every command sent without an id. The lock goes with the process,
    so a daemon killed with `kill -9` leaves nothing to clean up. Returns the descriptor to keep
    open."""
    ensure_private_dir(state_dir)
    path = state_dir / INSTANCE_LOCK
    fd = open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise StateError(f"state_dir: cannot lock {path}: {exc.strerror or exc}") from exc
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StateError(
            f"another ownerlink daemon{who} is running with state_dir {state_dir}: stop it "
            "first (two daemons on one state directory would poll and refresh tokens twice, "
            "and could run a command twice)"
        ) from None
    with contextlib.suppress(OSError):  # the pid is only a hint for the message above
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _warn_if_open_to_others(state_dir: Path) -> None:
    """A directory the owner made themselves keeps its mode (it may be shared on purpose), but
    tokens and the step-up secret live in it: say so at every start, as doctor does."""
    mode = state_dir.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "state directory open to other users",
            state_dir=str(state_dir),
            mode=f"{mode:04o}",
            fix=f"chmod 700 {state_dir}",
        )
