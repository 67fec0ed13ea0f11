"""What every doctor check returns (`Check`), its three verdicts, and wording shared by checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_STATUS = {True: "ok", None: "warn", False: "fail"}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: `ok` is True (passed), None (warning) or False (failed)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None

    @property
    def status(self) -> str:
        return _STATUS[self.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def warning(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, None, detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def relogin(account: str) -> str:
    return f"run: ownerlink login {account}"


AS_DAEMON_USER = (
    "run doctor as the user the daemon runs as (e.g. sudo -u ownerlink ownerlink doctor)"
)


BUDGET_FIX = (
    "nothing to do: polling resumes by itself and commands keep their reserve; raising "
    "budget.calls_per_day risks Ford suspending the account"
)


RESERVE_FIX = (
    "wait: commands go through again as calls leave the window; raising budget.calls_per_day "
    "or calls_per_hour risks Ford suspending the account"
)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def span(seconds: float) -> str:
    """A duration the way a person says it: 40 s, 14 min, 3 h, 89 days."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
