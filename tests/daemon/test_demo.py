"""`ownerlink demo`: the whole product on one machine, started exactly as a newcomer would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import BrokerAddress
from tests.mqtt.helpers import Watcher

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 30
# A newcomer's shell after `scripts/demo`: the virtualenv was never activated.
_VENV_BIN = str(Path(sys.executable).parent)
NEWCOMER_ENV = {
    **os.environ,
    "PATH": os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != _VENV_BIN
    ),
}


class Recorder:
    """Subscribes to everything and keeps the latest message per topic and every result."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.latest: dict[str, bytes] = {}
        self.results: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("ownerlink-demo/#", 0), ("homeassistant/#", 0)]
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.latest[msg.topic] = msg.payload
            if msg.topic.endswith("/result"):
                self.results.append(json.loads(msg.payload))

    def wait_for(self, predicate: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):  # type: ignore[operator]
                    return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


REAL_HEAD = "ownerlink/bridge/audit_head"
# The owner's real cars, bridged by their real Ownerlink, under the aliases the demo's cars once
# had: their discovery must come through the demo untouched.
REAL_CARS = sorted(
    f"homeassistant/device/ownerlink_{alias}/config" for alias in ("mustang-1", "bronco-2")
)
OWNERS_TOPICS = ["ownerlink/#", "homeassistant/#"]
REAL_CAR_CONFIG = json.dumps({"dev": {"identifiers": ["real"], "name": "Real car"}, "cmps": {}})


@pytest.fixture
def stale_head(broker: BrokerAddress) -> Iterator[list[str]]:
    """What a demo killed with -9 leaves: its audit head, retained. A new demo's log is not
    that one; it must not take it for records cut off its own log (and refuse commands). And
    the owner's real Ownerlink on the same broker keeps its own head, whatever the demo does.
    Yields the topics under `ownerlink/#` and `homeassistant/#` retained before the demo starts:
    the real head and cars, and whatever earlier tests left on the shared broker (the demo must
    leave those alone too)."""
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    stale = json.dumps({"seq": 99, "hash": "ab" * 32})
    client.publish("ownerlink-demo/bridge/audit_head", stale, qos=1, retain=True).wait_for_publish(
        5
    )
    client.publish(REAL_HEAD, stale, qos=1, retain=True).wait_for_publish(5)
    for topic in REAL_CARS:
        client.publish(topic, REAL_CAR_CONFIG, qos=1, retain=True).wait_for_publish(5)
    try:
        yield _retained(broker, OWNERS_TOPICS)
    finally:
        for topic in [REAL_HEAD, *REAL_CARS]:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()


@pytest.fixture
def demo(
    broker: BrokerAddress, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`ownerlink demo` as a subprocess on the test broker; yields it and its output lines."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "demo",
            "--broker",
            f"{broker.host}:{broker.port}",
            "--web-port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**NEWCOMER_ENV, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def printed(lines: list[str], label: str) -> str:
    for line in lines:
        if line.strip().startswith(label):
            return line.strip()[len(label) :].strip()
    raise AssertionError(f"the demo did not print {label!r}:\n" + "".join(lines))


def test_demo_runs_end_to_end_and_stops_cleanly(
    stale_head: list[str], demo: tuple[subprocess.Popen[str], list[str]], broker: BrokerAddress
) -> None:
    """Within 30 s the broker carries discovery and states; the printed lock works (even after
    an earlier demo was killed), the printed refused command is refused, and Ctrl-C leaves no
    process behind."""
    proc, lines = demo
    deadline = time.monotonic() + STARTUP_S
    while not any("Ctrl-C stops everything" in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "demo not ready in time:\n" + "".join(lines)
        time.sleep(0.2)
    recorder = Recorder(broker)
    try:
        has_states = recorder.wait_for(
            lambda r: (
                any(t.endswith("/status") for t in r.latest)
                and any(t.startswith("homeassistant/") for t in r.latest)
            ),
            timeout=10,
        )
        assert has_states, sorted(recorder.latest)
        subprocess.run(shlex.split(printed(lines, "lock (allowed)")), check=True, timeout=10)
        subprocess.run(shlex.split(printed(lines, "lock (refused)")), check=True, timeout=10)
        done = recorder.wait_for(
            lambda r: {res["status"] for res in r.results} >= {"succeeded", "rejected"}, 20
        )
        assert done, recorder.results
        refused = next(res for res in recorder.results if res["status"] == "rejected")
        assert refused["reason"] == "scope_missing"
        # The printed CLI line runs as printed, from a shell that never activated .venv.
        code = subprocess.run(
            shlex.split(printed(lines, "a step-up code")),
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=NEWCOMER_ENV,
        )
        assert code.returncode == 0 and re.fullmatch(r"\d{6}\n", code.stdout), code
    finally:
        recorder.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    # The test's broker is one the demo did not start: it must take back everything it retained.
    assert _retained(broker, ["ownerlink-demo/#"]) == []
    assert {REAL_HEAD, *REAL_CARS} <= set(stale_head)
    assert _retained(broker, OWNERS_TOPICS) == stale_head, "the real one's head and cars untouched"
    assert any("retained messages the demo left" in line for line in lines), "".join(lines)
    page = printed(lines, "owner page")
    port = re.search(r":(\d+)/", page)
    assert port is not None
    assert not _listening(int(port.group(1))), "the owner page still answers after Ctrl-C"


def test_a_second_demo_on_the_same_broker_leaves_the_running_one_alone(
    demo: tuple[subprocess.Popen[str], list[str]], broker: BrokerAddress, tmp_path: Path
) -> None:
    """`scripts/demo` run again while the first still runs: the second took the first's audit
    head, ran every command sent to the first on its own cars as well, and, stopping (its page's
    port was taken), deleted the first's retained states and discovery. It now says so and
    stops before touching the broker."""
    proc, lines = demo
    deadline = time.monotonic() + STARTUP_S
    while not any("Ctrl-C stops everything" in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "demo not ready in time:\n" + "".join(lines)
        time.sleep(0.2)
    before = _retained(broker, ["ownerlink-demo/#", "homeassistant/#"])
    assert "ownerlink-demo/bridge/state" in before
    assert any(topic.startswith("homeassistant/") for topic in before)
    options = ["--web-port", "0", "--state-dir", str(tmp_path / "second")]
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "demo",
            "--broker",
            f"{broker.host}:{broker.port}",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert second.returncode == 1, second.stdout + second.stderr
    assert "another Ownerlink demo is running on the broker" in second.stdout
    assert "Traceback" not in second.stdout + second.stderr
    # Still there (the first demo may have retained more meanwhile, such as its audit head).
    assert set(_retained(broker, ["ownerlink-demo/#", "homeassistant/#"])) >= set(before)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


def _retained(broker: BrokerAddress, filters: list[str]) -> list[str]:
    """The topics under `filters` (each `x/#`) that hold a retained message now."""

    async def snapshot() -> list[str]:
        async with Watcher(broker.host, broker.port, *filters) as watcher:
            await watcher.settled()  # a sentinel came back after every retained message
            return sorted(m.topic for m in watcher.messages if m.retain)

    return asyncio.run(snapshot())


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--speed", "0"),
        ("--speed", "inf"),
        ("--speed", "-5"),
        ("--vehicles", "-1"),
        ("--broker", "127.0.0.1:99999"),
        ("--broker", "127.0.0.1:"),
        ("--broker", "127.0.0.1"),
        ("--broker", ":1883"),
        ("--web-port", "70000"),
    ],
)
def test_a_bad_demo_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """Refused before anything starts: exit 2 naming the option, no traceback."""
    from bridge.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["demo", f"{option}={value}"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert f"argument {option}:" in err and "Traceback" not in err


def test_the_demo_broker_may_be_an_ipv6_address() -> None:
    """`--broker [::1]:1883` is a host and a port, as HOST:PORT reads for IPv6."""
    from bridge.cli import build_parser

    args = build_parser().parse_args(["demo", "--broker", "[::1]:1884"])
    assert args.broker == ("::1", 1884)
    assert build_parser().parse_args(["demo"]).broker == ("127.0.0.1", 1883)


def test_a_taken_page_port_gives_the_demo_a_free_one() -> None:
    """A real Ownerlink (or an earlier demo) on 8088 ended the demo after every step, with
    `config error: web.host / web.port`; it now says so and takes a free port."""
    import io
    import socket

    from bridge.demo.run import page_port

    out = io.StringIO()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert page_port(taken, out) == 0
    assert out.getvalue() == f"port {taken} is taken; the owner page uses a free port instead\n"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert page_port(free, io.StringIO()) == free


def test_a_demo_broker_that_cannot_start_is_an_error_with_mosquittos_reason() -> None:
    """Mosquitto that exits at start (here: its port taken behind the demo's back; for an owner,
    `--broker 127.0.0.1:1` as root, where Mosquitto drops to its own user) is a BrokerError,
    which the command line prints as one line with exit status 1: it was a RuntimeError
    traceback saying only "the demo broker exited with status 1"."""
    import shutil
    import socket

    from bridge.demo.broker import _mosquitto
    from bridge.errors import BrokerError

    binary = shutil.which("mosquitto")
    assert binary is not None, "the test set-up installs Mosquitto"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with (
            pytest.raises(BrokerError, match=f"on 127.0.0.1:{port}: mosquitto said 'Error: Addr"),
            _mosquitto(binary, port),
        ):
            pass


def test_a_kept_state_dir_keeps_its_step_up_secret(tmp_path: Path) -> None:
    """`ownerlink demo --state-dir D` run again keeps the secret an authenticator app may hold
    since the last run (enrolled once, on the record once); a damaged one is replaced."""
    from bridge.audit.chain import read_records
    from bridge.audit.log import audit_directory
    from bridge.commands.stepup import secret_path
    from bridge.config import Settings
    from bridge.demo.run import enroll_stepup

    settings = Settings(state_dir=tmp_path / "state")
    first = enroll_stepup(settings)
    assert enroll_stepup(settings) == first
    enrolments = [
        r
        for r in read_records(audit_directory(settings.state_dir))
        if r["kind"] == "stepup.enrolled"
    ]
    assert len(enrolments) == 1
    secret_path(settings.state_dir).write_bytes(b"not base32!\n")
    replaced = enroll_stepup(settings)
    assert replaced != first and enroll_stepup(settings) == replaced
