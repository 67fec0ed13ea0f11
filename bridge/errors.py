"""The one exception tree, named for what the caller must do.

OwnerlinkError
├── ConfigError              fix the configuration (exit status 2)
├── StateError               the state directory or database is unusable
│   └── StateDatabaseError   SQLite refused: a full disk, held by another process, a damaged file
├── ProviderError            something went wrong talking to the car maker
│   ├── ReauthRequired       the owner must log in again; do not retry
│   ├── RateLimited          back off for `retry_after` seconds
│   ├── BudgetExhausted      our own budget says no; wait until `retry_at`
│   ├── Forbidden            final refusal (suspended account, one car refused, remote start)
│   ├── Unsupported          the vehicle cannot do this (406); never retry
│   ├── NotFound             unknown vehicle or command id
│   └── ProviderUnavailable  5xx, timeouts, dropped connections, malformed bodies; retry later
│       ├── ProviderUnreachable  no connection could be made: the request was never sent
│       └── AuthUnavailable  the same from the token endpoint: no token, the car is unavailable
├── LoginError               the owner's login attempt failed (state mismatch, bad code)
├── CommandRejected          a command was refused; `reason` says why
├── CarBusy                  another ownerlink process kept the car past a command's timeout
├── AuditError               the audit log cannot be trusted or written
│   ├── AuditWriteError      fsync/write failed: stop processing commands
│   └── AuditTampered        verification found damage
├── AccessError              a bad request against the app registry
├── BrokerError              the MQTT broker refused or is unreachable
└── PortInUse                another program listens on the web port; try again later
"""

from __future__ import annotations

import sqlite3


class OwnerlinkError(Exception):
    """Base of every error Ownerlink raises on purpose."""


class ConfigError(OwnerlinkError):
    """The configuration is invalid; `problems` holds one `path.to.key: what is wrong` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StateError(OwnerlinkError):
    """The state directory, database or a state file is unusable."""


class StateDatabaseError(StateError, sqlite3.OperationalError):
    """The state database refused a read or a write: a full disk, another process holding it
    too long, a damaged file. Also a sqlite3.OperationalError, so code that handles the
    driver's own error (the budget: a call it cannot record is not made) still does."""


class ProviderError(OwnerlinkError):
    """A call to the vehicle provider failed."""


class ReauthRequired(ProviderError):
    """Tokens are gone or refused; the owner must run `ownerlink login` again."""


class RateLimited(ProviderError):
    """The provider answered 429; wait `retry_after` seconds before the next call."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(ProviderError):
    """Our own call budget refuses the call; the next window opens at `retry_at` (epoch seconds)."""

    def __init__(self, message: str, *, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class Forbidden(ProviderError):
    """A final refusal (403): a suspended account, a vehicle no longer authorised, or an
    exhausted remote-start allowance."""


class Unsupported(ProviderError):
    """The vehicle or provider does not support this operation (406)."""


class NotFound(ProviderError):
    """The vehicle or command id is unknown to the provider."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or answered nonsense; retry later with backoff."""


class ProviderUnreachable(ProviderUnavailable):
    """No connection to the provider could be made (refused, no route, DNS, connect timeout):
    unlike a dropped one, the request never left, so a command is known not to have run."""


class AuthUnavailable(ProviderUnavailable):
    """The token endpoint could not be reached or answered nonsense while a token was needed (an
    authentication outage): nothing of the account can be read; retry later with backoff."""


class LoginError(OwnerlinkError):
    """An interactive login failed: wrong or expired code, state mismatch, unreachable server."""


class CommandRejected(OwnerlinkError):
    """A command was refused before reaching the car; `reason` is the machine-readable why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class CarBusy(OwnerlinkError):
    """Another ownerlink process held the vehicle's turn at the car for longer than a command
    may wait (`commands.timeout_s`); the command was not sent."""


class AuditError(OwnerlinkError):
    """The audit log cannot be trusted or written."""


class AuditWriteError(AuditError):
    """Writing or fsyncing an audit record failed; command processing must stop."""


class AuditTampered(AuditError):
    """Verification found a record edited, deleted, reordered or truncated."""


class AccessError(OwnerlinkError):
    """A bad request against the app registry (bad id or scope, duplicate, unknown)."""


class BrokerError(OwnerlinkError):
    """The MQTT broker refused us or could not be reached."""


class PortInUse(OwnerlinkError):
    """Another program (or a daemon still stopping) listens on the web page's address. Not a
    configuration error: exit status 1, so systemd tries again rather than giving up for good."""
