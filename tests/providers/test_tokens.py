"""Token lifecycle: refresh ahead of expiry, once at a time, persisted before use, re-login flag."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from bridge.errors import AuthUnavailable, ReauthRequired, StateError
from bridge.events import AlertKind
from bridge.providers.base import CallKind
from bridge.providers.oauth import LoginRequest
from bridge.providers.tokens import StoredTokens, TokenManager, TokenStore
from bridge.simulator import serve_in_thread
from tests.providers.simulated import connect, log_in, make_sim, sim_account, sim_settings
from tests.providers.support import V1, VEHICLE, FakeClock, ok, rig, seed_tokens

PATH = f"/api/fordconnect/vehicles/v1/{VEHICLE}"
URL = f"{V1}/{VEHICLE}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_token_close_to_expiry_is_refreshed_before_the_request(tmp_path: Path) -> None:
    """With under 60 s left the token is refreshed first; the request uses the new one."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.clock.now += 1200 - 59
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert len(r.ford.token_requests()) == 1
    assert r.ford.api_requests()[0].headers["Authorization"] == "Bearer access-0001-secretish"
    await r.parts.api.aclose()


async def test_a_token_with_time_left_is_used_as_is(tmp_path: Path) -> None:
    """With more than 60 s left no refresh happens."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.clock.now += 1200 - 61
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.token_requests() == []
    await r.parts.api.aclose()


@pytest.mark.parametrize("expires_in", ["NaN", "Infinity", -5, 0, 30])
async def test_one_refresh_serves_the_next_requests_whatever_lifetime_is_stated(
    tmp_path: Path, expires_in: float | str
) -> None:
    """A token answer whose lifetime is not a finite positive number, or under a minute, still
    lets one refresh serve the requests after it instead of a refresh before each."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.ford.expires_in = expires_in
    r.clock.now += 3600
    for _ in range(5):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.gate.kinds() == [CallKind.TOKEN] + [CallKind.READ] * 5
    await r.parts.api.aclose()


async def test_a_short_lived_token_is_refreshed_after_half_its_lifetime(tmp_path: Path) -> None:
    """A 30 s token is used for its first 15 s and refreshed once less than half of it is left."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.ford.expires_in = 30
    r.clock.now += 3600
    await r.parts.tokens.access_token()
    r.clock.now += 14
    assert await r.parts.tokens.access_token() == "access-0001-secretish"
    r.clock.now += 2
    assert await r.parts.tokens.access_token() == "access-0002-secretish"
    await r.parts.api.aclose()


async def test_concurrent_requests_share_one_refresh(tmp_path: Path) -> None:
    """Ten requests finding the token stale at once cause exactly one refresh."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.clock.now += 3600
    await asyncio.gather(*(r.parts.api.call("GET", URL, kind=CallKind.READ) for _ in range(10)))
    assert len(r.ford.token_requests()) == 1
    tokens = {req.headers["Authorization"] for req in r.ford.api_requests()}
    assert tokens == {"Bearer access-0001-secretish"}
    await r.parts.api.aclose()


async def test_a_rotated_refresh_token_is_on_disk_before_it_is_used(tmp_path: Path) -> None:
    """When the API sees the new access token, the file already holds the rotated refresh token."""
    r = rig(tmp_path)
    on_disk_at_request: list[str | None] = []

    def read_file_then_answer(request: httpx.Request) -> httpx.Response:
        on_disk_at_request.append(
            json.loads(TokenStore(tmp_path).path("acct").read_text())["refresh_token"]
        )
        return ok({"vehicle": {}})

    r.ford.on("GET", PATH, read_file_then_answer)
    r.clock.now += 3600
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert on_disk_at_request == ["refresh-0001-secretish"]
    await r.parts.api.aclose()


async def test_token_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    """The token file and its lock file are readable by their owner only, and so is the
    tokens directory."""
    r = rig(tmp_path)
    r.clock.now += 3600
    await r.parts.tokens.access_token()
    store = TokenStore(tmp_path)
    assert _mode(store.path("acct")) == 0o600
    assert _mode(store.directory / "acct.lock") == 0o600
    assert _mode(store.directory) == 0o700
    await r.parts.api.aclose()


def test_a_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A token file someone loosened to 0644 is refused (StateError), not silently used."""
    seed_tokens(tmp_path, "acct", expires_at=0)
    path = TokenStore(tmp_path).path("acct")
    path.chmod(0o644)
    with pytest.raises(StateError, match="chmod 600"):
        TokenStore(tmp_path).load("acct")


def test_a_crash_between_write_and_rename_leaves_the_old_file_valid(tmp_path: Path) -> None:
    """A process killed after writing the new tokens but before the rename leaves the old file."""
    seed_tokens(tmp_path, "acct", access="access-old-secretish", expires_at=123)
    # The child dies (os._exit, no cleanup) at the moment it would rename the temp file.
    child = textwrap.dedent(f"""
        import os, pathlib
        from bridge.providers.tokens import StoredTokens, TokenStore
        pathlib.Path.replace = lambda self, target: os._exit(9)
        TokenStore(pathlib.Path({str(tmp_path)!r})).save(
            "acct", StoredTokens("access-new-secretish", "refresh-new", 456))
    """)
    done = subprocess.run([sys.executable, "-c", child], check=False, capture_output=True)
    assert done.returncode == 9, done.stderr.decode()
    leftovers = [p.name for p in TokenStore(tmp_path).directory.iterdir()]
    # The crash really happened mid-replacement: the writer's own temp file is still there.
    assert any(n.startswith(".acct.json.") and n.endswith(".tmp") for n in leftovers)
    stored = TokenStore(tmp_path).load("acct")
    assert stored is not None and stored.access_token == "access-old-secretish"
    TokenStore(tmp_path).save("acct", StoredTokens("access-after", "r", 789))
    assert TokenStore(tmp_path).load("acct") == StoredTokens("access-after", "r", 789)


async def test_invalid_grant_marks_relogin_alerts_once_and_stops_calling(tmp_path: Path) -> None:
    """A refused refresh token: flag persisted, one alert, ReauthRequired, then no more traffic."""
    r = rig(tmp_path)
    r.ford.token_error = ok({"error": "invalid_grant", "error_description": "revoked"}, 400)
    r.clock.now += 3600
    with pytest.raises(ReauthRequired, match="ownerlink login acct"):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    sent = len(r.ford.requests)
    for _ in range(3):
        with pytest.raises(ReauthRequired):
            await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert len(r.ford.requests) == sent == 1
    assert [a.kind for a in r.alerts.alerts] == [AlertKind.RELOGIN_NEEDED]
    assert r.alerts.alerts[0].account == "acct"
    stored = TokenStore(tmp_path).load("acct")
    assert stored is not None and stored.relogin_needed and stored.access_token is None
    await r.parts.api.aclose()


async def test_the_relogin_flag_survives_a_restart(tmp_path: Path) -> None:
    """A new process finds the flag in the file and fails fast without the network."""
    TokenStore(tmp_path).save("acct", StoredTokens(None, None, 0, relogin_needed=True))
    r = rig(tmp_path, logged_in=False)
    with pytest.raises(ReauthRequired, match="needs a new login"):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.requests == []
    await r.parts.api.aclose()


async def test_a_new_login_clears_the_flag_for_a_running_process(tmp_path: Path) -> None:
    """After `ownerlink login` writes fresh tokens, the daemon's next call uses them."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.ford.token_error = ok({"error": "invalid_grant"}, 400)
    r.clock.now += 3600
    with pytest.raises(ReauthRequired):
        await r.parts.tokens.access_token()
    seed_tokens(
        tmp_path,
        "acct",
        access="access-relogged-secretish",
        expires_at=r.clock.now + 1200,
        obtained_at=r.clock.now,
    )
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.api_requests()[-1].headers["Authorization"] == "Bearer access-relogged-secretish"
    await r.parts.api.aclose()


async def test_complete_login_stores_tokens_and_clears_a_flag(tmp_path: Path) -> None:
    """Exchanging a code replaces a flagged file with fresh tokens."""
    r = rig(tmp_path, logged_in=False)
    TokenStore(tmp_path).save("acct", StoredTokens(None, None, 0, relogin_needed=True))
    login = LoginRequest("u", "state", None, "http://127.0.0.1:8742/callback", r.clock.now)
    await r.parts.tokens.complete_login(login, "code-1")
    stored = TokenStore(tmp_path).load("acct")
    assert stored is not None and not stored.relogin_needed
    assert stored.refresh_token == "refresh-0001-secretish"
    assert not r.parts.tokens.relogin_needed
    await r.parts.api.aclose()


async def test_without_a_login_calls_fail_fast(tmp_path: Path) -> None:
    """No token file: ReauthRequired naming the login command, and nothing sent."""
    r = rig(tmp_path, logged_in=False)
    with pytest.raises(ReauthRequired, match="not logged in"):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.requests == []
    await r.parts.api.aclose()


async def test_tokens_rotated_by_another_process_are_adopted_not_refreshed(tmp_path: Path) -> None:
    """If the CLI refreshed beside the daemon, the daemon adopts the file instead of reusing the
    refresh token the CLI's refresh already retired."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    await r.parts.api.call("GET", URL, kind=CallKind.READ)  # the daemon holds the seed tokens
    r.clock.now += 1190
    seed_tokens(
        tmp_path,
        "acct",
        access="access-from-cli-secretish",
        refresh="refresh-from-cli-secretish",
        expires_at=r.clock.now + 1200,
        obtained_at=r.clock.now,
    )
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.token_requests() == []
    assert r.ford.api_requests()[-1].headers["Authorization"] == "Bearer access-from-cli-secretish"
    await r.parts.api.aclose()


async def test_the_daemon_and_the_cli_refreshing_at_once_keep_the_login(tmp_path: Path) -> None:
    """Two managers (daemon, CLI) finding the token expired at once over real HTTP: one refresh at
    the simulator, both use its token, and the file keeps the login (no flag, no alert)."""
    with serve_in_thread(make_sim()) as base:
        settings = sim_settings(tmp_path, {"home": sim_account(base)})
        owner = connect(settings, "home", None)
        await log_in(owner, None)
        later = FakeClock(time.time() + 3600)  # both see the access token expired
        daemon, cli = (connect(settings, "home", None, clock=later) for _ in range(2))
        got = await asyncio.gather(
            daemon.parts.tokens.access_token(), cli.parts.tokens.access_token()
        )
        for account in (owner, daemon, cli):
            await account.parts.provider.aclose()
    assert got[0] == got[1]
    assert (daemon.gate.kinds() + cli.gate.kinds()).count(CallKind.TOKEN) == 1
    stored = TokenStore(tmp_path).load("home")
    assert stored is not None and not stored.relogin_needed and stored.access_token == got[0]
    assert daemon.alerts.alerts == cli.alerts.alerts == []


# Another process mid-refresh: holds the account's lock until told to save its tokens (or, should
# the waiting side never let it run, gives up after 10 s without saving).
LOCK_HOLDER = textwrap.dedent("""
    import fcntl, os, pathlib, select, sys
    from bridge.providers.tokens import StoredTokens, TokenStore
    state_dir, expires_at, obtained_at = pathlib.Path(sys.argv[1]), *map(float, sys.argv[2:])
    fd = os.open(state_dir / "tokens" / "acct.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    if select.select([sys.stdin], [], [], 10)[0]:
        TokenStore(state_dir).save("acct", StoredTokens(
            "access-from-cli-secretish", "refresh-from-cli-secretish", expires_at,
            obtained_at=obtained_at))
""")


async def test_a_refresh_waits_for_another_process_and_uses_its_tokens(tmp_path: Path) -> None:
    """While another process holds the account's lock, a refresh waits with the event loop free,
    then uses the tokens that process saved instead of spending the refresh token again."""
    r = rig(tmp_path)
    r.clock.now += 3600
    times = (str(r.clock.now + 1200), str(r.clock.now))
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOCK_HOLDER,
        str(tmp_path),
        *times,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    assert await holder.stdout.readline() == b"locked\n"
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(r.parts.tokens.access_token())
    await asyncio.sleep(0.3)  # nothing to await: this checks that nothing happens meanwhile
    assert loop.time() - started < 2, "the event loop was blocked while the lock was held"
    assert not waiting.done() and r.ford.token_requests() == []
    holder.stdin.write(b"save\n")
    await holder.stdin.drain()
    assert await holder.wait() == 0
    assert await waiting == "access-from-cli-secretish"
    assert r.ford.token_requests() == []
    await r.parts.api.aclose()


async def test_a_refused_refresh_adopts_tokens_another_process_saved(tmp_path: Path) -> None:
    """invalid_grant because a process without the lock rotated the refresh token a moment
    earlier: its saved tokens are used, the file is not flagged and no alert is raised."""
    r = rig(tmp_path)
    r.clock.now += 3600

    def rotated_elsewhere(request: httpx.Request) -> httpx.Response:
        seed_tokens(
            tmp_path,
            "acct",
            access="access-from-cli-secretish",
            refresh="refresh-from-cli-secretish",
            expires_at=r.clock.now + 1200,
            obtained_at=r.clock.now,
        )
        return ok({"error": "invalid_grant"}, 400)

    r.ford.token_error = rotated_elsewhere
    assert await r.parts.tokens.access_token() == "access-from-cli-secretish"
    assert r.alerts.alerts == []
    stored = TokenStore(tmp_path).load("acct")
    assert stored is not None and not stored.relogin_needed
    assert stored.refresh_token == "refresh-from-cli-secretish"
    await r.parts.api.aclose()


async def test_a_refresh_ahead_of_expiry_that_fails_keeps_the_token_it_has(tmp_path: Path) -> None:
    """The login service is down in the last minute of a token's life: the refresh ahead of
    expiry fails, but the token still works, so the read goes out with it instead of failing
    (and the car is not shown unavailable for an outage that has not cost anything yet). Once
    the token is about to die, the failure is the caller's (AuthUnavailable)."""
    r = rig(tmp_path)
    r.ford.on("GET", PATH, ok({"vehicle": {}}))
    r.ford.token_error = ok({"error": "temporarily_unavailable"}, 503)
    r.clock.now += 1200 - 30
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.api_requests()[0].headers["Authorization"] == "Bearer access-seed-secretish"
    r.clock.now += 25
    with pytest.raises(AuthUnavailable):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    await r.parts.api.aclose()


class _ThreadRecordingStore(TokenStore):
    """A real token store that notes which thread each save ran on."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.saved_on: list[int] = []

    def save(self, account: str, tokens: StoredTokens) -> None:
        self.saved_on.append(threading.get_ident())
        super().save(account, tokens)


async def test_a_refreshed_token_is_saved_off_the_event_loop(tmp_path: Path) -> None:
    """The save after a refresh (a write, an fsync and a directory fsync: slow on an SD card)
    runs on a worker thread, so the event loop goes on with MQTT and commands meanwhile."""
    r = rig(tmp_path)
    store = _ThreadRecordingStore(tmp_path)
    manager = TokenManager(
        account="acct", store=store, oauth=r.parts.oauth, alerts=r.alerts, clock=r.clock
    )
    r.clock.now += 3600
    assert await manager.access_token() == "access-0001-secretish"
    assert store.saved_on
    assert threading.get_ident() not in store.saved_on
    assert store.load("acct") is not None
    await r.parts.api.aclose()
