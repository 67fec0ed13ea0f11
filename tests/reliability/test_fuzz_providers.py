"""Fuzzed provider answers: whatever Ford sends back, a provider returns data or a bridge error.

Both providers (FordConnect v1 and FordConnect Query) are built as the daemon builds them, on an
`httpx.MockTransport` that answers every API request from a script hypothesis draws: real
answers taken from the simulator and then mutated (fields dropped, replaced by other JSON,
added), random JSON, raw bytes, and statuses from 200 to 503 with odd `Retry-After` headers.
`list_vehicles`, `read` and (v1) `execute` must end in a value or an `OwnerlinkError`; anything
else (KeyError, TypeError, AttributeError …) is a crash the poller or the command pipeline
would have to absorb.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import AccountConfig, CommandsConfig, Settings
from bridge.errors import OwnerlinkError
from bridge.events import CollectingAlerts
from bridge.model import CommandOutcome, Operation, VehicleInfo, VehicleState
from bridge.providers.base import FreeGate
from bridge.providers.factory import build_account
from bridge.providers.fordconnect import FordConnectProvider
from bridge.providers.tokens import StoredTokens, TokenStore
from bridge.simulator import ManualClock, Simulator, create_app

BASE = "https://ford.test"
V1 = "/api/fordconnect/vehicles/v1"
QUERY = "/fcon-query/v1"
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
STATUSES = st.sampled_from(
    [200, 200, 200, 202, 204, 301, 400, 401, 403, 404, 406, 409, 429, 500, 502, 503]
)
RETRY_AFTER = st.none() | st.sampled_from(
    ["", "0", "-5", "1e9", "abc", "Wed, 21 Oct 2015 07:28:00 GMT", "nan", "inf"]
)


# -- real answers, from the simulator ------------------------------------------------------------


def _sample_answers() -> dict[str, Any]:
    """What the simulator answers on each route (a car parked at noon), by route name."""
    from datetime import UTC, datetime

    sim = Simulator(
        vehicles=1, clock=ManualClock(datetime(2025, 6, 11, 12, tzinfo=UTC)), admin=True
    )
    vehicle = sim.vehicles[0].vehicle_id
    v1_token = sim.grant(vehicle=vehicle)["access_token"]
    headers = {"Authorization": f"Bearer {v1_token}", "Application-Id": "sim-app-id"}

    async def fetch() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(sim))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sim", headers=headers
        ) as c:
            lock = (await c.post(f"{V1}/{vehicle}/lock")).json()
            return {
                "vehicles": (await c.get(V1)).json(),
                "vehicle": (await c.get(f"{V1}/{vehicle}")).json(),
                "command": lock,
                "status": (await c.get(f"{V1}/{vehicle}/lock/{lock.get('commandId')}")).json(),
                "telemetry": (await c.get(f"{QUERY}/telemetry")).json(),
                "garage": (await c.get(f"{QUERY}/garage")).json(),
                "alerts": (await c.get(f"{QUERY}/vehicle-health/alerts")).json(),
            }

    return asyncio.run(fetch())


SAMPLES = _sample_answers()


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """`value` with random parts dropped, replaced or added (most of it kept, to go deep)."""
    if draw(st.integers(0, 11)) == 0:
        return draw(JSON)
    if isinstance(value, dict):
        out = {k: draw(mutated(v)) for k, v in value.items() if draw(st.integers(0, 15))}
        if draw(st.integers(0, 7)) == 0:
            out[draw(st.text(max_size=10))] = draw(JSON)
        return out
    if isinstance(value, list):
        return [draw(mutated(v)) for v in value if draw(st.integers(0, 15))]
    return value


def body(sample: str) -> st.SearchStrategy[bytes]:
    """A response body: a mutated real answer (mostly), random JSON, or raw bytes."""
    return st.one_of(
        mutated(SAMPLES[sample]).map(lambda v: json.dumps(v).encode()),
        mutated(SAMPLES[sample]).map(lambda v: json.dumps(v).encode()),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
    )


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None

    def response(self) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return httpx.Response(self.status, content=self.body, headers=headers)


def answers(sample: str) -> st.SearchStrategy[list[Answer]]:
    one = st.builds(Answer, STATUSES, body(sample), RETRY_AFTER)
    return st.lists(one, min_size=1, max_size=4)


# -- the providers on a scripted transport -------------------------------------------------------


class Script:
    """Serves each API request the next scripted answer (the last repeats); tokens always work."""

    def __init__(self, plan: list[Answer]) -> None:
        self.plan = plan
        self.served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            body = {"access_token": f"at{self.served}", "refresh_token": "rt", "expires_in": 1200}
            return httpx.Response(200, json=body)
        answer = self.plan[min(self.served, len(self.plan) - 1)]
        self.served += 1
        return answer.response()


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("fuzz-providers")
    yield folder


def settings_for(state_dir: Path, provider: str) -> Settings:
    path = V1 if provider == "fordconnect" else QUERY
    account = AccountConfig(
        provider=provider,
        client_id="c",
        client_secret="s",
        application_id="a" if provider == "fordconnect" else None,
        authorize_url=f"{BASE}/oauth/authorize",
        token_url=f"{BASE}/oauth/token",
        api_base_url=BASE + path,
    )
    TokenStore(state_dir).save(
        "acct",
        StoredTokens("at", "rt", expires_at=time.time() + 3600, obtained_at=time.time()),
    )
    commands = CommandsConfig(timeout_s=30, status_poll_interval_s=1)
    return Settings(state_dir=state_dir, accounts={"acct": account}, commands=commands)


async def exercise(settings: Settings, script: Script, call: str) -> Any:
    parts = build_account(
        settings,
        "acct",
        gate=FreeGate(),
        alerts=CollectingAlerts(),
        transport=httpx.MockTransport(script),
    )
    provider = parts.provider
    if isinstance(provider, FordConnectProvider):
        # The same provider with a fake clock, so polling a command's status takes no real time.
        fake = FakeTime()
        provider = FordConnectProvider(
            "acct",
            api=parts.api,
            base_url=BASE + V1,
            poll_interval_s=1,
            command_timeout_s=30,
            clock=fake,
            sleep=fake.sleep,
        )
    try:
        if call == "list":
            return await provider.list_vehicles()
        if call == "read":
            return await provider.read("0123456789abcdef0123456789abcdef")
        return await provider.execute("0123456789abcdef0123456789abcdef", Operation.LOCK)
    except OwnerlinkError as exc:
        return exc
    finally:
        await provider.aclose()


ALLOWED = (VehicleState, CommandOutcome, OwnerlinkError, list)


def check(result: Any) -> None:
    assert isinstance(result, ALLOWED), f"unexpected {type(result).__name__}: {result!r}"
    if isinstance(result, list):
        assert all(isinstance(info, VehicleInfo) for info in result)


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SOAK = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _v1(
    state_dir: Path, list_plan: list[Answer], read_plan: list[Answer], command_plan: list[Answer]
) -> None:
    settings_ = settings_for(state_dir, "fordconnect")
    check(asyncio.run(exercise(settings_, Script(list_plan), "list")))
    check(asyncio.run(exercise(settings_, Script(read_plan), "read")))
    check(asyncio.run(exercise(settings_, Script(command_plan), "execute")))


def _query(state_dir: Path, garage_plan: list[Answer], telemetry_plan: list[Answer]) -> None:
    settings_ = settings_for(state_dir, "fordconnect-query")
    check(asyncio.run(exercise(settings_, Script(garage_plan), "list")))
    check(asyncio.run(exercise(settings_, Script(telemetry_plan), "read")))


V1_PLANS = (
    answers("vehicles"),
    answers("vehicle"),
    st.lists(st.sampled_from(["command", "status"]).flatmap(answers), min_size=1, max_size=2).map(
        lambda ls: [a for plan in ls for a in plan]
    ),
)
QUERY_PLANS = (answers("garage"), answers("telemetry"))


@FUZZ
@given(*V1_PLANS)
def test_fordconnect_v1_survives_any_answer(
    state_dir: Path, list_plan: list[Answer], read_plan: list[Answer], command_plan: list[Answer]
) -> None:
    """FordConnect v1: any status and body end in data or a bridge error, never a crash."""
    _v1(state_dir, list_plan, read_plan, command_plan)


@FUZZ
@given(*QUERY_PLANS)
def test_fordconnect_query_survives_any_answer(
    state_dir: Path, garage_plan: list[Answer], telemetry_plan: list[Answer]
) -> None:
    """FordConnect Query: any status and body end in data or a bridge error, never a crash."""
    _query(state_dir, garage_plan, telemetry_plan)


@pytest.mark.soak
@pytest.mark.timeout(900)  # thousands of examples: minutes, not the suite's 120 s
@SOAK
@given(*V1_PLANS)
def test_fordconnect_v1_survives_any_answer_soak(
    state_dir: Path, list_plan: list[Answer], read_plan: list[Answer], command_plan: list[Answer]
) -> None:
    """FordConnect v1, 2000 examples: data or a bridge error, never a crash."""
    _v1(state_dir, list_plan, read_plan, command_plan)


@pytest.mark.soak
@pytest.mark.timeout(900)  # thousands of examples: minutes, not the suite's 120 s
@SOAK
@given(*QUERY_PLANS)
def test_fordconnect_query_survives_any_answer_soak(
    state_dir: Path, garage_plan: list[Answer], telemetry_plan: list[Answer]
) -> None:
    """FordConnect Query, 2000 examples: data or a bridge error, never a crash."""
    _query(state_dir, garage_plan, telemetry_plan)
