"""Fuzzed configuration files: a bad file is a ConfigError naming the key, never a traceback.

Hypothesis writes YAML documents shaped like the real configuration (the real section and key
names, mixed with unknown ones) holding random values of every YAML type, plus free text. Each
goes through `load_config` (Settings or ConfigError, nothing else) and through the command line's
`config check` in-process (exit 0 or 2, nothing raised). A few files also go through the real
`ownerlink config check` subprocess. Inputs that once crashed are kept as regression tests at
the end, each naming what went wrong.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.cli import main
from bridge.config import AccountConfig, AppConfig, Settings, VehicleConfig, load_config
from bridge.errors import ConfigError
from tests.support.daemon import cli

# Text a file can hold (UTF-8: no lone surrogates; one written as a YAML escape is a regression
# case below).
TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | TEXT
    | st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1.5",
            "true",
            "no",
            "127.0.0.1",
            "::1",
            "10.0.0.0/8",
            "read:status",
            "command:unlock",
            "fordconnect",
            "5",
            "3.1.1",
            "/tmp/ownerlink-fuzz",
            "http://x",
            "json",
        ]
    )
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(TEXT | st.integers(0, 9), inner, max_size=3)
    ),
    max_leaves=8,
)


def fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def section(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(fields(model)) | TEXT
    return st.dictionaries(keys, VALUE, max_size=5)


def _model(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


SECTIONS = {name: _model(info.annotation) for name, info in Settings.model_fields.items()}


NAMED_MODELS: dict[str, type[BaseModel]] = {
    "accounts": AccountConfig,
    "vehicles": VehicleConfig,
    "apps": AppConfig,
}


def top_value(name: str | int | None) -> st.SearchStrategy[Any]:
    model = SECTIONS.get(name) if isinstance(name, str) else None
    if model is not None:
        return section(model) | VALUE
    if isinstance(name, str) and name in NAMED_MODELS:
        inner = section(NAMED_MODELS[name])
        return (
            st.dictionaries(TEXT | st.sampled_from(["sim", "car", "ha", "a b"]), inner, max_size=2)
            | VALUE
        )
    return VALUE


DOCUMENT = st.dictionaries(
    st.sampled_from(list(Settings.model_fields)) | TEXT | st.integers(0, 9) | st.none(),
    st.just(None),
    max_size=6,
).flatmap(lambda keys: st.fixed_dictionaries({k: top_value(k) for k in keys}))
RAW_TEXT = st.text(st.characters(codec="utf-8"), max_size=120)


def write(text: str) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as f:
        f.write(text)
    return Path(f.name)


def load_is_clean(path: Path) -> None:
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


def check_is_clean(path: Path) -> None:
    """`ownerlink config check` in-process: exit 0 or 2, nothing escapes, no traceback."""
    # Strict UTF-8 streams, like a real terminal's: a StringIO would accept what stdout cannot.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["config", "check", "--config", str(path)])
        out.flush()
        err.flush()
    text = err.buffer.getvalue().decode()
    assert status in (0, 2), (status, text)
    assert "Traceback" not in text
    if status == 2:
        assert text.startswith("config error: ")


def document_text(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _structured(document: dict[str, Any]) -> None:
    path = write(document_text(document))
    try:
        load_is_clean(path)
        check_is_clean(path)
    finally:
        path.unlink()


def _raw(text: str) -> None:
    path = write(text)
    try:
        load_is_clean(path)
        check_is_clean(path)
    finally:
        path.unlink()


@FUZZ
@given(DOCUMENT)
def test_config_shaped_documents_load_or_name_the_bad_key(document: dict[str, Any]) -> None:
    """Config-shaped YAML with random values: Settings or ConfigError, `config check` 0 or 2."""
    _structured(document)


@FUZZ
@given(RAW_TEXT)
def test_any_text_loads_or_names_the_problem(text: str) -> None:
    """Any text as a config file: Settings or ConfigError, `config check` 0 or 2."""
    _raw(text)


@pytest.mark.soak
@pytest.mark.timeout(900)  # thousands of examples: minutes, not the suite's 120 s
@SOAK
@given(DOCUMENT)
def test_config_shaped_documents_load_or_name_the_bad_key_soak(document: dict[str, Any]) -> None:
    """5000 config-shaped documents: Settings or ConfigError, `config check` 0 or 2."""
    _structured(document)


@pytest.mark.soak
@pytest.mark.timeout(900)  # thousands of examples: minutes, not the suite's 120 s
@SOAK
@given(RAW_TEXT)
def test_any_text_loads_or_names_the_problem_soak(text: str) -> None:
    """5000 texts: Settings or ConfigError, `config check` 0 or 2."""
    _raw(text)


def test_config_check_command_reports_bad_files_without_traceback(tmp_path: Path) -> None:
    """The real `ownerlink config check`: exit 2, `config error: <key>: …`, no traceback."""
    files = {
        "unknown.yaml": ("mqtt:\n  hots: x\n", "mqtt.hots"),
        "type.yaml": ("budget:\n  calls_per_day: many\n", "budget.calls_per_day"),
        "syntax.yaml": ("mqtt: [\n", "line"),
        "reference.yaml": ("vehicles:\n  car: {account: nobody}\n", "vehicles.car.account"),
    }
    for name, (text, _key) in files.items():
        (tmp_path / name).write_text(text)
    # Run side by side: each costs a Python start-up, not worth paying four times in a row.
    with ThreadPoolExecutor(len(files)) as pool:
        done_list = pool.map(lambda n: cli("config", "check", "--config", str(tmp_path / n)), files)
        runs = dict(zip(files, done_list, strict=True))
    for name, done in runs.items():
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("config error: ") and files[name][1] in done.stderr, (
            done.stderr
        )


# -- crashes this fuzz found (bridge/config.py, bridge/cli/config_cmd.py), kept as regressions --

ONCE_CRASHING = {
    # yaml.safe_load gave {1: 2}; pydantic-settings then called Settings(**{1: 2}): TypeError.
    "non-text top-level key": b"1: 2\n",
    "null top-level key": b"~: 2\n",
    # read_yaml caught OSError only; undecodable bytes raised UnicodeDecodeError.
    "bytes that are not UTF-8": b"mqtt:\n  host: \xff\xfe\n",
    # PyYAML recurses once per nesting level: RecursionError.
    "deep nesting": b"[" * 5000,
    # PyYAML's int() hit Python's 4300-digit limit: ValueError, not a YAMLError.
    "a 5000-digit number": b"mqtt:\n  port: 1" + b"0" * 5000 + b"\n",
    # Loaded fine, then `config check` printed the host: UnicodeEncodeError on a UTF-8 stdout.
    "a lone surrogate": b'mqtt:\n  host: "\\ud800"\n',
}


@pytest.mark.parametrize("name", sorted(ONCE_CRASHING))
def test_once_crashing_config_gets_a_clear_message(name: str, tmp_path: Path) -> None:
    """Each input that once crashed: `config check` exits 0 or 2 with a message, no traceback."""
    path = tmp_path / "config.yaml"
    path.write_bytes(ONCE_CRASHING[name])
    load_is_clean(path)
    check_is_clean(path)


def test_state_dir_with_a_nul_byte_is_a_config_error(tmp_path: Path) -> None:
    """`state_dir` with a NUL byte: a config error (exit 2), not a traceback from `run`."""
    path = tmp_path / "config.yaml"
    path.write_text(f'state_dir: "{tmp_path}/a\\0b"\nweb: {{enabled: false}}\nmqtt: {{port: 1}}\n')
    done = cli("run", "--config", str(path), timeout=15)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-500:]
