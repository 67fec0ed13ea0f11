"""Generate docs/configuration.md from the config models and config.example.yaml's comments.

Run `python -m bridge.configdoc > docs/configuration.md`; a test fails when the file is stale,
so the reference cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bridge.config import ORDER_RULES, AccountConfig, AppConfig, Settings, VehicleConfig, field_docs

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):")
# The example names entries of dict sections; the reference shows them generically.
_DICT_SECTIONS = {
    "accounts": ("ford", "<name>"),
    "vehicles": ("mache", "<alias>"),
    "apps": ("homeassistant", "<app-id>"),
}


def example_comments(text: str) -> dict[str, str]:
    """Map each dotted key of the example to the comment lines just above it."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        comments[".".join(key for _, key in stack)] = " ".join(pending)
        pending = []
    return comments


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value: Any = info.get_default(call_default_factory=True)
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, frozenset | set):
        value = sorted(str(v) for v in value)
    return f"`{value}`" if value not in (None, "") else "`null`"


def _type(info: FieldInfo) -> str:
    text = str(info.annotation).replace("typing.", "")
    text = re.sub(r"\bpathlib\.(_local\.)?", "", text)  # Python 3.13 moved Path to pathlib._local
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    text = re.sub(r"Annotated\[(\w+), [^\]]*\]", r"\1", text)  # validators are not types
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 | None", text)  # `X | None` with X Annotated
    return text.replace("pydantic.types.", "").replace("bridge.model.", "").replace("|", "\\|")


# annotated_types' constraint attributes, as the reference writes them.
_BOUNDS = (
    ("gt", "> {}"),
    ("ge", "≥ {}"),
    ("lt", "< {}"),
    ("le", "≤ {}"),
    ("min_length", "length ≥ {}"),
    ("max_length", "length ≤ {}"),
)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _limits(key: str, info: FieldInfo) -> str:
    """The bounds the config check enforces on one key, so the reference states them too."""
    parts = [
        template.format(_number(getattr(item, name)))
        for item in info.metadata
        for name, template in _BOUNDS
        if getattr(item, name, None) is not None
    ]
    parts += [f"{relation} `{other}`" for mine, relation, other in ORDER_RULES if mine == key]
    return ", ".join(parts)


def _row(key: str, info: FieldInfo, note: str) -> str:
    return f"| `{key}` | {_type(info)} | {_default(info)} | {_limits(key, info)} | {note} |"


def _rows(prefix: str, model: Any, comments: dict[str, str], example_prefix: str) -> list[str]:
    return [
        _row(f"{prefix}{key}", info, comments.get(f"{example_prefix}{key}", ""))
        for key, info in field_docs(model)
    ]


_HEADER = "| Key | Type | Default | Limits | Meaning |"
_RULE = "|---|---|---|---|---|"


def render() -> str:
    comments = example_comments(EXAMPLE.read_text())
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config models by `python -m bridge.configdoc`; do not edit by hand.",
        "Every key can also be set in the environment: `OWNERLINK_` + the path in capitals with",
        "`__` between levels, e.g. `OWNERLINK_MQTT__HOST`. See `config.example.yaml` for a file.",
        "`ownerlink config check` warns about `OWNERLINK_*` variables that name no setting at",
        "all; one that names an unknown key inside a section (`OWNERLINK_MQTT__PROT`) is an",
        "error, as that key in the file would be (exit status 2). An error in a value the",
        "environment set names its variable (`mqtt.port: … (set by OWNERLINK_MQTT__PORT)`).",
        "It also warns when no config file is found (`--config`, else `$OWNERLINK_CONFIG`,",
        "else `/etc/ownerlink/config.yaml`, else `./config.yaml`) and when no account is",
        "configured. A section left empty (every key under it commented out) means its defaults.",
        "",
        "Limits are checked at start and by `ownerlink config check` (exit status 2).",
        "",
        _HEADER,
        _RULE,
    ]
    skip = tuple(f"{name}." for name in _DICT_SECTIONS)
    for key, info in field_docs(Settings):
        if key in _DICT_SECTIONS or key.startswith(skip):
            continue
        lines.append(_row(key, info, comments.get(key, "")))
    for section, model in (
        ("accounts", AccountConfig),
        ("vehicles", VehicleConfig),
        ("apps", AppConfig),
    ):
        example, placeholder = _DICT_SECTIONS[section]
        lines += [
            "",
            f"## `{section}.{placeholder}`",
            "",
            comments.get(section, ""),
            "",
            _HEADER,
            _RULE,
        ]
        lines += _rows(f"{section}.{placeholder}.", model, comments, f"{section}.{example}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
