"""The HTTP edge: gate first, explicit timeout, and every error class mapped onto bridge.errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bridge.errors import (
    BudgetExhausted,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    ReauthRequired,
    Unsupported,
)
from bridge.providers.barrier import held_until, pass_barrier
from bridge.providers.base import CallKind, Commit
from bridge.providers.http import MAX_BODY_BYTES, Edge, retry_after_s, where
from tests.providers.support import V1, VEHICLE, RecordingGate, ok, rig

URL = f"{V1}/{VEHICLE}"


async def _read(tmp_path: Path, *answers: httpx.Response) -> None:
    r = rig(tmp_path)
    r.ford.on("GET", f"/api/fordconnect/vehicles/v1/{VEHICLE}", *answers)
    try:
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    finally:
        await r.parts.api.aclose()


async def test_429_becomes_rate_limited_with_retry_after_seconds(tmp_path: Path) -> None:
    """A 429 raises RateLimited carrying the Retry-After seconds."""
    with pytest.raises(RateLimited) as caught:
        await _read(tmp_path, ok({"message": "slow down"}, 429, **{"Retry-After": "17"}))
    assert caught.value.retry_after == 17


async def test_429_without_retry_after_waits_a_cautious_default(tmp_path: Path) -> None:
    """A 429 without Retry-After backs off for 60 s rather than retrying at once."""
    with pytest.raises(RateLimited) as caught:
        await _read(tmp_path, ok({}, 429))
    assert caught.value.retry_after == 60


def test_retry_after_accepts_an_http_date() -> None:
    """Retry-After given as an HTTP date counts the seconds from now."""
    response = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert retry_after_s(response, now=1445412480.0) == 30.0


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in Europe/Berlin (TZ), an hour or two east of UTC."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("berlin")
@pytest.mark.parametrize("header", ["Wed Oct 21 07:28:30 2015", "Wed, 21 Oct 2015 07:28:30 -0000"])
def test_a_retry_after_date_without_a_zone_is_utc(header: str) -> None:
    """HTTP dates are GMT, also in the asctime form a recipient must accept, which names no
    zone: read in local time, it asked for the next call up to two hours early in Europe."""
    response = httpx.Response(429, headers={"Retry-After": header})
    assert retry_after_s(response, now=1445412480.0) == 30.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("inf", 60.0),
        ("nan", 60.0),
        ("1e12", 86400.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86400.0),
        ("-5", 0.0),
    ],
)
def test_retry_after_is_finite_and_at_most_a_day(header: str, seconds: float) -> None:
    """An infinite, absurd or far-future Retry-After is bounded: every date computed from it
    (the account's block, the next poll) must stay representable."""
    response = httpx.Response(429, headers={"Retry-After": header})
    assert retry_after_s(response, now=1445412480.0) == seconds


async def test_403_is_forbidden_with_the_servers_reason(tmp_path: Path) -> None:
    """A 403 raises Forbidden whose message carries the reason (remote-start allowance)."""
    body = {"error": {"code": 403, "title": "Forbidden", "details": "remote start limit reached"}}
    with pytest.raises(Forbidden, match="remote start limit reached"):
        await _read(tmp_path, ok(body, 403))


async def test_403_suspension_message_is_kept(tmp_path: Path) -> None:
    """A Query-style 403 for a suspended account says so in the Forbidden message."""
    body = {"error": 403, "message": "Forbidden: account suspended for excessive requests"}
    with pytest.raises(Forbidden, match="suspended"):
        await _read(tmp_path, ok(body, 403))


@pytest.mark.parametrize("status", [404, 400])
async def test_404_and_400_are_not_found(tmp_path: Path, status: int) -> None:
    """404 (unknown vehicle) and 400 (malformed vehicle id) raise NotFound."""
    with pytest.raises(NotFound):
        await _read(tmp_path, ok({"error": {"code": 4002}}, status))


async def test_406_is_unsupported(tmp_path: Path) -> None:
    """406 raises Unsupported: the vehicle cannot do it, never retry."""
    with pytest.raises(Unsupported):
        await _read(tmp_path, ok({"error": {"code": 4006, "title": "Not Acceptable"}}, 406))


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_provider_unavailable(tmp_path: Path, status: int) -> None:
    """Every 5xx raises ProviderUnavailable (retry later with backoff)."""
    with pytest.raises(ProviderUnavailable, match=str(status)):
        await _read(tmp_path, ok({"error": "server_error"}, status))


async def test_malformed_json_is_provider_unavailable(tmp_path: Path) -> None:
    """A 200 with a body that is not JSON raises ProviderUnavailable, chained to the parse error."""
    with pytest.raises(ProviderUnavailable, match="malformed JSON") as caught:
        await _read(tmp_path, httpx.Response(200, content=b"<html><h1>Service Unavailable"))
    assert caught.value.__cause__ is not None


async def test_json_that_is_not_an_object_is_provider_unavailable(tmp_path: Path) -> None:
    """A JSON array where an object was expected is as malformed as bad syntax."""
    with pytest.raises(ProviderUnavailable):
        await _read(tmp_path, ok([1, 2, 3]))


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
)
async def test_transport_failures_are_provider_unavailable_from_the_cause(
    tmp_path: Path, error: httpx.HTTPError
) -> None:
    """Timeouts, refused and dropped connections raise ProviderUnavailable from the httpx error;
    only a connection never made is ProviderUnreachable (the request did not leave)."""

    def boom(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ProviderUnavailable) as caught:
        await _read(tmp_path, boom)  # type: ignore[arg-type]
    assert caught.value.__cause__ is error
    never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
    assert isinstance(caught.value, ProviderUnreachable) is never_sent


async def test_the_gate_is_charged_before_any_traffic(tmp_path: Path) -> None:
    """A gate refusing the call (BudgetExhausted) means no request leaves at all."""
    r = rig(tmp_path)
    r.gate.refuse = BudgetExhausted("over budget", retry_at=0)
    with pytest.raises(BudgetExhausted):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.requests == []
    await r.parts.api.aclose()


async def test_each_request_is_charged_with_its_kind(tmp_path: Path) -> None:
    """Reads charge READ, commands charge COMMAND, token refreshes charge TOKEN."""
    r = rig(tmp_path)
    r.ford.on("GET", f"/api/fordconnect/vehicles/v1/{VEHICLE}", ok({"vehicle": {}}))
    r.ford.on("POST", f"/api/fordconnect/vehicles/v1/{VEHICLE}/lock", ok({"commandId": "c"}, 202))
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    await r.parts.api.call("POST", f"{URL}/lock", kind=CallKind.COMMAND)
    r.clock.now += 3600  # the token is stale now: the next call refreshes first
    await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.gate.kinds() == [CallKind.READ, CallKind.COMMAND, CallKind.TOKEN, CallKind.READ]
    await r.parts.api.aclose()


async def test_every_request_carries_an_explicit_timeout() -> None:
    """The edge sets the configured timeout on each request instead of relying on defaults."""
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return ok({})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    edge = Edge(account="a", client=client, gate=RecordingGate(), timeout_s=7.5)
    await edge.send("GET", URL, kind=CallKind.READ)
    await edge.aclose()
    assert seen == [{"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}]


async def test_401_refreshes_once_and_retries_once(tmp_path: Path) -> None:
    """A token expired mid-request (401) costs one refresh and one retry, then succeeds."""
    r = rig(tmp_path)
    r.ford.on(
        "GET",
        f"/api/fordconnect/vehicles/v1/{VEHICLE}",
        ok({"error": "invalid_token"}, 401),
        ok({"vehicle": {"ok": True}}),
    )
    body = await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert body == {"vehicle": {"ok": True}}
    assert len(r.ford.token_requests()) == 1
    retried = r.ford.api_requests()[-1]
    assert retried.headers["Authorization"] == "Bearer access-0001-secretish"
    await r.parts.api.aclose()


async def test_401_after_a_refresh_is_reauth_required(tmp_path: Path) -> None:
    """A second 401 right after a refresh raises ReauthRequired; no further retries."""
    r = rig(tmp_path)
    r.ford.on("GET", f"/api/fordconnect/vehicles/v1/{VEHICLE}", ok({"error": "invalid_token"}, 401))
    with pytest.raises(ReauthRequired):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert len(r.ford.api_requests()) == 2
    assert len(r.ford.token_requests()) == 1
    await r.parts.api.aclose()


async def test_401_for_a_vehicle_outside_the_consent_costs_no_refresh(tmp_path: Path) -> None:
    """v1's 401 with error code 3000 is about the resource, not the token: NotFound, no refresh."""
    r = rig(tmp_path)
    body = {"error": {"code": 3000, "title": "Unauthorized", "details": "vehicle not authorized"}}
    r.ford.on("GET", f"/api/fordconnect/vehicles/v1/{VEHICLE}", ok(body, 401))
    with pytest.raises(NotFound, match="not authorized"):
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert r.ford.token_requests() == []
    await r.parts.api.aclose()


async def test_error_messages_never_carry_the_token(tmp_path: Path) -> None:
    """A server echoing the bearer token in its error text does not get it into our exception."""
    r = rig(tmp_path)
    echo = {"message": "bad header: Bearer access-seed-secretish"}
    r.ford.on("GET", f"/api/fordconnect/vehicles/v1/{VEHICLE}", ok(echo, 503))
    with pytest.raises(ProviderUnavailable) as caught:
        await r.parts.api.call("GET", URL, kind=CallKind.READ)
    assert "access-seed-secretish" not in str(caught.value)
    await r.parts.api.aclose()


class Held:
    """A barrier already passed: an audit record on disk, seq 41."""

    seq = 41

    async def durable(self) -> None:
        return None


class DeferringGate:
    """Takes every command on its record's word and notes when each commit runs."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.records: list[int | None] = []

    def charge(self, account: str, kind: CallKind, *, record: int | None = None) -> Commit | None:
        self.records.append(record)
        self.events.append(f"charge {kind.value}")
        return None if record is None else (lambda: self.events.append("commit"))


@pytest.mark.parametrize("fails", [False, True])
async def test_a_held_command_names_its_record_and_is_written_down_after_sending(
    fails: bool,
) -> None:
    """The request held for a decision record names that record to the gate, and the gate's
    commit runs once the request has gone (or failed), never before it is sent; requests not
    held, and calls that are not commands, name none."""
    events: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events.append(f"sent {request.method}")
        if fails and request.method == "POST":
            raise httpx.ConnectError("refused")
        return ok({})

    gate = DeferringGate(events)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    edge = Edge(account="a", client=client, gate=gate, timeout_s=5)
    with held_until(Held()):
        try:
            await edge.send("POST", URL, kind=CallKind.COMMAND)
        except ProviderUnavailable:
            assert fails
        await pass_barrier()
        await edge.send("GET", URL, kind=CallKind.COMMAND)  # a status poll: no longer held
    with held_until(Held()):
        await edge.send("GET", URL, kind=CallKind.READ)
    await edge.aclose()
    assert gate.records == [41, None, None]
    assert events[:3] == ["charge command", "sent POST", "commit"]
    assert "commit" not in events[3:]


async def test_a_held_command_whose_request_cannot_be_built_is_still_written_down() -> None:
    """Whatever stops the request after the gate took it (here a body that is not JSON), the
    gate's commit runs: a call taken on its record's word never stays unwritten."""
    events: list[str] = []
    gate = DeferringGate(events)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: ok({})))
    edge = Edge(account="a", client=client, gate=gate, timeout_s=5)
    with held_until(Held()), pytest.raises(TypeError):
        await edge.send("POST", URL, kind=CallKind.COMMAND, json_body=object())
    await edge.aclose()
    assert events == ["charge command", "commit"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://api.example/api/fordconnect/vehicles/v1/0c697ebfdf5599e3b4538451e24cfc73/lock",
            "POST /api/fordconnect/vehicles/v1/{id}/lock",
        ),
        (
            "https://api.example/v1/8a7f9fa8/unlock/9c2e1d2a-1b2c-4d5e-8f90-123456789abc?code=9",
            "POST /v1/8a7f9fa8/unlock/{id}",
        ),
        ("https://api.example/vehicles/1FTFW1E50PFA12345/status", "POST /vehicles/{id}/status"),
        ("https://api.example/fcon-query/v1/vehicle-health/alerts", None),
        ("https://api.example", "POST /"),
    ],
)
def test_messages_name_the_endpoint_never_the_ids_in_its_path(url: str, shown: str | None) -> None:
    """Provider errors reach results, the audit log and alerts: no vehicle id, VIN or query."""
    expected = shown or "POST /fcon-query/v1/vehicle-health/alerts"
    assert where("POST", url) == expected


class _Endless(httpx.AsyncByteStream):
    """A body that never ends: `chunk` after `chunk`, `pause` seconds apart; counts what it sent."""

    def __init__(self, chunk: bytes, pause: float) -> None:
        self.chunk, self.pause, self.sent = chunk, pause, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(self.pause)
            self.sent += len(self.chunk)
            yield self.chunk


async def _send_endless(body: _Endless, timeout_s: float) -> None:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, stream=body))
    )
    edge = Edge(account="a", client=client, gate=RecordingGate(), timeout_s=timeout_s)
    try:
        # The outer limit only keeps a failing test from hanging the run.
        await asyncio.wait_for(edge.send("GET", URL, kind=CallKind.READ), 10)
    finally:
        await edge.aclose()


async def test_a_body_that_trickles_forever_times_out_as_a_whole() -> None:
    """A server that sends a byte now and then never trips a per-read timeout: the request as a
    whole must end within the timeout, or the vehicle's poll (and the daemon's stop) hangs."""
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await _send_endless(_Endless(b" ", pause=0.01), timeout_s=0.3)


async def test_a_huge_body_is_refused_without_being_read_whole() -> None:
    """A body past MAX_BODY_BYTES (a proxy's runaway answer) is ProviderUnavailable, and reading
    stops there: a Raspberry Pi must not be run out of memory by the car maker's edge."""
    body = _Endless(b"x" * 65536, pause=0)
    with pytest.raises(ProviderUnavailable, match="larger than"):
        await _send_endless(body, timeout_s=30)
    assert body.sent <= MAX_BODY_BYTES + 65536
