"""Typed configuration: pydantic-settings models, loaded once and passed into constructors.

Precedence, highest first: CLI flags, environment (`OWNERLINK_`, `__` for nesting), the YAML file,
defaults. Every problem is reported as `path.to.key: what is wrong` and raised as ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextvars import ContextVar
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError
from bridge.model import Scope

DEFAULT_PATHS = (Path("/etc/ownerlink/config.yaml"), Path("config.yaml"))
# The YAML document being loaded; read by YamlDocumentSource below the environment in precedence.
_yaml_document: ContextVar[dict[str, Any]] = ContextVar("_yaml_document", default={})  # noqa: B039

# Vehicle aliases that would put a car's topics under the bridge's own or the command topics.
RESERVED_SLUGS = frozenset({"bridge", "app"})
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
APP_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _cidr(value: str) -> str:
    ip_network(value, strict=False)  # raises ValueError with a clear message
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsConfig(Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Accepting any certificate defeats TLS; it must be asked for by name.
    insecure_skip_verify: bool = False


class MqttConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = "ownerlink"
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(default=30, ge=5, le=3600)
    tls: TlsConfig = TlsConfig()
    base_topic: str = Field(default="ownerlink", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+$")
    discovery_mode: Literal["device", "entity"] = "device"
    enforcement: Literal["dynsec", "acl-file", "none"] = "none"
    # The broker admin (dynsec) identity; the owner's only, never an app's.
    admin_username: str | None = None
    admin_password: SecretStr | None = None
    acl_dir: Path | None = None
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)


class AccountConfig(Section):
    provider: Literal["fordconnect", "fordconnect-query"] = "fordconnect"
    client_id: str
    client_secret: SecretStr
    application_id: str | None = None
    redirect_uri: str = "http://127.0.0.1:8742/callback"
    authorize_url: str | None = None
    token_url: str | None = None
    api_base_url: str | None = None
    use_pkce: bool = True
    request_timeout_s: float = Field(default=15.0, gt=0, le=120)


class VehicleConfig(Section):
    account: str
    # The provider's vehicle id (v1); a Query account is bound to one vehicle and may omit it.
    id: str | None = None
    name: str | None = None


class BudgetConfig(Section):
    calls_per_day: int = Field(default=250, ge=10, le=100_000)
    calls_per_hour: int = Field(default=40, ge=1, le=100_000)
    command_reserve_pct: int = Field(default=20, ge=0, le=90)


class PollingConfig(Section):
    driving_interval_s: float = Field(default=60, ge=5)
    charging_interval_s: float = Field(default=300, ge=5)
    parked_min_interval_s: float = Field(default=900, ge=30)
    parked_max_interval_s: float = Field(default=3600, ge=60)
    sleeping_interval_s: float = Field(default=4 * 3600, ge=300)
    # A status refresh wakes the car's modem and drains the 12 V battery: off unless asked for.
    scheduled_refresh_interval_s: float | None = Field(default=None, ge=3600)
    stale_after_s: float = Field(default=6 * 3600, ge=60)
    suspension_pause_s: float = Field(default=24 * 3600, ge=60)


class CommandsConfig(Section):
    max_age_s: float = Field(default=30, gt=0, le=3600)
    dedup_window_s: float = Field(default=24 * 3600, ge=60)
    max_payload_bytes: int = Field(default=1024, ge=16, le=65536)
    rate_limit_per_minute: int = Field(default=6, ge=1, le=600)
    status_poll_interval_s: float = Field(default=2.0, gt=0, le=30)
    timeout_s: float = Field(default=120, gt=0, le=600)


class StepUpConfig(Section):
    required_for: frozenset[Scope] = frozenset({Scope.COMMAND_UNLOCK, Scope.COMMAND_REMOTE_START})
    max_failures: int = Field(default=5, ge=1, le=100)
    failure_window_s: float = Field(default=15 * 60, ge=60)
    lockout_s: float = Field(default=15 * 60, ge=60)


class AppConfig(Section):
    """An app declared in the config file; the registry (`ownerlink apps`) is the usual way."""

    scopes: frozenset[Scope] = frozenset({Scope.READ_STATUS})
    home_assistant: bool = False
    name: str | None = None


class AuditConfig(Section):
    rotate_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)


class AlertsConfig(Section):
    webhook_url: str | None = None
    webhook_timeout_s: float = Field(default=5, gt=0, le=60)
    webhook_retries: int = Field(default=5, ge=0, le=20)


class WebConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    allow_cidrs: tuple[Cidr, ...] = ("127.0.0.0/8", "::1/128")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    access_token_ttl_s: int = Field(default=600, ge=60, le=3600)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=3600)
    public_url: str | None = None
    # Owner login throttling: this many wrong passwords per client address per window → 429.
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_failure_window_s: float = Field(default=15 * 60, ge=60)
    # Also ask for the step-up TOTP code at login, once step-up is enrolled.
    login_totp: bool = False
    # REST reads per app per minute (commands are limited by the pipeline, commands.*).
    api_reads_per_minute: int = Field(default=60, ge=1, le=6000)


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """The whole configuration. Built by `load_config`, never mutated."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="OWNERLINK_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    state_dir: Path = Path("/var/lib/ownerlink")
    mqtt: MqttConfig = MqttConfig()
    accounts: dict[Annotated[str, Field(pattern=SLUG_PATTERN)], AccountConfig] = {}
    vehicles: dict[Annotated[str, Field(pattern=SLUG_PATTERN)], VehicleConfig] = {}
    apps: dict[Annotated[str, Field(pattern=APP_ID_PATTERN)], AppConfig] = {}
    budget: BudgetConfig = BudgetConfig()
    polling: PollingConfig = PollingConfig()
    commands: CommandsConfig = CommandsConfig()
    stepup: StepUpConfig = StepUpConfig()
    audit: AuditConfig = AuditConfig()
    alerts: AlertsConfig = AlertsConfig()
    web: WebConfig = WebConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        """Cross-section checks, reported with the path of the offending key."""
        problems: list[InitErrorDetails] = []
        for alias in self.vehicles.keys() & RESERVED_SLUGS:
            problems.append(_problem(("vehicles", alias), "this alias is reserved for the bridge"))
        for alias, vehicle in self.vehicles.items():
            if vehicle.account not in self.accounts:
                problems.append(
                    _problem(("vehicles", alias, "account"), f"unknown account {vehicle.account!r}")
                )
        assistants = [name for name, app in self.apps.items() if app.home_assistant]
        for name in assistants[1:]:
            problems.append(
                _problem(("apps", name, "home_assistant"), "only one app can be Home Assistant")
            )
        if self.commands.dedup_window_s < self.commands.max_age_s:
            # An id forgotten while its message is still young enough would run a second time.
            problems.append(
                _problem(
                    ("commands", "dedup_window_s"),
                    f"must be at least commands.max_age_s ({self.commands.max_age_s:g})",
                )
            )
        if problems:
            raise ValidationError.from_exception_data("Settings", problems)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlDocumentSource(settings_cls))


class YamlDocumentSource(PydanticBaseSettingsSource):
    """The already-parsed YAML file, as the lowest-precedence source above the defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _yaml_document.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_document.get())


def _problem(loc: tuple[str, ...], message: str) -> InitErrorDetails:
    error = PydanticCustomError("reference", message)
    return {"type": error, "loc": loc, "input": None}


def find_config_path(explicit: Path | None) -> Path | None:
    """The file to read: `--config`, else `$OWNERLINK_CONFIG`, else a default that exists."""
    if explicit is not None:
        return explicit
    env = os.environ.get("OWNERLINK_CONFIG")
    if env:
        return Path(env)
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse the YAML file into a mapping, or raise ConfigError saying what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read file ({exc.strerror or exc})"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from exc
    data = _parse_yaml(path, text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    problems = list(_unusable_values(data, ()))
    if problems:
        raise ConfigError(problems)
    return data


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: {problem}{where}"]) from exc
    except RecursionError as exc:  # PyYAML recurses once per nesting level
        raise ConfigError([f"{path}: nested too deeply"]) from exc
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise ConfigError([f"{path}: {exc}"]) from exc


def _unusable_values(value: Any, where: tuple[str, ...]) -> Iterator[str]:
    """Keys that are not text, and strings no file name or log line can carry (NUL bytes, lone
    surrogates): refused here, naming the key, rather than failing later with a traceback."""
    key = ".".join(where) or "(top level)"
    if isinstance(value, dict):
        for name, inner in value.items():
            if not isinstance(name, str):
                yield f"{key}: key {name!r} must be text"
                continue
            yield from _unusable_values(inner, (*where, name))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _unusable_values(inner, (*where, str(index)))
    elif isinstance(value, str) and ("\0" in value or not _encodable(value)):
        yield f"{key}: contains a NUL byte or an invalid character"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load and validate the configuration; raise ConfigError naming every bad key."""
    found = find_config_path(path)
    token = _yaml_document.set(read_yaml(found) if found is not None else {})
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from exc
    finally:
        _yaml_document.reset(token)


def format_errors(exc: ValidationError) -> list[str]:
    """One `path.to.key: what is wrong` line per problem, never echoing a secret value."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {message}")
    return lines


def field_docs(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """Every key of a model, dotted, for generating the configuration reference."""
    out: list[tuple[str, FieldInfo]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(field_docs(annotation, f"{key}."))
        else:
            out.append((key, info))
    return out
