"""Options and helpers shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import logs
from bridge.config import Settings, host_problem, load_config

if TYPE_CHECKING:
    from bridge.polling.budget import Budget


def add_common(parser: argparse.ArgumentParser) -> None:
    """`--config`, `--state-dir` and `--log-level`, accepted by every command that reads config."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="config file (default: $OWNERLINK_CONFIG, /etc/ownerlink/config.yaml, ./config.yaml)",
    )
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="override state_dir")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level"
    )


# -- argparse types: a bad value is a usage error (exit 2) naming the option, never a traceback


def number_in(low: float, high: float, *, unit: str = "") -> Callable[[str], float]:
    """A number more than `low` and at most `high`: infinity and nan are refused (they passed
    float() and later ended in an OverflowError, a datetime past 9999 or a timer never firing)."""
    what = f"a number of {unit}" if unit else "a number"
    bounds = f"more than {low:g} and at most {high:g}{f' {unit}' if unit else ''}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not (low < value <= high):  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value

    return parse


def integer_in(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not (low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {text}")
        return value

    return parse


def host(text: str) -> str:
    """A host name or an IP address to listen on or connect to (no scheme, port or brackets)."""
    if host_problem(text) is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or an IP address")
    return text


def host_and_port(text: str) -> tuple[str, int]:
    """HOST:PORT, the host as `host` takes it ([…] around an IPv6 address), the port 1 to 65535."""
    name, _, port = text.rpartition(":")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name or host_problem(name) is not None:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return name, integer_in(1, 65535)(port)


# Most often the command runs as root or as the login user while the files belong to the daemon.
AS_DAEMON_USER = (
    "run ownerlink as the user the daemon runs as, who owns the state directory "
    "(e.g. sudo -u ownerlink ownerlink …)"
)


def file_problem(exc: OSError) -> str:
    """One line for a state file or directory a command could not use (`exc.filename` is set)."""
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}: {AS_DAEMON_USER}"
    return f"cannot use {exc.filename}: {exc.strerror or exc}"


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a nested settings mapping (highest precedence)."""
    out: dict[str, Any] = {}
    if getattr(args, "state_dir", None) is not None:
        out["state_dir"] = args.state_dir
    if getattr(args, "log_level", None) is not None:
        out["logging"] = {"level": args.log_level}
    return out


def settings_from(args: argparse.Namespace) -> Settings:
    """Load config (raises ConfigError → exit 2 in main) and configure logging from it."""
    settings = load_config(getattr(args, "config", None), cli_overrides(args))
    logs.configure(settings.logging.level, settings.logging.format)
    return settings


@contextmanager
def charged_budget(settings: Settings) -> Iterator[Budget]:
    """The daemon's persisted call budget, for CLI commands that call the provider."""
    from bridge.events import CollectingAlerts
    from bridge.polling.budget import Budget
    from bridge.store import Store

    store = Store.open(settings.state_dir)
    try:
        budget = Budget(store=store, config=settings.budget, alerts=CollectingAlerts())
        budget.start()
        yield budget
    finally:
        store.close()
