"""The configuration: the example validates, every bad input names its key, precedence holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import Settings, field_docs, load_config
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_example_config_loads_and_validates() -> None:
    """config.example.yaml is a valid configuration."""
    settings = load_config(EXAMPLE)
    assert settings.mqtt.base_topic == "ownerlink"
    assert settings.vehicles["mache"].account == "ford"


def test_example_config_documents_every_key() -> None:
    """Every key of the models appears in config.example.yaml, so the example cannot drift."""
    text = EXAMPLE.read_text()
    skip = ("accounts.", "vehicles.", "apps.")  # dict sections: checked via their example entries
    for key, _ in field_docs(Settings):
        if key.startswith(skip):
            continue
        assert f"{key.rsplit('.', 1)[-1]}:" in text, f"{key} is not documented in the example"


def test_secrets_are_secret_str(tmp_path: Path) -> None:
    """Passwords and client secrets never print in a repr."""
    settings = load_config(EXAMPLE)
    assert "change-me" not in repr(settings)
    assert "your-client-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt:\n  port: 70000\n", "mqtt.port: Input should be less than or equal to 65535"),
        ("mqtt:\n  hots: x\n", "mqtt.hots: unknown key"),
        ("mqtt:\n  port: abc\n", "mqtt.port: Input should be a valid integer"),
        ("accounts:\n  ford: {provider: fordconnect}\n", "accounts.ford.client_id: required key"),
        ("budget:\n  calls_per_day: 1\n", "budget.calls_per_day: Input should be greater"),
        ("mqtt:\n  protocol: '4'\n", "mqtt.protocol: Input should be '5' or '3.1.1'"),
        ("web:\n  allow_cidrs: [nonsense]\n", "web.allow_cidrs.0: Value error"),
        ("vehicles:\n  car: {account: nope}\n", "vehicles.car.account: unknown account 'nope'"),
        ("stepup:\n  required_for: [command:fly]\n", "stepup.required_for.0: Input should be"),
        (
            "commands:\n  max_age_s: 600\n  dedup_window_s: 300\n",
            "commands.dedup_window_s: must be at least commands.max_age_s (600)",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of bad value is reported as `path.to.key: what is wrong`."""
    assert any(line.startswith(expected) for line in problems_for(tmp_path, text))


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    """Unparsable YAML names the file and the position."""
    (problem,) = problems_for(tmp_path, "mqtt: [unclosed\n")
    assert "line" in problem


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    """A YAML list at the top level is refused with a clear message."""
    (problem,) = problems_for(tmp_path, "- a\n- b\n")
    assert "mapping" in problem


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI flags beat the environment, which beats the file, which beats defaults."""
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  host: file\n  port: 1884\n  keepalive: 20\n")
    monkeypatch.setenv("OWNERLINK_MQTT__HOST", "env")
    monkeypatch.setenv("OWNERLINK_MQTT__PORT", "1885")
    settings = load_config(path, {"mqtt": {"port": 1886}})
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.keepalive) == ("env", 1886, 20)
    assert settings.mqtt.base_topic == "ownerlink"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$OWNERLINK_CONFIG is read when --config is not given."""
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  host: fromfile\n")
    monkeypatch.setenv("OWNERLINK_CONFIG", str(path))
    assert load_config(None).mqtt.host == "fromfile"


def test_settings_are_frozen() -> None:
    """Config passed into constructors cannot be changed under them."""
    settings = load_config(EXAMPLE)
    with pytest.raises(Exception, match="frozen"):
        settings.mqtt.port = 1  # type: ignore[misc]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_config_check_exits_zero_with_summary() -> None:
    """`ownerlink config check` prints one summary line for a valid file."""
    result = run_cli("config", "check", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK")


def test_config_check_exits_two_without_traceback(tmp_path: Path) -> None:
    """A broken file exits 2, names each bad key on its own line, and prints no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("mqtt:\n  port: 99999\n  colour: red\n")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2
    assert "mqtt.port:" in result.stderr
    assert "mqtt.colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_command_has_help() -> None:
    """`ownerlink --help` and each command's --help work."""
    from bridge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert run_cli("--help").returncode == 0
    for name in sub.choices:  # type: ignore[union-attr]
        assert run_cli(name, "--help").returncode == 0, name


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is exactly what the generator makes from the models today."""
    from bridge.configdoc import render

    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == render(), "run: python -m bridge.configdoc > docs/configuration.md"
