"""What the pipeline writes down about a command: its ticket, audit records and refusal alerts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.commands.decide import NOT_ASSESSED, Decision, StepUpCheck
from bridge.commands.noise import UNKNOWN_SENDER, Suppressed
from bridge.commands.reasons import Reason
from bridge.commands.results import CommandResult, Ending
from bridge.events import Alert, AlertKind
from bridge.model import App, Scope


@dataclass(slots=True)
class Ticket:
    """Everything known about one command on its way through the pipeline."""

    source: str  # mqtt | owner | api
    app_id: str | None
    vehicle: str | None
    command: str
    received_at: datetime
    future: asyncio.Future[CommandResult]
    retained: bool = False
    app: App | None = None
    id: str = ""
    action: str | None = None
    # A REST caller's token scopes: the command is decided on what the app and the token both
    # hold (the owner may have consented to less than the app has). None: the app's own.
    granted: frozenset[Scope] | None = None
    decided: bool = False  # its command.decision record is in the audit log
    scope: Scope | None = None  # the scope an allowed command was decided on
    # When its checks ran, when that was later than `received_at`: a command that waited for the
    # start-up check is judged (its age above all) at the moment it is taken, not when it came.
    checked_at: datetime | None = None
    # The sender's `issued_at`: a command that waits behind another for its car must still be
    # younger than the maximum age when its turn comes (a firm limit is what the sender asked for).
    issued_at: datetime | None = None
    id_remembered: bool = False  # its client-given id is in the de-duplication store
    decision_seq: int | None = None  # the seq of the record that allowed it

    @property
    def judged_at(self) -> datetime:
        return self.checked_at or self.received_at


def decision_fields(
    ticket: Ticket, reason: Reason, detail: str, decision: Decision | None, check: StepUpCheck
) -> dict[str, Any]:
    """The `command.decision` record: who asked for what, and the verdict. Never the code."""
    return _present(
        {
            **_who(ticket),
            "operation": decision.operation if decision else None,
            "scope": decision.scope if decision else None,
            "decision": "allowed" if reason is Reason.OK else "refused",
            "reason": reason,
            "detail": detail or None,
            "stepup": None if check is NOT_ASSESSED else check.status.value,
            "retained": ticket.retained or None,
            "received_at": ticket.received_at,
        }
    )


def outcome_fields(ticket: Ticket, ending: Ending, elapsed_s: float) -> dict[str, Any]:
    """The `command.outcome` record: how it ended at the car."""
    return _present(
        {
            **_who(ticket),
            "status": ending.status.value,
            "reason": ending.reason,
            "detail": ending.detail or None,
            "provider_command_id": ending.provider_command_id,
            "elapsed_ms": round(elapsed_s * 1000),
        }
    )


def refusal_alert(ticket: Ticket, reason: Reason, ts: datetime) -> Alert:
    """The COMMAND_REFUSED alert the owner sees."""
    what = " ".join(filter(None, (ticket.command, ticket.action)))
    return Alert(
        AlertKind.COMMAND_REFUSED,
        f"{what or 'command'} from {ticket.app_id or 'an unknown sender'} refused: {reason}",
        ts,
        app=ticket.app_id,
        vehicle=ticket.vehicle,
        details=_present(
            {
                "id": ticket.id,
                "command": ticket.command,
                "action": ticket.action,
                "reason": str(reason),
                "source": ticket.source,
            }
        ),
    )


def suppressed_fields(sender: str, run: Suppressed) -> dict[str, Any]:
    """The `command.suppressed` record: refusals counted rather than recorded one by one."""
    return _present(
        {
            "app": None if sender == UNKNOWN_SENDER else sender,
            "refused": run.count,
            "reasons": dict(sorted(run.reasons.items())),
            "first": _iso(run.first),
            "last": _iso(run.last),
        }
    )


def suppressed_alert(sender: str, run: Suppressed, ts: datetime) -> Alert:
    """One alert for a run of refusals too fast to record (or alert) one by one."""
    who = "unknown senders" if sender == UNKNOWN_SENDER else sender
    return Alert(
        AlertKind.COMMAND_REFUSED,
        f"{run.count} more refused commands from {who} within a minute: counted, not recorded "
        "one by one",
        ts,
        app=None if sender == UNKNOWN_SENDER else sender,
        details={"refused": run.count, "reasons": dict(sorted(run.reasons.items()))},
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _who(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "source": ticket.source,
        "app": ticket.app_id,
        "vehicle": ticket.vehicle,
        "command": ticket.command,
        "action": ticket.action,
    }


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields: shorter lines, and `null` never has to be told apart from absent."""
    return {key: value for key, value in fields.items() if value is not None}
