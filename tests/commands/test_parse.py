"""parse_command: what a command message may look like, and the exact reason when it may not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.commands.parse import ParsedCommand, Refusal, build_command, parse_command
from bridge.commands.reasons import Reason
from bridge.model import Command, Operation, Scope
from bridge.mqtt.topics import CommandTopic

LOCK_TOPIC = CommandTopic("ha", "car", "lock")


def parse(
    payload: bytes | str,
    *,
    topic: CommandTopic = LOCK_TOPIC,
    retain: bool = False,
    max_bytes: int = 1024,
) -> ParsedCommand | Refusal:
    data = payload.encode() if isinstance(payload, str) else payload
    return parse_command(topic, data, retain=retain, max_bytes=max_bytes)


def refused(payload: bytes | str, **kw: object) -> Refusal:
    result = parse(payload, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Refusal), result
    return result


@pytest.mark.parametrize("payload", ["LOCK", "lock", "Lock", " LOCK\n", '{"action":"lock"}'])
def test_plain_word_and_json_action_are_case_insensitive(payload: str) -> None:
    """LOCK, lock and JSON {"action":"lock"} all parse to the LOCK operation."""
    result = parse(payload)
    assert isinstance(result, ParsedCommand)
    assert (result.command, result.action, result.operation, result.scope) == (
        Command.LOCK,
        "LOCK",
        Operation.LOCK,
        Scope.COMMAND_LOCK,
    )


def test_json_fields_are_carried() -> None:
    """code, id and ISO issued_at from a JSON payload reach the parsed command."""
    result = parse(
        '{"action":"UNLOCK","code":"123456","id":"abc-1","issued_at":"2025-03-01T12:00:00Z"}'
    )
    assert isinstance(result, ParsedCommand)
    assert result.code == "123456"
    assert result.id == "abc-1"
    assert result.issued_at == datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_issued_at_in_utc_with_a_lower_case_z_is_accepted() -> None:
    """RFC 3339 allows "z" for "Z" (and "t" for "T"): such a time was refused as malformed."""
    result = parse('{"action":"LOCK","issued_at":"2025-03-01t12:00:00.5z"}')
    assert isinstance(result, ParsedCommand)
    assert result.issued_at == datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)


def test_epoch_seconds_issued_at_is_accepted() -> None:
    """issued_at may be epoch seconds."""
    result = parse('{"action":"LOCK","issued_at":1740830400.5}')
    assert isinstance(result, ParsedCommand)
    assert result.issued_at == datetime.fromtimestamp(1740830400.5, tz=UTC)


def test_retained_is_refused_before_anything_else() -> None:
    """A retained message is refused as `retained` even when its payload is also junk."""
    assert refused(b"\xff\xfe", retain=True).reason is Reason.RETAINED


def test_a_retained_refusal_echoes_the_id_the_client_waits_for() -> None:
    """The result of a refused retained command carries its id and action, as any refusal."""
    refusal = refused('{"action":"unlock","id":"ret-1"}', retain=True)
    assert (refusal.reason, refusal.action, refusal.id) == (Reason.RETAINED, "UNLOCK", "ret-1")
    assert (refused("LOCK", retain=True).action, refused("LOCK", retain=True).id) == ("LOCK", None)
    bad_id = refused('{"action":"LOCK","id":"a b"}', retain=True)
    assert (bad_id.reason, bad_id.id) == (Reason.RETAINED, None)


def test_payload_over_the_limit_is_too_large() -> None:
    """A payload longer than max_bytes is refused unread as `payload_too_large`."""
    assert refused("LOCK" + " " * 100, max_bytes=50).reason is Reason.PAYLOAD_TOO_LARGE


def test_unknown_command_word() -> None:
    """A command segment that is not a known command is `unknown_command`."""
    assert refused("LOCK", topic=CommandTopic("ha", "car", "selfdestruct")).reason is (
        Reason.UNKNOWN_COMMAND
    )


@pytest.mark.parametrize(
    ("payload", "action"),
    [("UNLOCKX", "UNLOCKX"), ("START", "START"), ('{"action":"press"}', "PRESS")],
)
def test_action_not_valid_for_the_command_is_unknown_action(payload: str, action: str) -> None:
    """An action the command does not take (START on lock) is `unknown_action`, echoed back."""
    result = refused(payload)
    assert result.reason is Reason.UNKNOWN_ACTION
    assert result.action == action


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\xc3\x28", "not UTF-8"),
        (b"", "empty"),
        (b"   ", "empty"),
        ("{not json", "bad JSON"),
        ('["LOCK"]', "neither"),
        ('{"action":"LOCK","extra":1}', "unknown key 'extra'"),
        ('{"code":"123456"}', 'no "action"'),
        ('{"action":5}', '"action" must be a string'),
        ('{"action":"LOCK","code":123456}', '"code" must be a string'),
        ('{"action":"LOCK","id":7}', '"id" must be'),
        ('{"action":"LOCK","id":"has space"}', '"id" must be'),
        ('{"action":"LOCK","issued_at":true}', "issued_at"),
        ('{"action":"LOCK","issued_at":1' + "0" * 400 + "}", "not a valid time"),
        ('{"action":"LOCK","issued_at":"yesterday"}', "not ISO 8601"),
        ('{"action":"LOCK","issued_at":"2025-03-01T12:00:00"}', "time zone"),
        ('{"action":"LOCK","issued_at":1740830400000}', "milliseconds"),
        ('{"action":"LOCK","issued_at":NaN}', "bad JSON"),
        ('{"action":"LOCK","action":"UNLOCK"}', "duplicate key"),
        ("[" * 5000 + "]" * 5000, "neither"),
        ("{" + '"a":' * 3000 + "1" + "}" * 3000, "bad JSON"),
        ("LOCK UNLOCK", "neither"),
    ],
)
def test_malformed_payloads_say_what_is_wrong(payload: bytes | str, fragment: str) -> None:
    """Each kind of bad payload is `malformed` with a detail naming the problem."""
    result = refused(payload, max_bytes=65536)
    assert result.reason is Reason.MALFORMED
    assert fragment in result.detail


def test_well_formed_id_is_salvaged_from_a_malformed_payload() -> None:
    """A refusal still echoes the sender's id when the id itself was fine."""
    assert refused('{"action":"LOCK","id":"x1","code":5}').id == "x1"


@pytest.mark.parametrize(
    ("payload", "echoed"),
    [
        ('{"action":"LOCK","extra":1,"id":"ext1"}', "ext1"),
        ('{"action":"LOCK","action":"UNLOCK","id":"dup1"}', "dup1"),
        ('{"action":"LOCK","issued_at":NaN,"id":"nan1"}', "nan1"),
        ('{"id":"noaction1"}', "noaction1"),
        ('{"action":"LOCK","id":"a","id":"b"}', None),  # which one? not ours to pick
        ('{"action":"LOCK","extra":{"id":"inner"}}', None),
        ('{"action":"LOCK","extra":1,"id":"has space"}', None),
        ('{"action":"LOCK","id":"x2"', None),
    ],
)
def test_the_id_of_an_object_refused_as_a_whole_is_echoed(payload: str, echoed: str | None) -> None:
    """An unknown or repeated key, NaN or no action refuses the whole object, but the client
    waiting on its own id still hears why: the id is read leniently, only to be echoed."""
    result = refused(payload)
    assert result.reason is Reason.MALFORMED
    assert result.id == echoed


def test_empty_code_counts_as_no_code() -> None:
    """An empty code (Home Assistant with nothing typed) is treated as absent."""
    result = parse('{"action":"UNLOCK","code":""}')
    assert isinstance(result, ParsedCommand)
    assert result.code is None


def test_repr_never_shows_the_code() -> None:
    """The parsed command's repr masks the step-up code."""
    result = parse('{"action":"UNLOCK","code":"654321"}')
    assert "654321" not in repr(result)


def test_build_command_validates_like_the_json_path() -> None:
    """The REST/owner entry point refuses the same bad values the MQTT JSON path does."""
    assert isinstance(build_command("a", "car", "lock", action="LOCK"), ParsedCommand)
    bad = build_command("a", "car", "lock", action="LOCK", code=42)
    assert isinstance(bad, Refusal) and bad.reason is Reason.MALFORMED
    unknown = build_command("a", "car", "teleport", action="GO")
    assert isinstance(unknown, Refusal) and unknown.reason is Reason.UNKNOWN_COMMAND
