"""`ownerlink run`: the daemon itself, in the foreground (systemd, Docker, a terminal)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bridge.cli.common import add_common, settings_from


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the daemon (poll, publish, take commands)")
    add_common(parser)
    parser.add_argument(
        "--metrics-only",
        action="store_true",
        help="serve only /healthz and /metrics, not the owner page and API",
    )
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from bridge.daemon import Daemon
    from bridge.malloc import pin_mmap_threshold

    settings = settings_from(args)
    pin_mmap_threshold()  # a long-running process that reads big files now and then
    daemon = Daemon(settings, metrics_only=args.metrics_only)
    return asyncio.run(daemon.run())
