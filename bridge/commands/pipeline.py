"""The command pipeline: parse → decide → audit (durable) → forward → result → confirming read.

Intake is synchronous on the event loop and does everything up to the durable `command.decision`
record before returning, so nothing can interleave between checking a step-up code or a command
id and recording that it was used. Forwarding then happens per vehicle, in arrival order (see
`forward.py`). Every input ends in exactly one final result; nothing raises out of `submit`.

If the audit log cannot be written, the pipeline halts: every later command is refused with
`audit_unavailable` rather than run unrecorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bridge.commands.apps import OWNER_APP, AppLookup
from bridge.commands.decide import (
    CODE_REUSED,
    NOT_ASSESSED,
    STEPUP_REASONS,
    Decision,
    Policy,
    StepUpCheck,
    StepUpStatus,
    decide,
    still_entitled,
)
from bridge.commands.delivery import result_time
from bridge.commands.forward import Forwarder, Job, VehicleRoute
from bridge.commands.noise import SUPPRESSIBLE, UNKNOWN_SENDER, RefusalRecords
from bridge.commands.parse import ParsedCommand, Refusal, build_command, parse_command
from bridge.commands.ratelimit import WINDOW_S, CommandRateLimits
from bridge.commands.reasons import BEFORE_RATE_LIMIT, Reason
from bridge.commands.records import (
    Ticket,
    decision_fields,
    outcome_fields,
    refusal_alert,
    suppressed_alert,
    suppressed_fields,
)
from bridge.commands.recover import INTERRUPTED, INTERRUPTED_DETAIL, recent_charges
from bridge.commands.results import CommandResult, Ending, error_text, state_problem
from bridge.commands.turns import CarTurns
from bridge.commands.unrecorded import KeptEnding
from bridge.config import CommandsConfig
from bridge.errors import AuditError, StateError
from bridge.events import Alert, AlertKind, AlertSink, CommandAudit
from bridge.logs import get_logger
from bridge.model import App, CommandStatus, Scope
from bridge.mqtt.topics import MAX_LEVEL, CommandTopic, Publish, PublishSink, Topics
from bridge.providers.base import OnRefused

__all__ = ["CommandPipeline", "InboundCommand", "VehicleRoute"]

Clock = Callable[[], datetime]
BudgetCheck = Callable[[str], bool]  # vehicle slug → may a command be spent on it now?
# Vehicle slug → why its account must not be called now (a 429's Retry-After), or None.
ProviderHold = Callable[[str], str | None]
OnCommandDone = Callable[[str], Awaitable[None] | None]  # vehicle slug → confirm with one read

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboundCommand:
    """A message from a command topic, as the MQTT adapter hands it over."""

    topic: str
    payload: bytes
    retain: bool
    received_at: datetime  # when the adapter received it: the age check's "now"


# Commands kept waiting while the pipeline is held (see `hold`); more are refused at once.
MAX_WAITING = 100


@dataclass(eq=False, slots=True)
class _Waiting:
    ticket: Ticket
    step: Callable[[], None]
    expiry: asyncio.TimerHandle | None = None


class StepUpVerifier(Protocol):
    """What the pipeline needs from `bridge.commands.stepup.StepUp`."""

    def assess(self, app_id: str, code: str | None, now: datetime) -> StepUpCheck: ...

    def settle(
        self, app_id: str, check: StepUpCheck, *, allowed: bool, now: datetime, vehicle: str | None
    ) -> bool: ...


class ResultSender(Protocol):
    """What the pipeline needs from `bridge.commands.delivery.ResultDelivery`."""

    def send(self, result: CommandResult, seq: int) -> None: ...


class CommandIds(Protocol):
    """What the pipeline needs from `bridge.commands.dedup.DedupStore`."""

    def seen(self, app: str, command_id: str, now: float) -> bool: ...

    def remember(self, app: str, command_id: str, now: float) -> None: ...

    def forget(self, app: str, command_id: str) -> None: ...


class KeptEndings(Protocol):
    """What the pipeline needs from `bridge.commands.unrecorded.UnrecordedEndings`."""

    def keep(self, seq: int, ending: KeptEnding) -> None: ...

    def take(self, seq: int) -> KeptEnding | None: ...

    def drop(self, seq: int) -> None: ...


class CommandPipeline:
    """Checks, records and forwards commands. `await start()` on the event loop, then submit."""

    def __init__(
        self,
        *,
        topics: Topics,
        commands: CommandsConfig,
        stepup_required_for: frozenset[Scope],
        apps: AppLookup,
        vehicles: Mapping[str, VehicleRoute],
        audit: CommandAudit,
        stepup: StepUpVerifier,
        ids: CommandIds,
        publisher: PublishSink,
        alerts: AlertSink,
        clock: Clock,
        budget_ok: BudgetCheck | None = None,
        on_command_done: OnCommandDone | None = None,
        new_id: Callable[[], str] | None = None,
        delivery: ResultSender | None = None,
        on_refused: OnRefused | None = None,
        provider_hold: ProviderHold | None = None,
        turns: CarTurns | None = None,
        kept: KeptEndings | None = None,
    ) -> None:
        self.topics = topics
        self.commands = commands
        self.policy = Policy(max_age_s=commands.max_age_s, stepup_scopes=stepup_required_for)
        self.apps = apps
        self.vehicles = vehicles
        self.audit = audit
        self.stepup = stepup
        self.ids = ids
        self.publisher = publisher
        self.alerts = alerts
        self.clock = clock
        self.budget_ok = budget_ok or (lambda _vehicle: True)
        self.provider_hold = provider_hold or (lambda _vehicle: None)
        self.on_command_done = on_command_done
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        # Final results for MQTT apps go through `delivery` when there is one, so a result a
        # crash kept from the broker is sent again on the next start (see delivery.py).
        self.delivery = delivery
        # Endings sent while their outcome record could not be written (see unrecorded.py).
        self.kept = kept
        self.rates = CommandRateLimits(commands.rate_limit_per_minute)
        self.noise = RefusalRecords(commands.refusals_recorded_per_minute)
        self._summaries: dict[str, asyncio.TimerHandle] = {}  # sender → its summary, scheduled
        self.forwarder: Forwarder[Ticket] = Forwarder(
            timeout_s=commands.timeout_s,
            on_accepted=self._accepted,
            on_done=self._complete,
            recheck=self._still_allowed,
            on_refused=on_refused,
            turns=turns,
        )
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._halted: Reason | None = None
        self._held: Reason | None = None
        self._waiting: list[_Waiting] = []  # commands that came while held, in order
        self._stopping = True

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start taking commands (workers start with the first command for each vehicle)."""
        self._stopping = False

    async def stop(self) -> None:
        """Refuse new commands, end queued ones as not sent, cancel the ones in flight."""
        self._stopping = True
        waiting, self._waiting = self._waiting, []
        for entry in waiting:  # refused: the bridge is stopping
            self._take(entry)
        for sender, handle in list(self._summaries.items()):
            handle.cancel()
            self._summarise(sender)
        await self.forwarder.stop()
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    def restore_rates(self, charges: Iterable[tuple[str, str, float]]) -> None:
        """Count commands decided before this process started, (app, vehicle, epoch) oldest
        first (`assemble.last_minute_charges`), against the rate limits. Before `start()`."""
        for app_id, vehicle, at in charges:
            self.rates.restore(app_id, vehicle, at)

    def count_elsewhere(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Count the commands of the last minute among records another process appended to the
        audit log (`ownerlink command` beside the daemon; oldest first), against the rate
        limits: a script calling it in a loop shares the car's limit with the apps."""
        since = self.clock() - timedelta(seconds=WINDOW_S)
        self.restore_rates(recent_charges(reversed(records), since))

    def finish_interrupted(self, decisions: Iterable[Mapping[str, Any]]) -> int:
        """Give every command a crash left without an outcome (`decisions`, from
        `recover.unfinished`) its final result, `timed_out`: an outcome record, and the result an
        MQTT app is waiting for. Called at start, before `start()`; for owner commands whose
        `ownerlink command` was still running then, once it has ended."""
        count = 0
        for decision in decisions:
            kept = self._kept_ending(decision.get("seq"))
            ticket = Ticket(
                source=str(decision.get("source", "mqtt")),
                app_id=decision.get("app"),
                vehicle=decision.get("vehicle"),
                command=str(decision.get("command", "")),
                received_at=self.clock(),
                future=asyncio.get_running_loop().create_future(),
                id=str(decision.get("id", "")),
                action=decision.get("action"),
            )
            ending = Ending(CommandStatus.TIMED_OUT, INTERRUPTED, INTERRUPTED_DETAIL)
            fields = outcome_fields(ticket, ending, 0.0)
            if kept is not None:  # its result went out; only its record is late
                ending = Ending(kept.status, kept.reason, kept.detail)
                fields = {**outcome_fields(ticket, ending, 0.0), "ended_at": kept.ended_at}
            try:
                record = self.audit.append("command.outcome", **fields)
            except AuditError:
                self.halt(Reason.AUDIT_UNAVAILABLE)
                return count
            if kept is not None:
                self._drop_kept(decision.get("seq"))
            self._publish(ticket, ending.status, ending.reason, ending.detail, record)
            count += 1
        return count

    def _kept_ending(self, seq: object) -> KeptEnding | None:
        if self.kept is None or not isinstance(seq, int):
            return None
        try:
            return self.kept.take(seq)
        except StateError:  # answered as interrupted, as if nothing had been kept
            log.exception("could not read the ending kept for a command", seq=seq)
            return None

    def _drop_kept(self, seq: object) -> None:
        assert self.kept is not None and isinstance(seq, int)
        try:
            self.kept.drop(seq)
        except StateError:  # harmless: the decision has its outcome, so it is not asked again
            log.exception("could not drop an ending now in the audit log", seq=seq)

    def halt(self, reason: Reason) -> None:
        """Refuse every command from now on (audit log broken, or tampered with at start)."""
        if self._halted is None:
            log.error("command pipeline halted", reason=str(reason))
            if reason is Reason.AUDIT_UNAVAILABLE:
                self._audit_failed()
        self._halted = reason

    def _audit_failed(self) -> None:
        """Tell the owner at once: every command is refused from now on, and the one that met
        the failure may have been a refusal that raises no alert of its own."""
        message = (
            "the audit log cannot be written (a full or read-only disk?): every command is "
            "refused until Ownerlink is restarted with the log writable"
        )
        try:
            self.alerts.emit(Alert(AlertKind.AUDIT_FAILED, message, self.clock()))
        except Exception:
            log.exception("could not raise the audit alert")

    def hold(self, reason: Reason) -> None:
        """Keep new commands waiting until `release()` (the daemon's start-up check of the audit
        log, usually a second): they are taken in order then. One that waits longer than
        `commands.max_age_s`, or beyond `MAX_WAITING`, is refused with `reason`."""
        self._held = reason

    def release(self) -> None:
        """Take the waiting commands, in the order they came (refused if halted meanwhile)."""
        self._held = None
        waiting, self._waiting = self._waiting, []
        for entry in waiting:
            self._take(entry)

    @property
    def halted(self) -> Reason | None:
        return self._halted

    # -- intake ----------------------------------------------------------------------------------

    def submit(self, inbound: InboundCommand) -> asyncio.Future[CommandResult]:
        """Take a command from MQTT; call on the event loop. The future gets the final result."""
        topic = self.topics.parse_command(inbound.topic)
        ticket = self._ticket("mqtt", topic, inbound.received_at, retained=inbound.retain)
        self._guarded(ticket, lambda: self._from_mqtt(ticket, topic, inbound))
        return ticket.future

    async def submit_owner(
        self,
        vehicle: str,
        command: str,
        action: str,
        *,
        code: str | None = None,
        id: str | None = None,  # noqa: A002 - the contract's name
    ) -> CommandResult:
        """A command from the owner (the CLI): every scope, but step-up and audit still apply."""
        where = CommandTopic(OWNER_APP.id, vehicle, command)
        ticket = self._ticket("owner", where, self.clock(), app=OWNER_APP)
        self._guarded(ticket, lambda: self._from_fields(ticket, action, code, id, None))
        return await ticket.future

    async def submit_api(
        self,
        app_id: str,
        vehicle: str,
        command: str,
        action: str,
        *,
        code: str | None = None,
        id: str | None = None,  # noqa: A002 - the contract's name
        issued_at: Any = None,
        granted: frozenset[Scope] | None = None,
    ) -> CommandResult:
        """A command from a REST app (already authenticated by its bearer token, whose scopes
        are `granted`: the command needs its scope in both the app and the token)."""
        where = CommandTopic(app_id, vehicle, command)
        ticket = self._ticket("api", where, self.clock())
        ticket.granted = granted
        self._guarded(ticket, lambda: self._from_fields(ticket, action, code, id, issued_at))
        return await ticket.future

    def _ticket(
        self,
        source: str,
        where: CommandTopic | None,
        received_at: datetime,
        *,
        retained: bool = False,
        app: App | None = None,
    ) -> Ticket:
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        if where is None:
            return Ticket(source, None, None, "", received_at, future, retained, app)
        return Ticket(
            source, where.app, where.vehicle, where.command, received_at, future, retained, app
        )

    def _guarded(self, ticket: Ticket, step: Callable[[], None]) -> None:
        """Run an intake step now, or once `release()` comes while the pipeline is held."""
        if self._held is None or self._stopping or len(self._waiting) >= MAX_WAITING:
            self._run(ticket, step)  # held and full: refused now, with the hold's reason
            return
        entry = _Waiting(ticket, step)
        loop = asyncio.get_running_loop()
        entry.expiry = loop.call_later(self.commands.max_age_s, self._expire, entry)
        self._waiting.append(entry)

    def _expire(self, entry: _Waiting) -> None:
        if entry in self._waiting:
            self._waiting.remove(entry)
            self._take(entry)  # still held: refused with the hold's reason

    def _take(self, entry: _Waiting) -> None:
        if entry.expiry is not None:
            entry.expiry.cancel()
        entry.ticket.checked_at = self.clock()
        self._run(entry.ticket, entry.step)

    def _run(self, ticket: Ticket, step: Callable[[], None]) -> None:
        """Run an intake step; whatever goes wrong, the command still gets one final result.

        Each step resolves the future last, after anything that could raise, so a command that
        was queued for the car can never also be reported refused from here.
        """
        try:
            step()
        except Exception as exc:
            log.exception("command intake failed", app=ticket.app_id, vehicle=ticket.vehicle)
            if not ticket.future.done():
                ticket.id = ticket.id or self.new_id()
                self._fail_internal(ticket, error_text(exc))

    def _fail_internal(self, ticket: Ticket, detail: str) -> None:
        """A fault of ours ended intake: refuse the command, and put that refusal on the record
        unless its decision is there already (a refusal nobody can see afterwards is no proof)."""
        if not ticket.decided:
            try:
                self._refuse(ticket, Reason.INTERNAL_ERROR, detail)
            except Exception:
                log.exception("could not record an internal error", command_id=ticket.id)
        if not ticket.future.done():
            self._finish(ticket, CommandStatus.REJECTED, Reason.INTERNAL_ERROR, detail)

    def _from_mqtt(
        self, ticket: Ticket, topic: CommandTopic | None, inbound: InboundCommand
    ) -> None:
        if topic is None:
            detail = f"not a command topic, or a level longer than {MAX_LEVEL} characters"
            self._refuse(ticket, Reason.MALFORMED, detail)
            return
        parsed = parse_command(
            topic, inbound.payload, retain=inbound.retain, max_bytes=self.commands.max_payload_bytes
        )
        self._process(ticket, parsed)

    def _from_fields(
        self, ticket: Ticket, action: str, code: str | None, cid: str | None, issued_at: Any
    ) -> None:
        assert ticket.app_id is not None and ticket.vehicle is not None
        parsed = build_command(
            ticket.app_id,
            ticket.vehicle,
            ticket.command,
            action=action,
            code=code,
            id=cid,
            issued_at=issued_at,
        )
        self._process(ticket, parsed)

    # -- deciding --------------------------------------------------------------------------------

    def _process(self, ticket: Ticket, parsed: ParsedCommand | Refusal) -> None:
        ticket.id, ticket.action = parsed.id or self.new_id(), parsed.action
        if isinstance(parsed, Refusal):
            self._refuse(ticket, parsed.reason, parsed.detail, alert=parsed.alert)
            return
        stop = self._halted or (Reason.SHUTTING_DOWN if self._stopping else None) or self._held
        if stop is not None:
            self._refuse(ticket, stop, "the bridge is not taking commands")
            return
        try:
            decision, check = self._spend(ticket, parsed, *self._decide(ticket, parsed))
        except StateError as exc:
            log.error("command refused: the state is unusable", error=str(exc))  # noqa: TRY400
            self._refuse(ticket, Reason.STATE_UNAVAILABLE, state_problem(exc))
            return
        if decision.allowed:
            self._accept(ticket, parsed, decision, check)
        else:
            self._refuse(ticket, decision.reason, decision.detail, decision, check)

    def _decide(self, ticket: Ticket, cmd: ParsedCommand) -> tuple[Decision, StepUpCheck]:
        app = ticket.app = ticket.app or self._current(cmd.app, ticket.granted)
        route = self.vehicles.get(cmd.vehicle)
        now = ticket.judged_at
        epoch = now.timestamp()
        decided = functools.partial(
            decide,
            cmd,
            app=app,
            vehicle_known=route is not None,
            supported=route.supported if route else frozenset(),
            now=now,
            policy=self.policy,
            seen_id=bool(cmd.id and app and self.ids.seen(app.id, cmd.id, epoch)),
            rate_ok=app is None or self.rates.allows(app, cmd.vehicle, epoch),
            budget_ok=route is None or self.budget_ok(cmd.vehicle),
            provider_hold=None if route is None else self.provider_hold(cmd.vehicle),
        )
        decision = decided(stepup=NOT_ASSESSED)
        if app is None or decision.reason not in STEPUP_REASONS:
            return decision, NOT_ASSESSED
        # Every other check passed: only now is the code looked at, so a command refused for
        # anything else never has its code judged, counted, or even timed.
        check = self.stepup.assess(app.id, cmd.code, now)
        return decided(stepup=check), check

    def _current(self, app_id: str, granted: frozenset[Scope] | None) -> App | None:
        app = self.apps.current(app_id)
        if app is None or granted is None:
            return app
        return dataclasses.replace(app, scopes=app.scopes & granted)

    def _spend(
        self, ticket: Ticket, cmd: ParsedCommand, decision: Decision, check: StepUpCheck
    ) -> tuple[Decision, StepUpCheck]:
        """Use up what the decision consumed: rate allowance, the step-up code, the command id.
        Returns the decision as it stands after: refused if another process took the same
        step-up code between checking and taking it."""
        app, epoch = ticket.app, ticket.judged_at.timestamp()
        if app is None:
            return decision, check
        if decision.reason not in BEFORE_RATE_LIMIT:
            self.rates.record(app, cmd.vehicle, epoch)
        if check is not NOT_ASSESSED and not self.stepup.settle(
            app.id, check, allowed=decision.allowed, now=ticket.judged_at, vehicle=cmd.vehicle
        ):
            check = StepUpCheck(StepUpStatus.FAILED, detail=CODE_REUSED)
            decision = dataclasses.replace(
                decision, allowed=False, reason=Reason.STEPUP_FAILED, detail=CODE_REUSED
            )
        if decision.allowed and cmd.id:
            self.ids.remember(app.id, cmd.id, epoch)
            ticket.id_remembered = True
        return decision, check

    def _refuse(
        self,
        ticket: Ticket,
        reason: Reason,
        detail: str,
        decision: Decision | None = None,
        check: StepUpCheck = NOT_ASSESSED,
        *,
        alert: bool = True,
    ) -> None:
        """End a command as rejected: audit it (unless the log is broken, or the sender is
        flooding: see `noise.py`), alert, publish."""
        ticket.id = ticket.id or self.new_id()
        record = None
        if self._halted is None and self._counted_not_recorded(ticket, reason):
            ticket.decided, alert = True, False  # the summary record speaks for it
        elif self._halted is None:
            try:
                record = self.audit.append(
                    "command.decision", **decision_fields(ticket, reason, detail, decision, check)
                )
                ticket.decided = True
            except AuditError as exc:
                self.halt(Reason.AUDIT_UNAVAILABLE)
                detail = f"{detail}; the audit log failed: {error_text(exc)}"
        if alert:
            self._alert(ticket, reason)
        self._finish(ticket, CommandStatus.REJECTED, reason, detail, record)

    # -- refusals too fast to record one by one ---------------------------------------------------

    def _counted_not_recorded(self, ticket: Ticket, reason: Reason) -> bool:
        """Is this refusal past its sender's allowance? Then it is counted for the summary."""
        if reason not in SUPPRESSIBLE or self._stopping:
            return False  # step-up and budget refusals, and any while stopping: always recorded
        sender, now = self._sender(ticket), ticket.judged_at.timestamp()
        if self.noise.admit(sender, now):
            return False
        if self.noise.suppress(sender, str(reason), now):
            loop = asyncio.get_running_loop()
            self._summaries[sender] = loop.call_later(self.noise.window_s, self._summarise, sender)
        return True

    def _sender(self, ticket: Ticket) -> str:
        """Whose allowance a refusal uses: a known app's own, or the one all unknown share."""
        if ticket.app is not None:
            return ticket.app.id
        if ticket.app_id:
            try:
                if self.apps.current(ticket.app_id) is not None:
                    return ticket.app_id
            except Exception:  # noqa: BLE001 - the refusal being recorded may be this failure's
                log.debug("sender lookup failed; counted as unknown", app=ticket.app_id)
        return UNKNOWN_SENDER

    def _summarise(self, sender: str) -> None:
        """Record (and alert) the run of refusals counted for `sender`."""
        self._summaries.pop(sender, None)
        run = self.noise.take(sender)
        if run is None or self._halted is not None:
            return
        try:
            self.audit.append("command.suppressed", **suppressed_fields(sender, run))
        except AuditError:
            self.halt(Reason.AUDIT_UNAVAILABLE)
        try:
            self.alerts.emit(suppressed_alert(sender, run, self.clock()))
        except Exception:
            log.exception("could not raise a command alert", app=sender)

    def _accept(
        self, ticket: Ticket, cmd: ParsedCommand, decision: Decision, check: StepUpCheck
    ) -> None:
        try:
            # In the file (its place in the chain fixed) now; on disk before the request leaves.
            pending = self.audit.append_pending(
                "command.decision", **decision_fields(ticket, Reason.OK, "", decision, check)
            )
            ticket.decided = True
            ticket.decision_seq = pending.record.get("seq")
        except AuditError as exc:
            # Not durable means not forwarded: stop here, and for every command after this one.
            self.halt(Reason.AUDIT_UNAVAILABLE)
            self._alert(ticket, Reason.AUDIT_UNAVAILABLE)
            self._finish(ticket, CommandStatus.REJECTED, Reason.AUDIT_UNAVAILABLE, error_text(exc))
            return
        ticket.scope, ticket.issued_at = decision.scope, cmd.issued_at
        route = self.vehicles[cmd.vehicle]
        self.forwarder.enqueue(Job(cmd.vehicle, route, cmd.operation, ticket, ready=pending))

    # -- after forwarding ------------------------------------------------------------------------

    def _still_allowed(self, job: Job[Ticket]) -> Ending | None:
        """A command that waited behind another for its car: is its app still entitled to it,
        and is it still young enough? (Revoked, disabled or without the scope now, or older than
        `commands.max_age_s` by its `issued_at`: it ends `rejected`, never sent.)"""
        ticket = job.ticket
        hold = self.provider_hold(job.vehicle)
        if hold is not None:  # the command before it met a 429: nothing goes before Retry-After
            return Ending(CommandStatus.REJECTED, Reason.PROVIDER_RATE_LIMITED, hold)
        if ticket.issued_at is not None:
            age = (self.clock() - ticket.issued_at).total_seconds()
            if age > self.policy.max_age_s:
                limit = f"the limit is {self.policy.max_age_s:g} s"
                detail = f"issued {age:.1f} s ago when its turn came at the car; {limit}"
                return Ending(CommandStatus.REJECTED, Reason.TOO_OLD, detail)
        if ticket.app is OWNER_APP or ticket.app_id is None or ticket.scope is None:
            return None
        try:
            app = self._current(ticket.app_id, ticket.granted)
        except StateError as exc:
            log.error("command refused: the state is unusable", error=str(exc))  # noqa: TRY400
            return Ending(CommandStatus.REJECTED, Reason.STATE_UNAVAILABLE, state_problem(exc))
        refusal = still_entitled(app, ticket.scope)
        if refusal is None:
            return None
        return Ending(CommandStatus.REJECTED, *refusal)

    def _accepted(self, job: Job[Ticket]) -> None:
        self._publish(job.ticket, CommandStatus.ACCEPTED, Reason.OK, "")

    def _complete(self, job: Job[Ticket], ending: Ending) -> None:
        """Audit the outcome, publish the final result, then ask for a confirming read."""
        ticket, detail = job.ticket, ending.detail
        if ending.reason == Reason.AUDIT_UNAVAILABLE:
            self.halt(Reason.AUDIT_UNAVAILABLE)  # its decision record never reached the disk
        elapsed = (self.clock() - ticket.received_at).total_seconds()
        record, ended_at = None, None
        try:
            record = self.audit.append("command.outcome", **outcome_fields(ticket, ending, elapsed))
        except AuditError as exc:
            self.halt(Reason.AUDIT_UNAVAILABLE)
            failure = error_text(exc)  # said once: it may be what ended the command too
            if failure not in detail:
                detail = "; ".join(filter(None, (detail, f"audit log failed: {failure}")))
            ended_at = self._keep(ticket, ending, detail)
        if ending.status is CommandStatus.REJECTED or not job.sent:
            self._free_id(ticket)  # it never reached the car: the client may send it again
        self._finish(ticket, ending.status, ending.reason, detail, record, ts=ended_at)
        if job.sent and ending.status is not CommandStatus.REJECTED:
            self._confirm(job.vehicle)

    def _keep(self, ticket: Ticket, ending: Ending, detail: str) -> datetime:
        """Keep an ending the audit log would not take for the next start to record (instead
        of answering the command as interrupted); when it was known, for its result's `ts`."""
        ended_at = self.clock()
        if self.kept is None or ticket.decision_seq is None:
            return ended_at
        try:
            kept = KeptEnding(ending.status, str(ending.reason), detail, ended_at)
            self.kept.keep(ticket.decision_seq, kept)
        except StateError:  # the next start answers it as interrupted, as before
            log.exception("could not keep an ending the audit log refused", command_id=ticket.id)
        return ended_at

    def _free_id(self, ticket: Ticket) -> None:
        if not ticket.id_remembered or ticket.app_id is None:
            return
        try:
            self.ids.forget(ticket.app_id, ticket.id)
        except StateError:  # still remembered: a retry is refused, never run twice
            log.exception("could not free a command id", command_id=ticket.id)

    def _confirm(self, vehicle: str) -> None:
        """Ask the polling side for one read, so state is updated from the car, not assumed."""
        if self.on_command_done is None:
            return
        try:
            pending = self.on_command_done(vehicle)
        except Exception:
            log.exception("confirmation read could not be started", vehicle=vehicle)
            return
        if inspect.isawaitable(pending):
            task = asyncio.ensure_future(pending)
            self._side_tasks.add(task)
            task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[Any]) -> None:
        self._side_tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("confirmation read failed", error=error_text(error))

    # -- results ---------------------------------------------------------------------------------

    def _finish(
        self,
        ticket: Ticket,
        status: CommandStatus,
        reason: str,
        detail: str,
        record: Mapping[str, Any] | None = None,
        *,
        ts: datetime | None = None,
    ) -> None:
        result = self._publish(ticket, status, reason, detail, record, ts=ts)
        if not ticket.future.done():
            ticket.future.set_result(result)
        if ticket.app is not None and ticket.app is not OWNER_APP:
            self._touch(ticket)

    def _publish(
        self,
        ticket: Ticket,
        status: CommandStatus,
        reason: str,
        detail: str,
        record: Mapping[str, Any] | None = None,
        *,
        ts: datetime | None = None,
    ) -> CommandResult:
        """Publish one step of a command's life. `record` is the audit record that decided a
        final result: the result carries its time, so a copy sent after a crash is identical
        (`ts` when there is none, the time a kept ending was known: `result_time`)."""
        result = CommandResult(
            id=ticket.id,
            command=ticket.command,
            action=ticket.action,
            status=status,
            reason=str(reason),
            ts=result_time(record) or ts or self.clock(),
            app=ticket.app_id,
            vehicle=ticket.vehicle,
            detail=detail,
        )
        if ticket.source == "mqtt" and ticket.app_id and ticket.vehicle is not None:
            try:
                seq = record.get("seq") if record is not None else None
                if self.delivery is not None and result.final and isinstance(seq, int):
                    self.delivery.send(result, seq)
                else:
                    topic = self.topics.result(ticket.app_id, ticket.vehicle)
                    self.publisher.publish(Publish(topic, result.payload()))
            except Exception:
                log.exception("could not publish a command result", command_id=ticket.id)
        return result

    def _alert(self, ticket: Ticket, reason: Reason) -> None:
        try:
            self.alerts.emit(refusal_alert(ticket, reason, self.clock()))
        except Exception:
            log.exception("could not raise a command alert", command_id=ticket.id)

    def _touch(self, ticket: Ticket) -> None:
        assert ticket.app_id is not None
        try:
            self.apps.touch(ticket.app_id, ticket.command)
        except Exception:
            log.exception("could not record app activity", app=ticket.app_id)
