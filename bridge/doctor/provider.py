"""Provider checks, pure: reachability and clock from the CLI's answers, and `--online`'s call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from bridge.doctor.model import BUDGET_FIX, Check, failed, passed, plural, relogin, span, warning
from bridge.errors import (
    BudgetExhausted,
    Forbidden,
    ProviderError,
    RateLimited,
    ReauthRequired,
)

# Step-up codes move every 30 s and we accept one step either way; Ford checks token lifetimes
# against its own clock. Beyond this much skew, codes and tokens start failing in odd ways.
MAX_CLOCK_SKEW_S = 30.0


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What one request without credentials to a provider URL got back."""

    label: str  # "API" or "token endpoint"
    url: str
    received_at: datetime  # local clock when the answer arrived
    status: int | None = None
    server_date: datetime | None = None  # the server's `Date` header
    error: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def skew_s(self) -> float | None:
        """How far the local clock is ahead of the server's (negative: behind)."""
        if self.server_date is None:
            return None
        return (self.received_at - self.server_date).total_seconds()


def check_provider(account: str, answers: Sequence[HttpAnswer]) -> Check:
    """Pure: the account's API and token endpoint answered (any HTTP status below 500)."""
    name = f"provider: {account}"
    broken = [a for a in answers if a.error is not None]
    if broken:
        return failed(
            name,
            "; ".join(f"{a.label} {a.host}: {a.error}" for a in broken),
            "check this machine's internet access, DNS, proxy and firewall; if api_base_url or "
            "token_url are set for this account, check them",
        )
    down = [a for a in answers if a.status is not None and a.status >= 500]
    if down:
        return warning(
            name,
            "; ".join(f"{a.label} {a.host} answers HTTP {a.status}" for a in down),
            "nothing to fix here: the car maker's service is in trouble; the daemon backs off "
            "and retries",
        )
    seen = ", ".join(f"{a.label} {a.host} HTTP {a.status}" for a in answers)
    return passed(name, f"{seen} (asked without a token: no budget spent)")


def check_clock(answers: Sequence[HttpAnswer]) -> Check:
    """Pure: the local clock against the servers' `Date` headers; more than 30 s off fails."""
    dated = [a for a in answers if a.skew_s is not None]
    if not dated:
        return warning(
            "clock",
            "no server answered with a Date header, so the clock was not compared",
            "check that time sync runs: timedatectl status (or chronyc tracking)",
        )
    worst = max(dated, key=lambda a: abs(a.skew_s or 0.0))
    skew = worst.skew_s or 0.0
    if abs(skew) <= MAX_CLOCK_SKEW_S:
        return passed("clock", f"within {abs(skew):.0f} s of {worst.host}")
    direction = "ahead of" if skew > 0 else "behind"
    return failed(
        "clock",
        f"this machine's clock is {span(abs(skew))} {direction} {worst.host} "
        f"(more than {MAX_CLOCK_SKEW_S:g} s): step-up codes and token expiry go wrong",
        "turn on time sync: sudo timedatectl set-ntp true (or install chrony); in a container, "
        "fix the host's clock",
    )


def judge_online(
    account: str, error: ProviderError | None, vehicles: int, uncovered: Sequence[str] = ()
) -> Check:
    """Pure: the outcome of `--online`'s one list-vehicles call; `uncovered` names the configured
    vehicles the list does not cover (`bridge.vehicles.coverage_problems`)."""
    name = f"online: {account}"
    if error is None:
        return _listed(name, vehicles, uncovered)
    if isinstance(error, ReauthRequired):
        return failed(name, str(error), relogin(account))
    if isinstance(error, BudgetExhausted):
        return warning(name, "not asked: the call budget is used up", BUDGET_FIX)
    if isinstance(error, RateLimited):
        return failed(
            name,
            f"Ford is throttling this account (retry after {error.retry_after:g} s)",
            _SHARED_ACCOUNT_FIX,
        )
    if isinstance(error, Forbidden):
        return failed(
            name,
            f"Ford refused the account: {error}",
            "if Ford suspended it for too many calls, wait it out (often a day); "
            + _SHARED_ACCOUNT_FIX,
        )
    return failed(
        name,
        str(error),
        "run doctor again later; if it persists, check the account's "
        "api_base_url and the car maker's status page",
    )


def _listed(name: str, vehicles: int, uncovered: Sequence[str]) -> Check:
    listed = f"listed {plural(vehicles, 'vehicle')}; 1 call charged to the budget"
    if not uncovered:
        return passed(name, listed)
    return failed(
        name,
        f"{listed}; " + "; ".join(uncovered),
        "set each vehicle's id to one that `ownerlink vehicles` lists for this account",
    )


_SHARED_ACCOUNT_FIX = (
    "stop other integrations that poll the same Ford login, and keep budget.calls_per_day at or "
    "below 250"
)
