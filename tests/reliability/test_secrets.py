"""Secrets: after a busy run, no secret appears in a log line, an MQTT message, the audit log or
an owner page.

The run: a broker that requires a password, the owner's Ford login through the command line,
step-up enrolled and an owner password set, the daemon with its web page; then commands (a
lock, an unlock with a valid step-up code, unlocks with wrong and missing codes), every access
token invalidated twice (so the daemon refreshes and the refresh token rotates), a broker
restart, a failed and a good owner login, and the owner pages read.

Scanned: every line the daemon printed, what the CLI commands printed (except `stepup enroll`,
whose job is to show the secret once), every message on '#', every audit file, every page and
export the owner fetched. Looked for: every access and refresh token the account held (sampled
from the token file after each refresh), the authorisation code and PKCE verifier of the login,
the client secret, the MQTT password, the owner password (and the wrong one typed), the web
session cookie, the step-up secret and every code sent, and the VINs.
"""

from __future__ import annotations

import json
import re
import secrets
import stat
import subprocess
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from bridge.commands.stepup import code_at, load_secret
from tests.reliability.checks import find_secrets
from tests.reliability.conftest import Figures
from tests.support.broker import MosquittoProcess, free_port
from tests.support.daemon import (
    ACCOUNT,
    CHAOS_APP,
    TRACEBACK,
    DaemonConfig,
    MqttObserver,
    SimHandle,
    cli,
    daemon_running,
    error_lines,
    known_secrets,
    run_sources,
    running_simulator,
    token_files_parse,
    wait_until,
)

MQTT_USER = "ownerlink"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
OWNER_PAGES = ("/apps", "/vehicles", "/audit", "/security", "/audit/export", "/healthz", "/metrics")


def password_broker(root: Path, password: str) -> MosquittoProcess:
    """A Mosquitto that lets in only `ownerlink` with `password`."""
    passwords = root / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, password],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o600)
    broker = MosquittoProcess(extra_config=f"allow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    return broker


def login_with_evidence(config: DaemonConfig) -> tuple[str, list[str]]:
    """`ownerlink login` as in the harness, keeping the code and PKCE verifier it used."""
    started = cli("login", ACCOUNT, "--print-url", "--no-qr", "--config", str(config.path))
    assert started.returncode == 0, started.stderr
    pending = json.loads((config.state_dir / "tokens" / f"{ACCOUNT}.login.json").read_text())
    url = next(w for w in started.stdout.split() if w.startswith("http"))
    location = httpx.get(url, follow_redirects=False, timeout=10).headers["location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    done = cli("login", ACCOUNT, "--redirect-url", location, "--config", str(config.path))
    assert done.returncode == 0, done.stderr
    output = "\n".join((started.stdout, started.stderr, done.stdout, done.stderr))
    return output, [code, str(pending.get("code_verifier", ""))]


def refreshed(config: DaemonConfig, before: set[str]) -> set[str]:
    """Tokens in the file now that were not there `before`."""
    return tokens_now(config) - before


def tokens_now(config: DaemonConfig) -> set[str]:
    return {
        v
        for doc in token_files_parse(config.state_dir).values()
        for k, v in doc.items()
        if k.endswith("token") and isinstance(v, str)
    }


def owner_pages(web: str, password: str, wrong: str) -> tuple[dict[str, str], list[str]]:
    """A failed and a good owner login, then every owner page; returns pages and cookies."""
    pages: dict[str, str] = {}
    with httpx.Client(base_url=web, timeout=10, follow_redirects=True) as client:
        for attempt in (wrong, password):
            form = client.get("/login")
            match = CSRF.search(form.text)
            assert match, f"no login form at {web}/login ({form.status_code})"
            response = client.post(
                "/login", data={"csrf": match.group(1), "password": attempt, "next": "/apps"}
            )
            pages[f"login-{len(pages)}"] = response.text
        for path in OWNER_PAGES:
            pages[path] = client.get(path).text
        cookies = [c.value for c in client.cookies.jar if c.value]
    return pages, cookies


def test_no_secret_leaks_anywhere(tmp_path: Path, base_topic: str, figures: Figures) -> None:
    """After a busy run, no token, password, code, secret or VIN in logs, MQTT, audit or pages."""
    mqtt_password = f"mq-{secrets.token_urlsafe(12)}"
    owner_password = f"owner-{secrets.token_urlsafe(12)}"
    wrong_password = f"wrong-{secrets.token_urlsafe(12)}"
    broker = password_broker(tmp_path, mqtt_password)
    web_port = free_port()
    try:
        with (
            running_simulator(vehicles=1) as sim,
            MqttObserver(
                broker.host, broker.port, username=MQTT_USER, password=mqtt_password
            ) as mqtt,
        ):
            config = DaemonConfig.for_simulator(
                tmp_path / "run",
                sim,
                broker,
                base_topic,
                web_port=web_port,
                extra={"mqtt": {"username": MQTT_USER, "password": mqtt_password}},
            ).write()
            login_output, login_secrets = login_with_evidence(config)
            seen_tokens = tokens_now(config)
            enrolled = cli("stepup", "enroll", "--config", str(config.path))
            assert enrolled.returncode == 0, enrolled.stderr
            setpw = cli(
                "owner",
                "set-password",
                "--password-stdin",
                "--config",
                str(config.path),
                stdin=owner_password + "\n",
            )
            assert setpw.returncode == 0, setpw.stderr
            stepup_secret = load_secret(config.state_dir)
            assert stepup_secret
            with daemon_running(config, mqtt) as daemon:
                codes = exercise(config, mqtt, sim, stepup_secret, seen_tokens, broker)
                pages, cookies = owner_pages(
                    f"http://127.0.0.1:{web_port}", owner_password, wrong_password
                )
                exit_code = daemon.stop()
            sources = run_sources(
                config,
                mqtt,
                ("login", login_output),
                ("owner set-password", setpw.stdout + setpw.stderr),
                *((f"web {k}", v) for k, v in pages.items()),
            )
            found = known_secrets(config, sim, *seen_tokens)
    finally:
        broker.stop()
    found |= {
        "login code or PKCE verifier": login_secrets,
        "mqtt password": [mqtt_password],
        "owner password": [owner_password, wrong_password],
        "web session cookie": [c for c in cookies if len(c) >= 16],
        "step-up secret": [stepup_secret],
    }
    leaks = find_secrets(sources, found, codes=codes)
    figures.update(
        sources={name: len(text) for name, text in sources.items()},
        secrets={kind: len(values) for kind, values in found.items()},
        codes=len(codes),
        leaks=len(leaks),
    )
    assert 'name="password"' not in pages["/apps"], "the owner login did not work"
    assert exit_code == 0
    assert not TRACEBACK.search(daemon.output()), daemon.tail()
    assert not error_lines(daemon.output()), error_lines(daemon.output())[:5]
    assert len(found["token"]) >= 4, "the run should have seen several tokens (refreshes)"
    assert not leaks, "\n".join(
        f"{leak.kind} in {leak.where}: {leak.excerpt}" for leak in leaks[:10]
    )


def exercise(
    config: DaemonConfig,
    mqtt: MqttObserver,
    sim: SimHandle,
    stepup_secret: str,
    seen_tokens: set[str],
    broker: MosquittoProcess,
) -> list[str]:
    """Commands with and without codes, token invalidations, a broker restart. Returns the
    step-up codes sent."""
    base = config.base
    topic = f"{base}/app/{CHAOS_APP}/car-1/cmd/lock"
    good = code_at(stepup_secret, _now())
    wrong = [f"{(int(good) + delta) % 1_000_000:06d}" for delta in (1, 500_001)]
    commands = [
        {"action": "LOCK", "id": "s-lock"},
        {"action": "UNLOCK", "id": "s-unlock-good", "code": good},
        {"action": "UNLOCK", "id": "s-unlock-wrong", "code": wrong[0]},
        {"action": "UNLOCK", "id": "s-unlock-none"},
    ]
    for command in commands:
        mqtt.publish(topic, json.dumps(command))
    expect_results(mqtt, base, [str(c["id"]) for c in commands])
    for round_ in range(2):
        sim.expire_tokens()
        before = set(seen_tokens)
        mqtt.publish(topic, json.dumps({"action": "LOCK", "id": f"s-refresh-{round_}"}))
        expect_results(mqtt, base, [f"s-refresh-{round_}"])
        wait_until(partial(refreshed, config, before), 10, what="a token refresh")
        seen_tokens |= tokens_now(config)
    restarted = time.monotonic()
    broker.restart(0.3)
    wait_until(
        lambda: mqtt.first(f"{base}/bridge/state", b"online", since=restarted),
        20,
        what="the bridge back after the broker restart",
    )
    mqtt.publish(topic, json.dumps({"action": "UNLOCK", "id": "s-after", "code": wrong[1]}))
    expect_results(mqtt, base, ["s-after"])
    return [good, *wrong]


def expect_results(mqtt: MqttObserver, base: str, ids: list[str]) -> None:
    def finals() -> set[str]:
        return {
            str(r.get("id"))
            for r in mqtt.results(base)
            if r.get("status") in ("rejected", "succeeded", "failed", "timed_out")
        }

    wait_until(lambda: set(ids) <= finals(), 20, what=f"results for {ids}")


def _now() -> datetime:
    return datetime.now(UTC)


def test_state_directory_is_private_after_the_first_login(tmp_path: Path) -> None:
    """The state directory `ownerlink login` creates is private to its owner (0700)."""
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    account = {
        "client_id": "c",
        "client_secret": "s",
        "authorize_url": "http://127.0.0.1:9/oauth/authorize",
        "token_url": "http://127.0.0.1:9/oauth/token",
    }
    config.write_text(json.dumps({"state_dir": str(state), "accounts": {ACCOUNT: account}}))
    started = cli("login", ACCOUNT, "--print-url", "--no-qr", "--config", str(config))
    assert started.returncode == 0, started.stderr
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0, oct(state.stat().st_mode)
