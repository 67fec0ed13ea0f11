"""`ownerlink config check`: validate a configuration file without starting anything."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bridge.cli.common import add_common, cli_overrides
from bridge.config import DEFAULT_PATHS, find_config_path, load_config, unknown_environment


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="inspect the configuration")
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = inner.add_parser("check", help="validate the config; exit 2 naming each bad key")
    add_common(check)
    check.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config, cli_overrides(args))
    found = find_config_path(args.config)
    source = found or "(defaults and environment only)"
    print(
        f"config OK: {source} — {len(settings.accounts)} account(s), "
        f"{len(settings.vehicles)} vehicle(s), broker {settings.mqtt.host}:{settings.mqtt.port}, "
        f"state in {settings.state_dir}"
    )
    # Run in the wrong directory, or before the file is in place, this said only "config OK".
    if found is None:
        looked = ", ".join(str(path) for path in DEFAULT_PATHS)
        print(f"warning: no config file found ({looked}); give one with --config", file=sys.stderr)
    if not settings.accounts:
        print(
            "warning: no accounts configured: the daemon has no car to bridge "
            "(add one under `accounts:`, see config.example.yaml)",
            file=sys.stderr,
        )
    for problem in unknown_environment(os.environ):
        print(f"warning: {problem}", file=sys.stderr)
    return 0
