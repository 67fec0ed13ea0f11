"""structlog set-up, done once, and the redaction processor that keeps secrets out of every line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO, cast

import structlog
from pydantic import SecretStr

REDACTED = "[redacted]"

# Keys whose values are secret whatever they hold. Matched on the lower-cased key, by substring,
# so `refresh_token`, `client_secret`, `admin_password` and `totp_code` are all caught.
SECRET_KEY_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "code",
    "cookie",
    "otp",
    "vin",
    "csrf",
    "session",
    "verifier",
    "challenge",
)
# Keys that merely contain one of the parts above but carry no secret.
SAFE_KEYS = frozenset(
    {
        "status_code",
        "reason_code",
        "code_format",
        "exit_code",
        "token_type",
        "expires_in",
        "http_status",
        "command",
        "vehicle",
    }
)

# Values that look secret wherever they appear: bearer headers, JWT-like strings, query parameters.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|id_token|code|client_secret|password|code_verifier)=)"
        r"[^&\s\"']+"
    ),
)

# Exact secret values registered at run time (tokens as they are issued), replaced anywhere.
_known_secrets: set[str] = set()


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret value so any log line that would carry it gets it redacted instead."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw and len(raw) >= 6:
        _known_secrets.add(raw)


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered not in SAFE_KEYS and any(part in lowered for part in SECRET_KEY_PARTS)


def scrub_text(text: str) -> str:
    """Redact secret-looking substrings and known secret values from free text."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, MutableMapping):
        return {k: REDACTED if _is_secret_key(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank secret keys, scrub secret-looking text everywhere else."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if _is_secret_key(key) else _scrub(value)
    return event_dict


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,  # after format_exc_info, so tracebacks are scrubbed too
    ]


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once: JSON lines off a TTY (systemd, Docker), console on a TTY."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    sink = stream or cast(TextIO, _CurrentStderr())
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=False,
    )
    _route_foreign_loggers(level, sink, renderer)


class _CurrentStderr:
    """Whatever sys.stderr is at each write: a stream captured at configure time may be closed
    later (pytest swaps it per test); the daemon's stderr never changes, so this costs nothing."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_OURS = "_ownerlink_handler"  # marks the root handler `configure` installed (and may replace)


def _route_foreign_loggers(level: str, sink: TextIO, renderer: Any) -> None:
    """Send the standard-library loggers (uvicorn, paho, APScheduler, …) through the same
    processors: one format per stream (a JSON reader such as `jq` must never meet a plain line)
    and the same redaction."""
    # httpx logs every request URL at INFO (query strings can carry codes), and oauthlib the
    # refresh tokens and authorisation codes it handles at DEBUG, bare: keep them at WARNING.
    for name in ("httpx", "httpcore", "oauthlib", "uvicorn.access", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    handler = logging.StreamHandler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    # Replace our own earlier handler only: a test runner's capture handlers stay.
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.getLevelName(level.upper()))


def get_logger(name: str, **context: Any) -> Any:
    """A bound structlog logger for a module, with optional context."""
    # A lazy proxy: `.bind()` here would freeze structlog's *default* configuration into loggers
    # made at import time (stdout, console renderer, no redaction) before `configure()` runs.
    return structlog.get_logger(name, **context)


def iter_secret_values() -> Iterable[str]:
    """The secrets registered so far (for tests that scan output for leaks)."""
    return tuple(_known_secrets)
