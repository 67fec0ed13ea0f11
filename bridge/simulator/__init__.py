"""The built-in FordConnect-compatible simulator: an ASGI server and a lazily simulated fleet.

sim = Simulator(vehicles=3, seed=7, clock=SimClock(speed=60), auto_consent=True)
app = create_app(sim)                      # in-process: httpx.ASGITransport(app)
with serve_in_thread(sim) as base_url:     # over real sockets
    ...
"""

from __future__ import annotations

from bridge.simulator.app import create_app
from bridge.simulator.auth import Account, ClientRegistration, pkce_challenge
from bridge.simulator.clock import Clock, ManualClock, SimClock
from bridge.simulator.faults import FaultKind, Limits, parse_fault_spec
from bridge.simulator.fleet import Executed, Vehicle
from bridge.simulator.guard import SimulatedDrop
from bridge.simulator.server import serve_in_thread
from bridge.simulator.state import Mode, Profile
from bridge.simulator.world import Simulator, Timings

__all__ = [
    "Account",
    "ClientRegistration",
    "Clock",
    "Executed",
    "FaultKind",
    "Limits",
    "ManualClock",
    "Mode",
    "Profile",
    "SimClock",
    "SimulatedDrop",
    "Simulator",
    "Timings",
    "Vehicle",
    "create_app",
    "parse_fault_spec",
    "pkce_challenge",
    "serve_in_thread",
]
