"""Over real sockets: serve_in_thread, a full owner flow, and the `ownerlink simulate` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from bridge.cli import main, simulate
from bridge.simulator import ManualClock, Simulator, serve_in_thread
from bridge.simulator.server import uvicorn_config
from tests.simulator.support import (
    CLIENT,
    MONDAY_0700,
    QUERY,
    REDIRECT,
    V1,
    VERIFIER,
    authorize_params,
    bearer,
    v1_headers,
)


def owner_flow(base: str) -> None:
    with httpx.Client(base_url=base) as client:
        consent = client.get("/oauth/authorize", params=authorize_params())
        code = dict(httpx.URL(consent.headers["location"]).params)["code"]
        tokens = client.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
                **CLIENT,
            },
        ).json()
        token = tokens["access_token"]
        [vehicle] = client.get(V1, headers=v1_headers(token)).json()["vehicles"]
        lock = client.post(f"{V1}/{vehicle['vehicleId']}/lock", headers=v1_headers(token))
        assert lock.status_code == 202
        assert client.get(f"{QUERY}/telemetry", headers=bearer(token)).status_code == 200


def test_serve_in_thread_serves_the_whole_flow() -> None:
    """Authorise, exchange, list, command and read over a real socket on a free port."""
    sim = Simulator(vehicles=2, clock=ManualClock(MONDAY_0700), auto_consent=True)
    with serve_in_thread(sim) as base:
        assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
        owner_flow(base)
    assert [e.command for e in sim.vehicles[0].executed] == ["lock"]


def test_serve_in_thread_stops_listening_on_exit() -> None:
    """Leaving the context stops the server: the port refuses connections."""
    sim = Simulator(vehicles=1, clock=ManualClock(MONDAY_0700))
    with serve_in_thread(sim) as base:
        port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_simulate_command_parses_its_options() -> None:
    """`ownerlink simulate` registers its options with the documented defaults."""
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate"])
    assert (args.host, args.port, args.vehicles, args.speed, args.seed) == (
        "127.0.0.1",
        8765,
        2,
        1.0,
        1,
    )
    assert args.func is simulate.run and not args.admin and not args.auto_consent
    args = parser.parse_args(
        [
            "simulate",
            "--vehicles",
            "5",
            "--faults",
            "5xx=0.1",
            "--client-id",
            "c",
            "--token-lifetime",
            "60",
            "--admin",
        ]
    )
    sim = simulate.build_simulator(args)
    assert len(sim.vehicles) == 5 and sim.admin and sim.auth.client.client_id == "c"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "70000"),  # OverflowError from the socket before
        ("--port", "0"),
        ("--port", "http"),
        ("--speed", "inf"),
        ("--speed", "nan"),
        ("--speed", "0"),
        ("--speed", "1e9"),  # past the year 9999 within minutes
        ("--vehicles", "-1"),
        ("--vehicles", "0"),
        ("--token-lifetime", "inf"),
        ("--token-lifetime", "0"),
        ("--host", ""),
        ("--host", "127.0.0.1:80"),
    ],
)
def test_a_bad_simulate_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """Each of these started the simulator or ended in a traceback: now exit 2 naming it."""
    with pytest.raises(SystemExit) as stopped:
        main(["simulate", f"{option}={value}"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert f"argument {option}:" in err and "Traceback" not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_command_serves_until_interrupted() -> None:
    """`python -m bridge simulate` serves the API and exits 0 on Ctrl-C (SIGINT)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bridge", "simulate", "--port", str(port), "--auto-consent"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert "simulator:" in proc.stdout.readline().decode()
        deadline = time.monotonic() + 20
        while True:
            try:
                owner_flow(f"http://127.0.0.1:{port}")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the simulator never started listening"
                time.sleep(0.05)  # the child process gives no other readiness signal
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        # It says where it listens, once it does.
        assert f"listening on http://127.0.0.1:{port}" in proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulate_on_a_busy_port_says_so_and_claims_no_address() -> None:
    """Another program on the port: one error line naming it and exit 1. It printed the
    addresses as if serving, then uvicorn's log line and exit status 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "simulate", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert (
        done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_simulate_on_ipv6_prints_urls_that_work() -> None:
    """`--host ::1` printed `http://::1:PORT/...`, which no client takes as an address."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    cmd = [sys.executable, "-m", "bridge", "simulate", "--host", "::1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(6)]
        assert f"listening on http://[::1]:{port}" in banner[-1], banner
        token_url = banner[1].split()[-1]
        assert token_url == f"http://[::1]:{port}/oauth/token"
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(token_url).status_code == 405
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the simulator never answered"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_the_simulators_server_leaves_logging_to_us() -> None:
    """uvicorn's own logging config would give its loggers their own plain-text handlers for the
    whole process: in the demo, the daemon's web server logs too, unformatted and unredacted."""
    uvicorn_config(Simulator(vehicles=1, seed=1), host="127.0.0.1", port=0, log_level="info")
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        assert logger.propagate and not logger.handlers, name
