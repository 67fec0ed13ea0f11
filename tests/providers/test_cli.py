"""`ownerlink login`, `vehicles` and `status` end to end through bridge.cli.main and a simulator."""

from __future__ import annotations

import contextlib
import io
import json
import queue
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from bridge.cli import main
from bridge.providers.tokens import TokenStore
from bridge.simulator import Simulator, serve_in_thread
from tests.providers.simulated import SIM_CLIENT, make_sim

WAIT_S = 10.0


@pytest.fixture
def served() -> Iterator[tuple[Simulator, str]]:
    sim = make_sim()
    with serve_in_thread(sim) as base:
        yield sim, base


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(
    tmp_path: Path, base: str, *, redirect_port: int = 8742, vehicles: dict[str, Any] | None = None
) -> Path:
    """A config file with a v1 account `home` and a Query account `q` on the simulator."""

    def account(provider: str, path: str) -> dict[str, Any]:
        return {
            "provider": provider,
            **SIM_CLIENT,
            "authorize_url": f"{base}/oauth/authorize",
            "token_url": f"{base}/oauth/token",
            "api_base_url": base + path,
            "redirect_uri": f"http://127.0.0.1:{redirect_port}/callback",
            **({"application_id": "sim-app-id"} if provider == "fordconnect" else {}),
        }

    doc = {
        "state_dir": str(tmp_path / "state"),
        "accounts": {
            "home": account("fordconnect", "/api/fordconnect/vehicles/v1"),
            "q": account("fordconnect-query", "/fcon-query/v1"),
        },
        "vehicles": vehicles or {},
        "logging": {"level": "warning"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def authorise_url(printed: str) -> str:
    return next(line.strip() for line in printed.splitlines() if "/oauth/authorize?" in line)


def redirect_of(url: str, **extra: str) -> str:
    """What the owner's browser is sent to after consenting (the simulator auto-consents)."""
    query = "".join(f"&{k}={v}" for k, v in extra.items())
    answer = httpx.get(url + query, follow_redirects=False)
    assert answer.status_code == 302
    return answer.headers["location"]


def secrets_on_disk(tmp_path: Path, account: str) -> list[str]:
    stored = TokenStore(tmp_path / "state").load(account)
    assert stored is not None
    return [t for t in (stored.access_token, stored.refresh_token) if t]


def test_a_script_logs_in_with_print_url_and_redirect_url(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--print-url, GET the URL without following redirects, --redirect-url the Location: done."""
    sim, base = served
    config = write_config(tmp_path, base)
    assert main(["login", "home", "--config", str(config), "--print-url", "--no-qr"]) == 0
    started = capsys.readouterr().out
    location = redirect_of(authorise_url(started), vehicle="all")
    assert main(["login", "home", "--config", str(config), "--redirect-url", location]) == 0
    out, err = capsys.readouterr()
    assert "Logged in" in out and "covers 3 vehicle(s)" in out
    for car in sim.vehicles:
        assert car.vehicle_id in out and car.vin not in out
    token_file = TokenStore(tmp_path / "state").path("home")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert not TokenStore(tmp_path / "state").login_path("home").exists()
    code = dict(p.split("=") for p in urlsplit(location).query.split("&"))["code"]
    for secret in [*secrets_on_disk(tmp_path, "home"), code, "sim-secret"]:
        assert secret not in started + out + err


def test_the_qr_code_is_printed_by_default(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --no-qr the authorise URL is also shown as a terminal QR code."""
    _, base = served
    config = write_config(tmp_path, base)
    assert main(["login", "q", "--config", str(config), "--print-url"]) == 0
    out = capsys.readouterr().out
    assert "scan it" in out and "█" in out


@pytest.mark.parametrize(
    ("tamper", "message"),
    [("code", "refused the authorisation code"), ("state", "state does not match")],
)
def test_a_wrong_code_or_state_is_one_clear_line(
    tmp_path: Path,
    served: tuple[Simulator, str],
    capsys: pytest.CaptureFixture[str],
    tamper: str,
    message: str,
) -> None:
    """A wrong code or a foreign state exits 1 with one `error:` line and no traceback."""
    _, base = served
    config = write_config(tmp_path, base)
    main(["login", "q", "--config", str(config), "--print-url", "--no-qr"])
    location = redirect_of(authorise_url(capsys.readouterr().out))
    parts = dict(p.split("=") for p in urlsplit(location).query.split("&"))
    parts[tamper] = "tampered"
    bad = f"http://127.0.0.1:8742/callback?code={parts['code']}&state={parts['state']}"
    assert main(["login", "q", "--config", str(config), "--redirect-url", bad]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_an_unreachable_token_endpoint_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token endpoint nobody listens on exits 1 naming the host, without a traceback."""
    base = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, base)
    assert main(["login", "q", "--config", str(config), "--print-url", "--no-qr"]) == 0
    state = dict(
        p.split("=") for p in urlsplit(authorise_url(capsys.readouterr().out)).query.split("&")
    )["state"]
    redirect = f"http://127.0.0.1:8742/callback?code=abc&state={state}"
    assert main(["login", "q", "--config", str(config), "--redirect-url", redirect]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the token endpoint at 127.0.0.1:") and "Traceback" not in err


def test_redirect_url_dash_reads_the_url_from_standard_input(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--redirect-url -` takes Ford's redirect from standard input, so the one-time code never
    sits in the process list; a real `ownerlink` process reads it and logs in."""
    _, base = served
    config = write_config(tmp_path, base)
    assert main(["login", "home", "--config", str(config), "--print-url", "--no-qr"]) == 0
    location = redirect_of(authorise_url(capsys.readouterr().out), vehicle="all")
    argv = ["login", "home", "--config", str(config), "--redirect-url", "-"]
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *argv],
        input=location + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Logged in" in done.stdout
    assert TokenStore(tmp_path / "state").path("home").exists()


def test_redirect_url_without_a_started_login_says_what_to_do(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--redirect-url with no login in progress exits 1 telling the owner to start one."""
    _, base = served
    config = write_config(tmp_path, base)
    assert main(["login", "q", "--config", str(config), "--redirect-url", "http://x/cb"]) == 1
    assert "no login in progress" in capsys.readouterr().err


def test_an_ambiguous_or_unknown_account_is_a_config_error(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two accounts and none named, or a name not configured, exit 2 listing the accounts."""
    _, base = served
    config = write_config(tmp_path, base)
    assert main(["login", "--config", str(config), "--print-url"]) == 2
    assert "home, q" in capsys.readouterr().err
    assert main(["login", "nope", "--config", str(config), "--print-url"]) == 2


class Watched(io.StringIO):
    """A stdout that signals when a line containing `marker` has been written."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.seen = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.marker in self.getvalue():
            self.seen.set()
        return written


def run_cli_in_thread(argv: list[str], results: list[int]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(main(argv)), daemon=True)
    thread.start()
    return thread


def test_listen_receives_the_redirect_on_loopback(
    tmp_path: Path, served: tuple[Simulator, str]
) -> None:
    """--listen serves the redirect URI; the browser's redirect lands there and login completes."""
    _, base = served
    config = write_config(tmp_path, base, redirect_port=free_port())
    out = Watched("Waiting for the redirect")
    results: list[int] = []
    with contextlib.redirect_stdout(out):
        thread = run_cli_in_thread(
            ["login", "q", "--config", str(config), "--listen", "--no-qr", "--timeout", "10"],
            results,
        )
        assert out.seen.wait(WAIT_S)
        page = httpx.get(authorise_url(out.getvalue()), follow_redirects=True)
        thread.join(WAIT_S)
    assert page.status_code == 200 and "You can close this window" in page.text
    assert results == [0]
    assert "Logged in" in out.getvalue()


def test_listen_offers_no_qr_code_for_a_phone(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--listen takes the redirect on this machine's loopback: a phone that scanned the QR code
    was sent to its own 127.0.0.1, and the login here timed out. The URL alone is offered."""
    _, base = served
    config = write_config(tmp_path, base, redirect_port=free_port())
    argv = ["login", "q", "--config", str(config), "--listen", "--timeout", "0.2"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "/oauth/authorize?" in out and "scan" not in out


def test_listen_gives_up_after_its_timeout(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """With no redirect arriving, --listen exits 1 after --timeout seconds."""
    _, base = served
    config = write_config(tmp_path, base, redirect_port=free_port())
    argv = ["login", "q", "--config", str(config), "--listen", "--no-qr", "--timeout", "0.2"]
    assert main(argv) == 1
    assert "no redirect arrived within 0.2 s" in capsys.readouterr().err


class PastedStdin(io.StringIO):
    """A stdin whose line arrives when the test has it (the owner pasting)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: queue.Queue[str] = queue.Queue()

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self.lines.get(timeout=WAIT_S)


def test_the_prompt_takes_a_pasted_redirect_url(
    tmp_path: Path, served: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without flags the owner pastes Ford's redirect URL at the prompt."""
    _, base = served
    config = write_config(tmp_path, base)
    stdin, out = PastedStdin(), Watched("Paste that whole URL")
    results: list[int] = []
    monkeypatch.setattr("sys.stdin", stdin)
    with contextlib.redirect_stdout(out):
        thread = run_cli_in_thread(["login", "q", "--config", str(config), "--no-qr"], results)
        assert out.seen.wait(WAIT_S)
        stdin.lines.put(redirect_of(authorise_url(out.getvalue())) + "\n")
        thread.join(WAIT_S)
    assert results == [0]


def test_vehicles_and_status_after_login(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`vehicles --json` shows configured and discovered cars; `status` reads one; no secrets."""
    sim, base = served
    ev = sim.vehicles[0]
    config = write_config(
        tmp_path,
        base,
        vehicles={"mache": {"account": "home", "id": ev.vehicle_id}, "pickup": {"account": "q"}},
    )
    main(["login", "home", "--config", str(config), "--print-url", "--no-qr"])
    location = redirect_of(authorise_url(capsys.readouterr().out), vehicle="all")
    assert main(["login", "home", "--config", str(config), "--redirect-url", location]) == 0
    capsys.readouterr()

    assert main(["vehicles", "--config", str(config), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    mache = next(v for v in listing["configured"] if v["alias"] == "mache")
    assert mache["powertrain"] == "ev" and "start_charge" in mache["commands"]
    assert "horn_lights" in mache["commands"]  # the simulator's extension
    assert len(listing["discovered"]["home"]) == 3
    assert "not logged in" in listing["errors"]["q"]

    assert main(["vehicles", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "mache: account home (fordconnect)" in text and "Account q: not logged in" in text

    assert main(["status", "mache", "--config", str(config), "--json"]) == 0
    status_out = capsys.readouterr().out
    doc = json.loads(status_out)
    assert doc["vehicle_id"] == "mache" and doc["status"]["lock"] == "locked"
    assert main(["status", "mache", "--config", str(config)]) == 0
    status_text = capsys.readouterr().out
    assert "lock: locked" in status_text
    # The account named instead: its one configured vehicle, not "the login covers 3".
    assert main(["status", "home", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vehicle_id"] == "mache"

    everything = json.dumps(listing) + text + status_out + status_text
    for secret in [*secrets_on_disk(tmp_path, "home"), "sim-secret"]:
        assert secret not in everything
    assert all(car.vin not in everything for car in sim.vehicles)


def test_vehicles_names_a_configured_vehicle_the_login_does_not_cover(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped id and an id-less vehicle on a login with three cars were listed as "commands:
    unknown until the account is logged in", of an account that was logged in."""
    _, base = served
    config = write_config(
        tmp_path,
        base,
        vehicles={"typo": {"account": "home", "id": "0" * 32}, "bare": {"account": "home"}},
    )
    main(["login", "home", "--config", str(config), "--print-url", "--no-qr"])
    location = redirect_of(authorise_url(capsys.readouterr().out), vehicle="all")
    assert main(["login", "home", "--config", str(config), "--redirect-url", location]) == 0
    capsys.readouterr()

    assert main(["vehicles", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "until the account is logged in" not in text
    assert "typo: account home; vehicles.typo.id: not the id of any of the 3 vehicles" in text
    assert "bare: account home; vehicles.bare.id: missing, but account home's login covers" in text
    assert main(["vehicles", "--config", str(config), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    problems = {v["alias"]: v["problem"] for v in listing["configured"]}
    assert problems["typo"].startswith("vehicles.typo.id: not the id")
    assert problems["bare"].startswith("vehicles.bare.id: missing")
    assert main(["status", "home", "--config", str(config)]) == 2
    expected = "accounts.home: has 2 vehicles; name one: bare, typo"
    assert capsys.readouterr().err == f"config error: {expected}\n"


def test_status_of_an_account_that_never_logged_in_is_one_line(
    tmp_path: Path, served: tuple[Simulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` for a logged-out account exits 1 telling the owner to log in."""
    _, base = served
    config = write_config(tmp_path, base)
    assert main(["status", "q", "--config", str(config)]) == 1
    assert "run `ownerlink login q`" in capsys.readouterr().err


def test_status_with_nothing_configured_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It asked to "name the vehicle to read (none)", as if naming one could help."""
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    expected = "accounts: none configured, so no vehicle to read (see config.example.yaml)"
    assert err == f"config error: {expected}\n"
