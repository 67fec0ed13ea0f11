"""`ownerlink simulate`: serve the built-in FordConnect-compatible simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import socket
from datetime import datetime
from typing import Any

from bridge.cli.common import host, integer_in, number_in

# Limits of the options: wider than any use, narrow enough that nothing overflows (a speed of
# 1e9 passes the year 9999 within minutes) or exhausts memory.
MAX_SPEED = 86_400.0  # a simulated day per real second
MAX_VEHICLES = 1000
MAX_TOKEN_LIFETIME_S = 365 * 86_400.0


def register(sub: Any) -> None:
    parser = sub.add_parser("simulate", help="run the built-in FordConnect-compatible simulator")
    parser.add_argument("--host", type=host, default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=integer_in(1, 65535), default=8765, help="port to listen on")
    parser.add_argument(
        "--vehicles", type=integer_in(1, MAX_VEHICLES), default=2, metavar="N", help="fleet size"
    )
    parser.add_argument(
        "--speed",
        type=number_in(0, MAX_SPEED),
        default=1.0,
        metavar="X",
        help="simulated seconds per real second",
    )
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="seed of the world")
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        metavar="ISO",
        help="simulated start time, timezone-aware (default: now)",
    )
    parser.add_argument(
        "--faults",
        default="",
        metavar="SPEC",
        help="fault rates, e.g. 5xx=0.1,timeout=0.05,drop=0.02",
    )
    parser.add_argument(
        "--auto-consent",
        action="store_true",
        help="approve every authorisation at once (no consent page)",
    )
    parser.add_argument(
        "--admin",
        action="store_true",
        help="enable the /sim/ admin endpoints (loopback clients only)",
    )
    parser.add_argument("--client-id", default="ownerlink-sim")
    parser.add_argument("--client-secret", default="sim-secret")
    parser.add_argument("--application-id", default="sim-app-id")
    parser.add_argument(
        "--token-lifetime",
        type=number_in(0, MAX_TOKEN_LIFETIME_S, unit="seconds"),
        default=1200.0,
        metavar="SECONDS",
        help="access-token lifetime in simulated seconds",
    )
    parser.set_defaults(func=run)


def build_simulator(args: argparse.Namespace) -> Any:
    """The Simulator the arguments describe (ValueError for a bad fault spec or start)."""
    from bridge.simulator import SimClock, Simulator

    return Simulator(
        vehicles=args.vehicles,
        seed=args.seed,
        clock=SimClock(args.speed, args.start),
        client_id=args.client_id,
        client_secret=args.client_secret,
        application_id=args.application_id,
        auto_consent=args.auto_consent,
        admin=args.admin,
        token_lifetime=args.token_lifetime,
        faults=args.faults or None,
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge import logs
    from bridge.errors import ConfigError
    from bridge.simulator.server import quiet_simulated_drops, uvicorn_config

    try:
        sim = build_simulator(args)
    except ValueError as exc:
        raise ConfigError([f"simulate: {exc}"]) from exc
    # Listen before saying where: a busy port used to print these addresses anyway, then a log
    # line from uvicorn and exit status 3, while the addresses answered some other program.
    sock = _listen(args.host, args.port)
    # An IPv6 address takes brackets in a URL (`http://::1:8765` is no address to paste).
    shown = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{shown}:{args.port}"
    print(f"simulator: {len(sim.vehicles)} vehicle(s), speed {args.speed}x, seed {args.seed}")
    print(f"  authorize  {base}/oauth/authorize   token {base}/oauth/token")
    print(f"  v1         {base}/api/fordconnect/vehicles/v1")
    print(f"  query      {base}/fcon-query/v1")
    print(f"  client_id {args.client_id}, application id {args.application_id}")
    print(f"listening on {base} (Ctrl-C stops it)", flush=True)
    # uvicorn's "running on …" and its shutdown lines go through our logging (it installs none).
    logs.configure("info")
    quiet_simulated_drops()
    server = uvicorn.Server(uvicorn_config(sim, host=args.host, port=args.port, log_level="info"))
    # uvicorn shuts down cleanly on Ctrl-C and then re-raises it; stopping is the normal exit.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for uvicorn to serve on, or an error line naming them."""
    from bridge.errors import OwnerlinkError
    from bridge.sockets import bound_socket

    try:
        return bound_socket(host, port)
    except socket.gaierror as exc:
        raise OwnerlinkError(f"--host: cannot resolve {host!r} ({exc})") from exc
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise OwnerlinkError(f"cannot listen on {host}:{port}: {why}") from exc
