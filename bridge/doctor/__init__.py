"""The checks behind `ownerlink doctor`: each looks at one thing and returns a Check with a fix.

A check never raises for the problem it looks for; it returns `Check(name, ok, detail, fix)`
where `ok` is True (passed), None (a warning: worth knowing, nothing is broken) or False
(failed: `fix` says what to do). The CLI (`bridge/cli/doctor.py`) composes them and prints.

Doctor only looks: it publishes nothing, never connects with the daemon's client id (which would
kick the running daemon off the broker) and never spends the owner's API budget. The provider is
probed with httpx by the CLI, so this package, which talks to the broker, keeps to one side of the
paho/httpx line; what the CLI learned arrives here as plain `HttpAnswer` data.

Layout: `model` (Check and shared wording), `config`, `state` (directory, private files,
database, step-up secret and lockouts), `broker` (TCP, TLS, CONNACK, enforcement; the only module
importing paho), `logins` (tokens), `provider` (pure judgements of the CLI's answers) and
`records` (budget and audit). The names below are the package's public face: import them from
`bridge.doctor`.
"""

from __future__ import annotations

from bridge.doctor.broker import (
    BAD_AUTH_METHOD,
    BAD_CLIENT_ID,
    BAD_CREDENTIALS,
    BAD_PROTOCOL,
    BANNED,
    BUSY,
    NOT_AUTHORISED,
    UNAVAILABLE,
    Connack,
    check_acl_files,
    check_broker,
    check_broker_reachable,
    check_broker_tls,
    check_dynsec,
    check_enforcement,
    judge_connack,
    probe_connack,
)
from bridge.doctor.config import check_config
from bridge.doctor.logins import RELOGIN_WARNING, check_tokens, judge_tokens
from bridge.doctor.model import Check, failed, passed, relogin, warning
from bridge.doctor.provider import (
    MAX_CLOCK_SKEW_S,
    HttpAnswer,
    check_clock,
    check_provider,
    judge_online,
)
from bridge.doctor.records import check_audit, check_audit_fsync, check_budgets, judge_budget
from bridge.doctor.state import (
    PRIVATE_MODE_BITS,
    can_look_inside,
    check_app_ids,
    check_database,
    check_private_files,
    check_state,
    check_state_dir,
    check_stepup_lockouts,
    check_stepup_secret,
    private_files,
)

__all__ = [
    "BAD_AUTH_METHOD",
    "BAD_CLIENT_ID",
    "BAD_CREDENTIALS",
    "BAD_PROTOCOL",
    "BANNED",
    "BUSY",
    "MAX_CLOCK_SKEW_S",
    "NOT_AUTHORISED",
    "PRIVATE_MODE_BITS",
    "RELOGIN_WARNING",
    "UNAVAILABLE",
    "Check",
    "Connack",
    "HttpAnswer",
    "can_look_inside",
    "check_acl_files",
    "check_app_ids",
    "check_audit",
    "check_audit_fsync",
    "check_broker",
    "check_broker_reachable",
    "check_broker_tls",
    "check_budgets",
    "check_clock",
    "check_config",
    "check_database",
    "check_dynsec",
    "check_enforcement",
    "check_private_files",
    "check_provider",
    "check_state",
    "check_state_dir",
    "check_stepup_lockouts",
    "check_stepup_secret",
    "check_tokens",
    "failed",
    "judge_budget",
    "judge_connack",
    "judge_online",
    "judge_tokens",
    "passed",
    "private_files",
    "probe_connack",
    "relogin",
    "warning",
]
