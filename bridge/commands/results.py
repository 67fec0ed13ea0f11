"""How a command ended: the result value, its MQTT document, and provider errors mapped to it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.commands.reasons import Reason
from bridge.errors import (
    AuditError,
    AuthUnavailable,
    BudgetExhausted,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    ReauthRequired,
    Unsupported,
)
from bridge.logs import scrub_text
from bridge.model import CommandOutcome, CommandStatus
from bridge.mqtt.topics import encode

FINAL_STATUSES = frozenset(
    {CommandStatus.REJECTED, CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.TIMED_OUT}
)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One step of a command's life, as published on `<base>/app/<app>/<vehicle>/result`."""

    id: str
    command: str
    action: str | None
    status: CommandStatus
    reason: str
    ts: datetime
    app: str | None = None
    vehicle: str | None = None
    detail: str = ""

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_document(self) -> dict[str, Any]:
        """The MQTT/REST payload: the contract's keys, plus `detail` when there is one."""
        doc: dict[str, Any] = {
            "id": self.id,
            "command": self.command,
            "action": self.action,
            "status": self.status.value,
            "reason": self.reason,
            "ts": self.ts.isoformat(timespec="milliseconds"),
        }
        if self.detail:
            doc["detail"] = self.detail
        return doc

    def payload(self) -> str:
        return encode(self.as_document())


# (exception type, status before the car accepted it, why). The first matching row wins.
_ERRORS: tuple[tuple[type[Exception], CommandStatus, Reason], ...] = (
    # The decision record never reached the disk, so the request was held back: not sent.
    (AuditError, CommandStatus.REJECTED, Reason.AUDIT_UNAVAILABLE),
    (Unsupported, CommandStatus.REJECTED, Reason.UNSUPPORTED),
    (BudgetExhausted, CommandStatus.REJECTED, Reason.BUDGET_EXHAUSTED),
    (Forbidden, CommandStatus.FAILED, Reason.FORBIDDEN),
    (ReauthRequired, CommandStatus.FAILED, Reason.REAUTH_REQUIRED),
    (RateLimited, CommandStatus.FAILED, Reason.PROVIDER_RATE_LIMITED),
    (NotFound, CommandStatus.FAILED, Reason.NOT_FOUND),
    # No connection, or no token to send it with: the request never left.
    (ProviderUnreachable, CommandStatus.FAILED, Reason.PROVIDER_UNAVAILABLE),
    (AuthUnavailable, CommandStatus.FAILED, Reason.PROVIDER_UNAVAILABLE),
    # A 5xx or a dropped connection may come after the request reached the car: not "failed".
    (ProviderUnavailable, CommandStatus.TIMED_OUT, Reason.PROVIDER_UNAVAILABLE),
    (TimeoutError, CommandStatus.TIMED_OUT, Reason.TIMEOUT),
)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a forwarded command ended, before it becomes a published result."""

    status: CommandStatus
    reason: str
    detail: str = ""
    provider_command_id: str | None = None


def ending_for_error(exc: BaseException, *, accepted: bool) -> Ending:
    """Map a provider error to an ending. Once the car has accepted the command, nothing that goes
    wrong afterwards can show it did not run: every such error becomes `timed_out`."""
    status, reason = CommandStatus.FAILED, Reason.INTERNAL_ERROR
    for kind, row_status, row_reason in _ERRORS:
        if isinstance(exc, kind):
            status, reason = row_status, row_reason
            break
    if accepted:
        status = CommandStatus.TIMED_OUT
    return Ending(status, reason.value, error_text(exc))


_OUTCOME_REASONS = {
    CommandStatus.SUCCEEDED: Reason.OK,
    CommandStatus.FAILED: Reason.VEHICLE_FAILED,
    CommandStatus.TIMED_OUT: Reason.TIMEOUT,
    CommandStatus.REJECTED: Reason.VEHICLE_FAILED,
}


def ending_for_outcome(outcome: CommandOutcome) -> Ending:
    """The provider's own final word (its text goes in `detail`; `reason` stays a fixed word).
    A non-final status from it is treated as `timed_out`."""
    status = outcome.status if outcome.status in FINAL_STATUSES else CommandStatus.TIMED_OUT
    reason = _OUTCOME_REASONS[status].value
    if status is CommandStatus.TIMED_OUT and outcome.cause in _CAUSES:
        reason = outcome.cause
    return Ending(status, reason, error_text(outcome.reason), outcome.provider_command_id)


# Causes a provider may give for a verdict it could not get (CommandOutcome.cause).
_CAUSES = frozenset(
    {
        Reason.BUDGET_EXHAUSTED.value,
        Reason.NOT_FOUND.value,
        Reason.PROVIDER_RATE_LIMITED.value,
        Reason.FORBIDDEN.value,
    }
)


# An absolute path's folders, not inside a URL ("https://host/a/b" is left alone).
_FOLDERS = re.compile(r"(?<![\w./:~-])/(?:[^\s/:]+/)+(?=[^\s/:])")


def state_problem(problem: BaseException) -> str:
    """`error_text` for a problem with the state directory, which goes to the app in its result:
    a file is named, the folders it lives in on the owner's machine are not (the owner's log
    names them in full)."""
    return _FOLDERS.sub("", error_text(problem))


def error_text(problem: BaseException | str) -> str:
    """An exception (or a provider's text) as one short line, secret-looking parts scrubbed."""
    text = problem if isinstance(problem, str) else (str(problem) or type(problem).__name__)
    first = text.splitlines()[0] if text else ""
    return scrub_text(first)[:200]
