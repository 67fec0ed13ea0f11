"""Turn a command topic and payload into a typed command, or a refusal saying exactly what is wrong.

Pure: no clock, no I/O. Accepted payloads are a plain action word (`LOCK`) or a JSON object
`{"action": ..., "code": ..., "id": ..., "issued_at": ...}`. Actions are matched case-insensitively
and surrounding whitespace is ignored: `lock`, `LOCK` and `LOCK\\n` (what `echo` sends) all mean the
same thing and nothing else could be meant, so strictness there would only break clients.
Everything else is strict: unknown keys, wrong types, duplicate keys and non-UTF-8 bytes are
refused rather than guessed at, because a command that opens a car must mean one thing only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.commands.reasons import Reason
from bridge.model import OPERATIONS, Command, Operation, Scope, actions_for
from bridge.mqtt.topics import CommandTopic

ALLOWED_KEYS = frozenset({"action", "code", "id", "issued_at"})
# Ids are echoed into results, logs and the audit file: a tight alphabet keeps them inert there.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
WORD_PATTERN = re.compile(r"[A-Za-z_]{1,16}")
MAX_CODE_CHARS = 16
CLEARED_RETAINED = "an empty retained message only clears the broker's copy; nothing was run"
# Epoch seconds beyond this are almost certainly JavaScript's Date.now() milliseconds (year 5138+).
MAX_EPOCH_SECONDS = 1e11


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """A well-formed command for a known command word and action. Says nothing about permission."""

    app: str
    vehicle: str
    command: Command
    action: str
    operation: Operation
    scope: Scope
    code: str | None = None
    id: str | None = None
    issued_at: datetime | None = None

    def __repr__(self) -> str:
        # The step-up code must never reach a log line, even through a debugging repr.
        code = "***" if self.code else None
        return (
            f"ParsedCommand(app={self.app!r}, vehicle={self.vehicle!r}, command={self.command}, "
            f"action={self.action!r}, id={self.id!r}, issued_at={self.issued_at}, code={code})"
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not a command, with what could be salvaged for the result (action, id)."""

    reason: Reason
    detail: str
    action: str | None = None
    id: str | None = None
    alert: bool = True  # False for housekeeping (clearing a retained command): recorded, no alarm


class _Malformed(Exception):
    """Internal: a payload field is wrong; carries the human detail for the refusal."""


def parse_command(
    topic: CommandTopic, payload: bytes, *, retain: bool, max_bytes: int
) -> ParsedCommand | Refusal:
    """Parse one MQTT command message. Checks run cheapest first; the first failure wins."""
    if retain:
        if not payload:
            # `mosquitto_pub -r -n`: someone clearing a retained command, as the docs advise.
            return Refusal(Reason.RETAINED, CLEARED_RETAINED, alert=False)
        # A retained command would be replayed to us on every reconnect: never act on one.
        action, cid = _salvage(payload, max_bytes)
        return Refusal(Reason.RETAINED, "retained messages are never executed", action, cid)
    if len(payload) > max_bytes:
        return Refusal(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes; the limit is {max_bytes}")
    command = _command_word(topic.command)
    if command is None:
        return Refusal(Reason.UNKNOWN_COMMAND, f"no command {_shown(topic.command)}")
    try:
        fields = _decode(payload)
    except _Malformed as exc:
        return Refusal(Reason.MALFORMED, str(exc), id=_id_of_refused(payload))
    return build_command(topic.app, topic.vehicle, command, **fields)


def build_command(
    app: str,
    vehicle: str,
    command: Command | str,
    *,
    action: Any,
    code: Any = None,
    id: Any = None,  # noqa: A002 - the payload's own key name
    issued_at: Any = None,
) -> ParsedCommand | Refusal:
    """Validate command fields from any surface (MQTT JSON, REST, the owner's CLI) the same way."""
    word = command if isinstance(command, Command) else _command_word(command)
    if word is None:
        return Refusal(Reason.UNKNOWN_COMMAND, f"no command {_shown(str(command))}")
    try:
        checked_id = _check_id(id)
        checked_action = _check_action(action)
        checked_code = _check_code(code)
        when = _check_issued_at(issued_at)
    except _Malformed as exc:
        return Refusal(Reason.MALFORMED, str(exc), id=_salvage_id(id))
    entry = OPERATIONS.get((word, checked_action))
    if entry is None:
        allowed = "/".join(sorted(actions_for(word)))
        detail = f"{word} accepts {allowed}, not {_shown(checked_action)}"
        return Refusal(Reason.UNKNOWN_ACTION, detail, action=checked_action, id=checked_id)
    operation, scope = entry
    return ParsedCommand(
        app,
        vehicle,
        word,
        checked_action,
        operation,
        scope,
        code=checked_code,
        id=checked_id,
        issued_at=when,
    )


def _command_word(text: str) -> Command | None:
    try:
        return Command(text)
    except ValueError:
        return None


def _decode(payload: bytes) -> dict[str, Any]:
    """Bytes → the fields of a command: a plain word becomes {"action": word}."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise _Malformed("payload is not UTF-8") from exc
    if not text:
        raise _Malformed("empty payload")
    if text.startswith("{"):
        return _decode_object(text)
    if WORD_PATTERN.fullmatch(text) is None:
        raise _Malformed("payload is neither an action word nor a JSON object")
    return {"action": text}


def _decode_object(text: str) -> dict[str, Any]:
    try:
        value = strict_json(text)
    except ValueError as exc:
        raise _Malformed(f"bad JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _Malformed("JSON payload must be an object")
    unknown = sorted(set(value) - ALLOWED_KEYS)
    if unknown:
        raise _Malformed(
            f"unknown key {_shown(unknown[0])}; allowed: {', '.join(sorted(ALLOWED_KEYS))}"
        )
    if "action" not in value:
        raise _Malformed('JSON payload has no "action"')
    return value


def strict_json(text: str | bytes) -> Any:
    """JSON as every command surface reads it: a key given twice, NaN and Infinity are errors
    (ValueError saying where), not whatever one parser or another would keep."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ValueError(_json_problem(exc)) from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"action":"LOCK","action":"UNLOCK"} must not mean whichever one a parser keeps.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at character {exc.pos}"
    return str(exc)


def action_word(value: str) -> str | None:
    """The action as every surface matches it (`" lock"` → `LOCK`), or None when it is not one
    word. Anything that checks an action against a scope must look it up in this form."""
    word = value.strip()
    return word.upper() if WORD_PATTERN.fullmatch(word) is not None else None


def _check_action(value: Any) -> str:
    if not isinstance(value, str):
        raise _Malformed('"action" must be a string')
    word = action_word(value)
    if word is None:
        raise _Malformed('"action" must be a single word such as LOCK')
    return word


def _check_code(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        # A number would lose leading zeros (012345 → 12345): insist on the string the user typed.
        raise _Malformed('"code" must be a string')
    if len(value) > MAX_CODE_CHARS:
        raise _Malformed('"code" is too long')
    return value.strip() or None  # our Home Assistant lock sends "" when no code was typed


def _check_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise _Malformed(
            '"id" must be 1-64 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit'
        )
    return value


def _salvage(payload: bytes, max_bytes: int) -> tuple[str | None, str | None]:
    """The action and id of a message refused before it was parsed, so its result carries the
    id the client is waiting for. Only echoed, never acted on."""
    if len(payload) > max_bytes:
        return None, None
    try:
        fields = _decode(payload)
    except _Malformed:
        return None, None
    action = fields.get("action")
    word = action_word(action) if isinstance(action, str) else None
    return word, _salvage_id(fields.get("id"))


def _id_of_refused(payload: bytes) -> str | None:
    """The id of a JSON object refused as a whole (an unknown or repeated key, NaN, no action),
    read leniently, so the client waiting on its own id hears why. None when the object itself
    is unreadable, or names two ids: which one it meant is not ours to pick."""
    ids: list[list[Any]] = []  # per object, innermost first: the payload's own comes last

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        ids.append([value for key, value in items if key == "id"])
        return dict(items)

    try:
        value = json.loads(payload, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or len(ids[-1]) != 1:
        return None
    return _salvage_id(ids[-1][0])


def _salvage_id(value: Any) -> str | None:
    """The id to echo in a refusal, if it is itself well-formed."""
    return value if isinstance(value, str) and ID_PATTERN.fullmatch(value) else None


def _check_issued_at(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Malformed('"issued_at" must be ISO 8601 text or epoch seconds')
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # JSON integers have no size limit; floats do
            raise _Malformed('"issued_at" is not a valid time') from None
        return _from_epoch(seconds)
    if isinstance(value, str):
        return _from_iso(value)
    raise _Malformed('"issued_at" must be ISO 8601 text or epoch seconds')


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds) or seconds < 0:
        raise _Malformed('"issued_at" is not a valid time')
    if seconds > MAX_EPOCH_SECONDS:
        raise _Malformed('"issued_at" looks like milliseconds; send epoch seconds')
    return datetime.fromtimestamp(seconds, tz=UTC)


def _from_iso(text: str) -> datetime:
    # RFC 3339 (§5.6) allows a lower-case "z" for UTC; Python's reader takes only "Z".
    if text.endswith("z"):
        text = text[:-1] + "Z"
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _Malformed('"issued_at" is not ISO 8601') from exc
    if when.tzinfo is None:
        # A zone-less time could be anyone's local time: hours of error either way.
        raise _Malformed('"issued_at" needs a time zone (e.g. Z or +01:00)')
    return when


def _shown(text: str) -> str:
    """Quote untrusted text for a detail message, cut short and stripped of control characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[:40])
    return repr(clean)
