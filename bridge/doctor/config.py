"""The config check: which file loaded and what it configures."""

from __future__ import annotations

from pathlib import Path

from bridge.config import Settings
from bridge.doctor.model import Check, passed, plural, warning


def check_config(settings: Settings, path: Path | None) -> Check:
    """The config loaded (a bad one never gets here: it exits 2 like every command)."""
    source = str(path) if path is not None else "no config file (defaults and environment)"
    if not settings.accounts:
        return warning(
            "config",
            f"{source}: no accounts configured",
            "add an account under `accounts:` (see config.example.yaml), then run: "
            "ownerlink login ACCOUNT",
        )
    counts = f"{plural(len(settings.accounts), 'account')}, "
    counts += plural(len(settings.vehicles), "vehicle")
    return passed("config", f"{source}: {counts}")
