"""Options and helpers shared by the command modules."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import logs
from bridge.config import Settings, load_config

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
