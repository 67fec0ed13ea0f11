"""docs/mqtt.md and docs/node-red.md stay true to the code: topics, entities, an importable flow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.commands.parse import ParsedCommand, parse_command
from bridge.events import AlertKind
from bridge.model import Operation, Scope
from bridge.mqtt.catalog import BRIDGE, all_vehicle_keys
from bridge.mqtt.client import FLUSH_BATCH, MAX_HELD_ORDERED, MAX_QUEUED_MESSAGES
from bridge.mqtt.discovery import build_vehicle_discovery
from bridge.mqtt.topics import Topics
from tests.mqtt.helpers import ev

DOCS = Path(__file__).resolve().parents[2] / "docs"
TOPICS = Topics()


def flow() -> list[dict[str, Any]]:
    text = (DOCS / "node-red.md").read_text()
    [block] = re.findall(r"```json\n(.*?)\n```", text, flags=re.DOTALL)
    nodes = json.loads(block)
    assert isinstance(nodes, list)
    return nodes


def node(name: str) -> dict[str, Any]:
    return next(n for n in flow() if n.get("name") == name)


def test_node_red_flow_is_importable() -> None:
    """Unique ids, wires to existing nodes, every MQTT node on the one broker config node."""
    nodes = flow()
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids))
    tab = next(n["id"] for n in nodes if n["type"] == "tab")
    broker = next(n["id"] for n in nodes if n["type"] == "mqtt-broker")
    for n in nodes:
        for output in n.get("wires", []):
            assert set(output) <= set(ids), n["id"]
        if n["type"] in {"mqtt in", "mqtt out"}:
            assert n["broker"] == broker
        if n["type"] not in {"tab", "mqtt-broker"}:
            assert n["z"] == tab


def test_node_red_flow_uses_the_topic_contract() -> None:
    """The flow reads the status and availability topics and its own result topic."""
    subscribed = {n["topic"] for n in flow() if n["type"] == "mqtt in"}
    assert subscribed == {
        TOPICS.state("car", "status"),
        TOPICS.availability("car"),
        TOPICS.result("nodered", "car"),
    }
    sender = node("Send command")
    assert sender["retain"] == "false" and sender["qos"] == "1"


def run_function(name: str, msg: dict[str, Any]) -> dict[str, Any]:
    """Run a function node's body with node.js, as Node-RED would with `msg`."""
    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    script = (
        f"const msg = {json.dumps(msg)};\n"
        f"const out = (function (msg) {{\n{node(name)['func']}\n}})(msg);\n"
        "process.stdout.write(JSON.stringify(out));\n"
    )
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    ("msg", "command", "action"),
    [
        ({"payload": "LOCK", "command": "lock"}, "lock", "LOCK"),
        ({"payload": "unlock", "code": "123456"}, "lock", "UNLOCK"),
        ({"payload": "STOP", "command": "charge"}, "charge", "STOP"),
    ],
)
def test_node_red_commands_are_accepted_by_the_parser(
    msg: dict[str, Any], command: str, action: str
) -> None:
    """What `Build command` sends parses as a valid command for the app `nodered`."""
    out = run_function("Build command", msg)
    topic = TOPICS.parse_command(out["topic"])
    assert topic is not None and (topic.app, topic.vehicle) == ("nodered", "car")
    assert out["retain"] is False
    parsed = parse_command(topic, json.dumps(out["payload"]).encode(), retain=False, max_bytes=1024)
    assert isinstance(parsed, ParsedCommand), parsed
    assert (parsed.command.value, parsed.action) == (command, action)
    assert parsed.id and parsed.issued_at is not None
    assert parsed.code == msg.get("code")


def test_home_assistant_lock_command_template_is_accepted_by_the_parser() -> None:
    """The lock's command_template renders a JSON command with the code that the parser accepts."""
    jinja2 = pytest.importorskip("jinja2")
    [message] = build_vehicle_discovery(
        vehicle=ev(operations=frozenset(Operation)),
        scopes=frozenset(Scope),
        ha_app="ha",
        topics=TOPICS,
        mode="device",
        stepup_scopes=frozenset({Scope.COMMAND_UNLOCK}),
    )
    lock = json.loads(message.payload)["cmps"]["lock"]
    payload = (
        jinja2.Environment(autoescape=False)
        .from_string(lock["command_template"])
        .render(value="UNLOCK", code="654321")
    )
    topic = TOPICS.parse_command(lock["command_topic"])
    assert topic is not None
    parsed = parse_command(topic, payload.encode(), retain=False, max_bytes=1024)
    assert isinstance(parsed, ParsedCommand), parsed
    assert (parsed.action, parsed.code) == ("UNLOCK", "654321")


def test_mqtt_doc_names_every_entity_alert_and_topic() -> None:
    """Every entity key, alert kind and topic pattern appears in docs/mqtt.md."""
    text = (DOCS / "mqtt.md").read_text()
    positional = re.compile(r"^(door|window|tyre)_")
    for key in all_vehicle_keys():
        if not positional.match(key):
            assert f"`{key}`" in text, key
    for spec in BRIDGE:
        assert f"`{spec.key}`" in text
    for kind in AlertKind:
        assert f"`{kind.value}`" in text
    for pattern in (
        "<base>/bridge/state",
        "<base>/bridge/event",
        "<base>/bridge/audit_head",
        "<base>/<vehicle>/availability",
        "<base>/<vehicle>/budget",
        "<base>/app/<app>/<vehicle>/cmd/<command>",
        "<base>/app/<app>/<vehicle>/result",
        "<base>/app/<app>/event",
        "<prefix>/status",
        "<prefix>/device/ownerlink_<vehicle>/config",
    ):
        assert f"`{pattern}`" in text, pattern


def test_the_outage_policy_in_the_docs_matches_the_client() -> None:
    """docs/mqtt.md states the outbox's bound and batch size as the client has them."""
    text = " ".join((DOCS / "mqtt.md").read_text().split())
    assert f"up to {MAX_HELD_ORDERED:,} (`MAX_HELD_ORDERED`)" in text
    assert f"{FLUSH_BATCH} messages per pass" in text
    assert f"capped at {MAX_QUEUED_MESSAGES:,} messages" in text
