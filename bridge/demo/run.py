"""The demo's steps: simulator, broker, login, apps, step-up, owner password, daemon, next steps."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, get_args

import httpx
import yaml

from bridge.audit.anchor import clear_head
from bridge.audit.chain import read_records
from bridge.audit.log import audit_directory
from bridge.config import Settings, load_config
from bridge.daemon import Daemon
from bridge.demo.broker import DemoBroker, clear_retained, demo_broker, retained_payload
from bridge.errors import BrokerError, StateError
from bridge.events import CollectingAlerts
from bridge.mqtt.memory import RetainedDiscovery
from bridge.mqtt.topics import StateKind, Topics
from bridge.providers.base import FreeGate
from bridge.providers.factory import build_account
from bridge.providers.oauth import parse_redirect, start_login
from bridge.simulator import Limits, SimClock, Simulator, serve_in_thread
from bridge.store import Store

ACCOUNT = "sim"
DEMO_BASE_TOPIC = "ownerlink-demo"
# A real account's defaults (250 calls a day, 40 an hour) allow about ten commands an hour once
# polling has had its share: too few for someone trying every command in the demo. The demo's
# account and budget are roomier; the budget still keeps under the simulated account's limits.
DEMO_BUDGET = {"calls_per_day": 2000, "calls_per_hour": 400}
DEMO_LIMITS = Limits(per_minute=120, per_day=5000)
HA_SCOPES = [
    "read:status",
    "read:health",
    "command:lock",
    "command:unlock",
    "command:refresh",
    "command:horn_lights",
    "command:charge",
]
NODERED_SCOPES = ["read:status", "command:refresh"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    state_dir: Path | None
    vehicles: int
    speed: float
    seed: int
    broker_host: str
    broker_port: int
    web_port: int
    out: TextIO = sys.stdout


class Progress:
    """Numbered progress lines, so a newcomer sees what is happening while it starts."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out, self.total, self.step = out, total, 0

    def __call__(self, message: str) -> None:
        self.step += 1
        print(f"[{self.step}/{self.total}] {message}", file=self.out, flush=True)


def run_demo(options: DemoOptions) -> int:
    """Run everything until Ctrl-C; return the exit status."""
    progress = Progress(options.out, 6)
    with _state_dir(options.state_dir) as state_dir:
        progress(f"state directory {state_dir}")
        sim = Simulator(
            vehicles=options.vehicles,
            seed=options.seed,
            auto_consent=True,
            admin=True,
            clock=SimClock(speed=options.speed),
            token_lifetime=1200 * options.speed,
            limits=DEMO_LIMITS,
        )
        with serve_in_thread(sim) as sim_url:
            progress(f"simulator: {options.vehicles} vehicles at {options.speed:g}x, {sim_url}")
            with demo_broker(options.broker_host, options.broker_port) as broker:
                progress(f"MQTT broker ({broker.kind}) at {broker.host}:{broker.port}")
                vehicles = {_alias(v.spec.nickname): v.vehicle_id for v in sim.vehicles}
                web_port = page_port(options.web_port, options.out)
                settings = write_config(state_dir, sim_url, broker, web_port, vehicles)
                return asyncio.run(_run(settings, sim_url, broker, progress, options.out))


def page_port(wanted: int, out: TextIO) -> int:
    """The owner page's port: the one asked for, or any free one when something holds it (a
    real Ownerlink on this machine, an earlier demo). It ended the demo after every step had
    run, as `config error: web.host / web.port`, keys a demo user never wrote."""
    if wanted == 0:
        return 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            print(f"port {wanted} is taken; the owner page uses a free port instead", file=out)
            return 0
    return wanted


@contextlib.contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="ownerlink-demo-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alias(nickname: str) -> str:
    """`Mustang 1` → `demo-mustang-1`: a friendly topic slug (never the VIN). `demo-` because a
    car's Home Assistant ids are made from its alias alone: a demo car sharing an alias with one
    of the owner's real cars on the same broker took over its discovery topic, and the demo's
    clean-up on Ctrl-C then deleted the real car's entities."""
    return "-".join(["demo", *nickname.lower().split()])[:32]


def demo_config(
    state_dir: Path, sim_url: str, broker: DemoBroker, web_port: int, vehicles: dict[str, str]
) -> dict[str, Any]:
    """The configuration the demo runs with, as a YAML-ready document."""
    return {
        "state_dir": str(state_dir),
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "client_id": f"ownerlink-demo-{secrets.token_hex(3)}",
            # Its own base topic: on a broker it shares with a real Ownerlink (the owner's own
            # Mosquitto), the demo's cars, its audit head and its clean-up never touch the real
            # one's topics.
            "base_topic": DEMO_BASE_TOPIC,
            # The embedded broker speaks MQTT 3.1.1 only.
            "protocol": "3.1.1" if broker.kind == "embedded" else "5",
        },
        "accounts": {
            ACCOUNT: {
                "provider": "fordconnect",
                "client_id": "ownerlink-sim",
                "client_secret": "sim-secret",
                "application_id": "sim-app-id",
                "authorize_url": f"{sim_url}/oauth/authorize",
                "token_url": f"{sim_url}/oauth/token",
                "api_base_url": f"{sim_url}/api/fordconnect/vehicles/v1",
            }
        },
        "vehicles": {alias: {"account": ACCOUNT, "id": vid} for alias, vid in vehicles.items()},
        "apps": {
            "homeassistant": {
                "name": "Home Assistant",
                "scopes": HA_SCOPES,
                "home_assistant": True,
            },
            "nodered": {"name": "Node-RED", "scopes": NODERED_SCOPES},
        },
        "budget": dict(DEMO_BUDGET),
        "web": {"port": web_port},
        "logging": {"level": "warning", "format": "console"},
    }


def write_config(
    state_dir: Path, sim_url: str, broker: DemoBroker, web_port: int, vehicles: dict[str, str]
) -> Settings:
    """Write config.yaml into the state directory (so every CLI command works on the demo)."""
    path = state_dir / "config.yaml"
    document = demo_config(state_dir, sim_url, broker, web_port, vehicles)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return load_config(path)


async def _run(
    settings: Settings, sim_url: str, broker: DemoBroker, progress: Progress, out: TextIO
) -> int:
    if broker.kind == "existing" and await _another_demo_is_online(settings):
        print(
            f"another Ownerlink demo is running on the broker at {broker.host}:{broker.port} "
            f"({Topics(base=settings.mqtt.base_topic).bridge_state} is online): stop it first "
            "(Ctrl-C where it runs), or give this one another broker with --broker HOST:PORT",
            file=out,
        )
        return 1
    await _forget_an_earlier_demos_head(settings, out)
    await login(settings)
    progress("logged in to the simulated FordConnect account (OAuth 2.0 + PKCE)")
    secret = enroll_stepup(settings)
    password = set_owner_password(settings)
    progress("step-up (TOTP) enrolled and an owner password made for this demo")
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
        progress("daemon online: discovery and states are on the broker")
        print_next_steps(out, settings, daemon, broker, secret=secret, password=password)
        await daemon.wait_for_stop()
    finally:
        await daemon.stop()
        if broker.kind == "existing":
            await _take_back(settings, daemon, broker, out)
        print(
            "stopped; the demo's state directory is removed unless --state-dir was given", file=out
        )
    return 0


async def _another_demo_is_online(settings: Settings) -> bool:
    """Whether a demo's daemon is connected under the demo's base topic: its retained state is
    `online` (the broker turns it `offline` by the last will when it dies). A second demo took
    that one's audit head, executed every command sent to it on its own cars too, and on leaving
    deleted its retained states and Home Assistant discovery."""
    topic = Topics(base=settings.mqtt.base_topic).bridge_state
    broker = DemoBroker(settings.mqtt.host, settings.mqtt.port, "existing")
    return await asyncio.to_thread(retained_payload, broker, topic) == b"online"


async def _forget_an_earlier_demos_head(settings: Settings, out: TextIO) -> None:
    """A demo on a new state directory starts a new audit log: an audit head under the demo's
    base topic is then an earlier demo's that could not clear it (killed), and the daemon would
    take it for records cut off this log and refuse commands. A demo run again on its
    --state-dir keeps it."""
    if any(read_records(audit_directory(settings.state_dir))):
        return
    try:
        await asyncio.to_thread(clear_head, settings)
    except BrokerError as exc:
        print(f"could not clear an earlier demo's audit head from the broker: {exc}", file=out)


async def _take_back(settings: Settings, daemon: Daemon, broker: DemoBroker, out: TextIO) -> None:
    """On someone's own broker, delete what the demo left retained: their Home Assistant would
    otherwise keep the demo cars for good (the state directory that remembers them is about to
    go). Best effort: a broker that has gone away gets a note, not a traceback."""
    try:
        topics = left_retained(settings, daemon.topics, [v.slug for v in daemon.vehicles])
        cleared = await asyncio.to_thread(clear_retained, broker, topics)
    except (OSError, RuntimeError, ValueError, StateError) as exc:
        # RuntimeError: paho's "not currently connected", when the broker hung up on us.
        print(f"could not clear the demo's retained messages from the broker: {exc}", file=out)
        return
    print(f"cleared the {cleared} retained messages the demo left on the broker", file=out)


def cli_command() -> str:
    """How to run `ownerlink` from this shell: plain when it is on PATH, else the script beside
    this interpreter (`scripts/demo` installs into .venv, which the newcomer has not activated)."""
    if shutil.which("ownerlink"):
        return "ownerlink"
    script = Path(sys.executable).parent / "ownerlink"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m bridge"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return shlex.quote(str(script))


def left_retained(settings: Settings, topics: Topics, slugs: list[str]) -> list[str]:
    """Every retained topic the demo's daemon may have published: its discovery (as the state
    database remembers it) and its own documents."""
    store = Store.open(settings.state_dir)
    try:
        remembered = RetainedDiscovery(store).load() or {}
    finally:
        store.close()
    found = [message.topic for messages in remembered.values() for message in messages]
    found += [topics.bridge_state, topics.audit_head]
    for slug in slugs:
        found.append(topics.availability(slug))
        found += [topics.state(slug, kind) for kind in get_args(StateKind)]
    return found


async def login(settings: Settings) -> None:
    """The same OAuth login `ownerlink login` does, with the simulator consenting at once."""
    parts = build_account(settings, ACCOUNT, gate=FreeGate(), alerts=CollectingAlerts())
    config = settings.accounts[ACCOUNT]
    request = start_login(config, datetime.now(UTC).timestamp())
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as client:
        response = await client.get(request.url)
    code = parse_redirect(response.headers["location"], expected_state=request.state)
    try:
        await parts.tokens.complete_login(request, code)
    finally:
        await parts.provider.aclose()


def enroll_stepup(settings: Settings) -> str:
    """The demo's TOTP secret: the one a kept `--state-dir` already has (an authenticator app
    may hold it since the last run), else a fresh one, on the record as any enrolment is."""
    from bridge.audit.log import AuditLog, audit_directory
    from bridge.commands.stepup import enroll, load_secret
    from bridge.errors import StateError

    try:
        kept = load_secret(settings.state_dir)
    except StateError:  # damaged: replaced below, as `stepup enroll --force` would
        kept = None
    if kept is not None:
        return kept
    secret = enroll(settings.state_dir, force=True)
    audit = AuditLog(
        audit_directory(settings.state_dir),
        clock=lambda: datetime.now(UTC),
        rotate_bytes=settings.audit.rotate_bytes,
    )
    audit.open()
    try:
        audit.append("stepup.enrolled", replaced=False, actor="owner", via="demo")
    finally:
        audit.close()
    return secret


def set_owner_password(settings: Settings) -> str:
    from bridge.store import Store
    from bridge.web.passwords import set_owner_password as store_password

    password = f"demo-{secrets.token_urlsafe(12)}"
    store = Store.open(settings.state_dir)
    try:
        store_password(store, password, now=datetime.now(UTC))
    finally:
        store.close()
    return password


def print_next_steps(
    out: TextIO,
    settings: Settings,
    daemon: Daemon,
    broker: DemoBroker,
    *,
    secret: str,
    password: str,
) -> None:
    """What to try now: the page, a subscription, a lock that works and one that is refused."""
    base = settings.mqtt.base_topic
    vehicle = daemon.vehicles[0].slug if daemon.vehicles else "<vehicle>"
    mq = f"-h {broker.host} -p {broker.port}"
    config = settings.state_dir / "config.yaml"
    cli = cli_command()
    web = f"http://{settings.web.host}:{daemon.web.port}/" if daemon.web else "(web disabled)"
    lines = [
        "",
        "Ownerlink demo is running. Try:",
        f"  owner page        {web}   password: {password}",
        f"  watch everything  mosquitto_sub {mq} -v -t '{base}/#' -t 'homeassistant/#'",
        f"  lock (allowed)    mosquitto_pub {mq} -t {base}/app/homeassistant/{vehicle}/cmd/lock"
        " -m LOCK",
        f"  lock (refused)    mosquitto_pub {mq} -t {base}/app/nodered/{vehicle}/cmd/lock -m LOCK",
        "                    (nodered lacks command:lock: the result says rejected/scope_missing)",
        f"  unlock (step-up)  mosquitto_pub {mq} -t {base}/app/homeassistant/{vehicle}/cmd/lock"
        ' -m \'{"action": "UNLOCK", "code": "<code>"}\'',
        f"  a step-up code    {cli} stepup code --config {config}",
        f"                    (or add this secret to an authenticator app: {secret})",
        f"  verify the audit  {cli} audit verify --config {config}",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), file=out, flush=True)
