"""Fuzzed topics and payloads through the pipeline: nothing escapes, one final result for each."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.audit.verify import verify
from bridge.commands.pipeline import InboundCommand
from bridge.commands.results import FINAL_STATUSES
from bridge.model import OPERATIONS, CommandStatus
from tests.commands.fakes import Rig, make_rig

APP = st.sampled_from(["ha", "reader", "locker", "owner", "stranger"])
VEHICLE = st.sampled_from(["car", "boat"])
COMMAND = st.sampled_from(["lock", "engine", "charge", "horn_lights", "refresh", "sunroof"])
JUNK = st.text(max_size=12)
TOPIC = st.one_of(
    # Mostly well-formed topics, so payloads get past the first checks and reach the car.
    st.builds(lambda a, v, c: f"ol/app/{a}/{v}/cmd/{c}", APP, VEHICLE, COMMAND),
    st.builds(
        lambda a, v, c: f"ol/app/{a}/{v}/cmd/{c}", APP | JUNK, VEHICLE | JUNK, COMMAND | JUNK
    ),
    st.text(max_size=60),
)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(
            st.sampled_from(["LOCK", "unlock", "START", "STOP", "PRESS"]), JSON_VALUE
        ),
        "code": st.one_of(st.text(alphabet="0123456789 ", max_size=8), JSON_VALUE),
        "id": st.one_of(st.text(max_size=70), JSON_VALUE),
        "issued_at": st.one_of(st.floats(), st.integers(), st.datetimes().map(str), JSON_VALUE),
        "extra": JSON_VALUE,
    },
)
PAYLOAD = st.one_of(
    st.sampled_from([b"LOCK", b"UNLOCK", b"START", b"STOP", b"PRESS", b"lock\n"]),
    FIELDS.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    st.binary(max_size=1500),
)
RETAIN = st.sampled_from([False, False, False, True])


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real command and action, as a word or JSON with fuzzed extra fields."""
    command, action = draw(st.sampled_from(sorted(OPERATIONS)))
    topic = f"ol/app/{draw(APP)}/{draw(VEHICLE)}/cmd/{command.value}"
    fields = draw(FIELDS)
    fields["action"] = draw(st.sampled_from([action, action.lower()]))
    if draw(st.booleans()):
        return topic, action.encode()
    return topic, json.dumps(fields, allow_nan=True).encode()


MESSAGE = st.one_of(near_valid(), st.tuples(TOPIC, PAYLOAD))


@pytest.fixture(scope="module")
def fuzz_rig() -> Iterator[tuple[asyncio.AbstractEventLoop, Rig]]:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        rig = loop.run_until_complete(make_rig(Path(tmp) / "state"))
        yield loop, rig
        loop.run_until_complete(rig.pipeline.stop())
        rig.audit.close()
        assert verify(Path(tmp) / "state" / "audit").ok
    loop.close()


async def one(rig: Rig, topic: str, payload: bytes, retain: bool) -> None:
    rig.sink.messages.clear()
    future = rig.pipeline.submit(InboundCommand(topic, payload, retain, rig.clock()))
    result = await asyncio.wait_for(future, timeout=5)
    assert result.status in FINAL_STATUSES
    finals = [r for r in rig.sink.results() if CommandStatus(r["status"]) in FINAL_STATUSES]
    parsed = rig.topics.parse_command(topic)
    assert len(finals) == (1 if parsed is not None else 0)
    if finals:
        assert finals[0]["id"] == result.id and finals[0]["status"] == result.status.value
    if retain:
        assert result.status is CommandStatus.REJECTED


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=MESSAGE, retain=RETAIN)
def test_any_message_yields_exactly_one_final_result(
    fuzz_rig: tuple[asyncio.AbstractEventLoop, Rig], message: tuple[str, bytes], retain: bool
) -> None:
    """Random topics, payloads and retain flags: no exception, one final result per message."""
    loop, rig = fuzz_rig
    topic, payload = message
    rig.clock.advance(1)  # keep within rate limits over hundreds of examples
    loop.run_until_complete(one(rig, topic, payload, retain))
