"""`ownerlink demo`: simulator, broker, daemon and owner page on this machine, nothing to set up."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bridge.cli.common import host_and_port, integer_in, number_in
from bridge.cli.simulate import MAX_SPEED, MAX_VEHICLES


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="run the whole product on the built-in simulator (Ctrl-C stops it)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep state here (default: a temporary directory, removed at exit)",
    )
    parser.add_argument(
        "--vehicles",
        type=integer_in(1, MAX_VEHICLES),
        default=2,
        metavar="N",
        help="simulated vehicles",
    )
    parser.add_argument(
        "--speed",
        type=number_in(0, MAX_SPEED),
        default=60.0,
        metavar="X",
        help="simulated seconds per real second (default 60)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated world")
    parser.add_argument(
        "--broker",
        type=host_and_port,
        default=("127.0.0.1", 1883),
        metavar="HOST:PORT",
        help="use this broker if it accepts anonymous clients, else start one",
    )
    parser.add_argument(
        "--web-port",
        type=integer_in(0, 65535),
        default=8088,
        metavar="PORT",
        help="owner page port (0, or one that is taken: a free one)",
    )
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from bridge import logs
    from bridge.demo.run import DemoOptions, run_demo

    host, port = args.broker
    logs.configure("warning", "console")
    return run_demo(
        DemoOptions(
            state_dir=args.state_dir,
            vehicles=args.vehicles,
            speed=args.speed,
            seed=args.seed,
            broker_host=host,
            broker_port=port,
            web_port=args.web_port,
        )
    )
