"""Typed configuration: pydantic-settings models, loaded once and passed into constructors.

Precedence, highest first: CLI flags, environment (`OWNERLINK_`, `__` for nesting), the YAML file,
defaults. Every problem is reported as `path.to.key: what is wrong` and raised as ConfigError.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from bridge.access.validation import RESERVED_IDS
from bridge.errors import ConfigError
from bridge.model import READ_SCOPES, Scope

DEFAULT_PATHS = (Path("/etc/ownerlink/config.yaml"), Path("config.yaml"))
# The YAML document being loaded; read by YamlDocumentSource below the environment in precedence.
_yaml_document: ContextVar[dict[str, Any]] = ContextVar("_yaml_document", default={})  # noqa: B039

# Vehicle aliases that would put a car's topics under the bridge's own or the command topics.
RESERVED_SLUGS = frozenset({"bridge", "app"})
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
APP_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

# Upper bounds for durations, in seconds: far beyond any sensible setting, and far below what
# would overflow a datetime or a timer when added to now (`1e12` or `.inf` passed before).
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY
YEAR = 365 * DAY


def _cidr(value: str) -> str:
    ip_network(value, strict=False)  # raises ValueError with a clear message
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]


def _web_url(value: str) -> str:
    """An http(s) URL every user of it can parse and connect to: a bad port or host found later
    was a traceback in `run`, `doctor`, `login` or an alert's delivery. The value is never
    quoted back: a webhook's query or user info may hold its token."""
    problem = _web_url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _web_url_problem(value: str) -> str | None:
    if not _plain(value):
        return "the URL contains a space or a control character"
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an IPv6 address whose bracket is not closed
        return "not a valid URL (check its host, and the brackets around an IPv6 address)"
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return "not an http:// or https:// URL"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "the URL's port must be a number from 1 to 65535"
    if not parts.hostname or host_problem(parts.hostname) is not None:
        return "the URL's host is not a host name or an IP address"
    return None


WebUrl = Annotated[str, AfterValidator(_web_url)]


def _redirect_uri(value: str) -> str:
    """What Ford redirects the owner's browser to after login: an http(s) URL as `_web_url`
    checks it, or an app's own scheme (`myapp://callback`) pasted back by hand."""
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    custom = _APP_SCHEME.fullmatch(scheme) and value.startswith(f"{scheme}://")
    if custom and scheme not in {"http", "https"} and _plain(value):
        return value
    return _web_url(value)


def _plain(value: str) -> bool:
    """No spaces or control characters: a URL that holds one is mistyped or pasted with junk."""
    return all(char.isprintable() and not char.isspace() for char in value)


_APP_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


RedirectUri = Annotated[str, AfterValidator(_redirect_uri)]


def _some_path(value: Path) -> Path:
    # YAML's `state_dir: ""` reads as Path(""), which is the current directory: under systemd,
    # the root of the file system.
    if str(value) in {"", "."}:
        raise ValueError("give a directory (an empty value would mean the current one)")
    return value


HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
# A name to resolve: Docker's service names may hold underscores, which host names may not.
NETWORK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
# Digits and dots only: an IPv4 address or nothing (httpx refuses `999.1.1.1`, no DNS name is so).
NUMERIC_NAME = re.compile(r"^[0-9.]+$")


def _host_name(value: str) -> str:
    if not HOST_NAME.match(value):
        raise ValueError(f"{value!r} is not a host name (write it without scheme, port or path)")
    return value


HostName = Annotated[str, AfterValidator(_host_name)]


def host_problem(value: str) -> str | None:
    """Why `value` is neither an IP address nor a host name, or None."""
    try:
        ip_address(value)
    except ValueError:
        if NETWORK_NAME.match(value) and not NUMERIC_NAME.match(value):
            return None
        return "not a host name or an IP address"
    return None


def _network_host(value: str) -> str:
    """A host to connect to or listen on: `192.168.1.10:1883` or `mqtt://broker` failed only at
    the first connection, and an empty one meant whatever the library made of it."""
    if host_problem(value) is not None:
        raise ValueError(
            f"{value!r} is not a host name or an IP address "
            "(write it without scheme, port, path or brackets; the port has its own key)"
        )
    return value


NetworkHost = Annotated[str, AfterValidator(_network_host)]


def _not_bool(value: Any) -> Any:
    # YAML reads true/false/yes/no as booleans, which pydantic would otherwise take as 1 and 0.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "Input should be a number, not true or false")
    return value


# Every number in the configuration: a boolean is a mistake, never 0 or 1.
Integer = Annotated[int, BeforeValidator(_not_bool)]
Number = Annotated[float, BeforeValidator(_not_bool)]


def _protocol_text(value: Any) -> Any:
    # `protocol: 5` unquoted is a YAML integer that means the same as "5".
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Protocol = Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_text)]


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors (typos must not pass)."""

    # Infinity and NaN pass every bound check in some direction; no key means them.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TlsConfig(Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Accepting any certificate defeats TLS; it must be asked for by name.
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _check_files(self) -> TlsConfig:
        """Load what TLS will load, now: a missing or wrong file is a configuration error that
        names its key, not a failure at the first connection."""
        if not self.enabled:
            return self
        problems = [
            _problem((name,), problem)
            for name, problem in _tls_file_problems(self.ca_file, self.cert_file, self.key_file)
        ]
        if problems:
            raise ValidationError.from_exception_data("TlsConfig", problems)
        return self


# The keys of the CA bundle, the certificate and its private key, as the section names them.
TLS_KEYS = ("ca_file", "cert_file", "key_file")


def _tls_file_problems(
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    keys: tuple[str, str, str] = TLS_KEYS,
) -> list[tuple[str, str]]:
    """(key, what is wrong) for each TLS file that cannot be used as configured."""
    ca_key, cert_key, key_key = keys
    for name, path in zip(keys, (ca_file, cert_file, key_file), strict=True):
        if path is not None and (problem := _unreadable(path)) is not None:
            return [(name, problem)]
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            return [(ca_key, f"{ca_file} holds no usable CA certificate ({_why(exc)})")]
    if key_file is not None and cert_file is None:
        return [(key_key, f"set {cert_key} too (the certificate this key belongs to)")]
    if cert_file is not None:
        try:
            # No pass phrase: without one OpenSSL would prompt on the terminal (a daemon has
            # none), and nothing at run time could answer it either.
            context.load_cert_chain(cert_file, key_file, password=_no_pass_phrase)
        except (ssl.SSLError, OSError) as exc:
            if key_file is not None and _encrypted(key_file):
                return [(key_key, f"{key_file} is encrypted; give a key without a pass phrase")]
            what = f"with {key_key}" if key_file is not None else "(its key in the same file)"
            return [(cert_key, f"cannot load {cert_file} {what}: {_why(exc)}")]
    return []


def _no_pass_phrase() -> bytes:
    return b""


def _encrypted(key_file: Path) -> bool:
    try:
        head = key_file.read_bytes()[:4096]
    except OSError:
        return False
    return b"ENCRYPTED" in head


def _why(exc: ssl.SSLError | OSError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def _unreadable(path: Path) -> str | None:
    """Why `path` cannot be read as a file, or None."""
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"


class MqttConfig(Section):
    host: NetworkHost = "127.0.0.1"
    port: Integer = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = "ownerlink"
    protocol: Protocol = "5"
    keepalive: Integer = Field(default=30, ge=5, le=3600)
    tls: TlsConfig = TlsConfig()
    base_topic: str = Field(default="ownerlink", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+$")
    discovery_mode: Literal["device", "entity"] = "device"
    enforcement: Literal["dynsec", "acl-file", "none"] = "none"
    # The broker admin (dynsec) identity; the owner's only, never an app's.
    admin_username: str | None = None
    admin_password: SecretStr | None = None
    acl_dir: Path | None = None
    reconnect_min_s: Number = Field(default=1.0, gt=0, le=60)
    reconnect_max_s: Number = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check_dynsec_login(self) -> MqttConfig:
        """dynsec manages the broker through its admin login: without it `config check` passed
        and then every command that touches apps, and the daemon, stopped on it."""
        if self.enforcement == "dynsec" and (not self.admin_username or not self.admin_password):
            problem = _problem(
                ("admin_username",),
                "required (with mqtt.admin_password) when mqtt.enforcement is dynsec",
            )
            raise ValidationError.from_exception_data("MqttConfig", [problem])
        return self

    @property
    def own_logins(self) -> tuple[str, ...]:
        """The bridge's own broker usernames: never an app's id (an app under one of them
        would get the daemon's access, and revoking it would delete the daemon's login)."""
        return tuple(name for name in (self.username, self.admin_username) if name)

    def own_login(self, app_id: str) -> str | None:
        """The bridge's own login that `app_id` names (broker-style, ignoring case), or None."""
        return next((name for name in self.own_logins if name.lower() == app_id.lower()), None)


class AccountConfig(Section):
    provider: Literal["fordconnect", "fordconnect-query"] = "fordconnect"
    client_id: str
    client_secret: SecretStr
    application_id: str | None = None
    redirect_uri: RedirectUri = "http://127.0.0.1:8742/callback"
    authorize_url: WebUrl | None = None
    token_url: WebUrl | None = None
    api_base_url: WebUrl | None = None
    use_pkce: bool = True
    request_timeout_s: Number = Field(default=15.0, gt=0, le=120)
    health_alerts: bool = False


class VehicleConfig(Section):
    account: str
    # The provider's vehicle id (v1); a Query account is bound to one vehicle and may omit it.
    id: str | None = None
    name: str | None = None


class BudgetConfig(Section):
    calls_per_day: Integer = Field(default=250, ge=10, le=100_000)
    calls_per_hour: Integer = Field(default=40, ge=1, le=100_000)
    command_reserve_pct: Integer = Field(default=20, ge=0, le=90)


class PollingConfig(Section):
    driving_interval_s: Number = Field(default=60, ge=5, le=DAY)
    charging_interval_s: Number = Field(default=300, ge=5, le=DAY)
    parked_min_interval_s: Number = Field(default=900, ge=30, le=DAY)
    parked_max_interval_s: Number = Field(default=3600, ge=60, le=WEEK)
    sleeping_interval_s: Number = Field(default=4 * HOUR, ge=300, le=WEEK)
    # A status refresh wakes the car's modem and drains the 12 V battery: off unless asked for.
    scheduled_refresh_interval_s: Annotated[float | None, BeforeValidator(_not_bool)] = Field(
        default=None, ge=HOUR, le=MONTH
    )
    stale_after_s: Number = Field(default=6 * HOUR, ge=60, le=MONTH)
    suspension_pause_s: Number = Field(default=DAY, ge=60, le=MONTH)


class CommandsConfig(Section):
    max_age_s: Number = Field(default=30, gt=0, le=3600)
    dedup_window_s: Number = Field(default=DAY, ge=60, le=MONTH)
    max_payload_bytes: Integer = Field(default=1024, ge=16, le=65536)
    rate_limit_per_minute: Integer = Field(default=6, ge=1, le=600)
    refusals_recorded_per_minute: Integer = Field(default=30, ge=1, le=10_000)
    status_poll_interval_s: Number = Field(default=2.0, gt=0, le=30)
    timeout_s: Number = Field(default=120, gt=0, le=600)


def _commands_only(scopes: frozenset[Scope]) -> frozenset[Scope]:
    # Step-up guards commands; a read scope here guarded nothing, yet read as if reading the car's
    # location now needed the code.
    reads = sorted(scope.value for scope in scopes if scope in READ_SCOPES)
    if reads:
        raise ValueError(
            f"{', '.join(reads)}: only command scopes can need a step-up code (reads never do)"
        )
    return scopes


class StepUpConfig(Section):
    required_for: Annotated[frozenset[Scope], AfterValidator(_commands_only)] = frozenset(
        {Scope.COMMAND_UNLOCK, Scope.COMMAND_REMOTE_START}
    )
    max_failures: Integer = Field(default=5, ge=1, le=100)
    failure_window_s: Number = Field(default=15 * 60, ge=60, le=DAY)
    lockout_s: Number = Field(default=15 * 60, ge=60, le=WEEK)


class AppConfig(Section):
    """An app declared in the config file; the registry (`ownerlink apps`) is the usual way."""

    scopes: frozenset[Scope] = frozenset({Scope.READ_STATUS})
    home_assistant: bool = False
    name: str | None = None


class AuditConfig(Section):
    rotate_bytes: Integer = Field(default=10 * 1024 * 1024, ge=4096, le=1 << 30)


class AlertsConfig(Section):
    webhook_url: WebUrl | None = None
    webhook_timeout_s: Number = Field(default=5, gt=0, le=60)
    webhook_retries: Integer = Field(default=5, ge=0, le=20)


class WebConfig(Section):
    enabled: bool = True
    host: NetworkHost = "127.0.0.1"
    port: Integer = Field(default=8088, ge=0, le=65535)
    allow_cidrs: tuple[Cidr, ...] = ("127.0.0.0/8", "::1/128")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_minutes: Integer = Field(default=60, ge=1, le=7 * 24 * 60)
    access_token_ttl_s: Integer = Field(default=600, ge=60, le=3600)
    refresh_token_ttl_s: Integer = Field(default=30 * DAY, ge=HOUR, le=YEAR)
    public_url: WebUrl | None = None
    # Public host names the page answers to besides addresses, bare names and local names.
    allowed_hosts: tuple[HostName, ...] = ()
    # Home Assistant Supervisor addresses whose Ingress proxy serves the page under its prefix.
    ingress_from: tuple[Cidr, ...] = ()
    # Owner login throttling: this many wrong passwords per client address per window → 429.
    login_max_failures: Integer = Field(default=5, ge=1, le=100)
    login_failure_window_s: Number = Field(default=15 * 60, ge=60, le=DAY)
    # Also ask for the step-up TOTP code at login, once step-up is enrolled.
    login_totp: bool = False
    # REST reads per app per minute (commands are limited by the pipeline, commands.*).
    api_reads_per_minute: Integer = Field(default=60, ge=1, le=6000)

    @model_validator(mode="after")
    def _check_tls(self) -> WebConfig:
        """Load the page's certificate and key as the server will: half a pair or an unreadable
        file is a configuration error naming its key, not an exit once `run` has started.
        Checked even with the page disabled: `run --metrics-only` serves with them too."""
        problems = [_problem((name,), problem) for name, problem in self._tls_problems()]
        if problems:
            raise ValidationError.from_exception_data("WebConfig", problems)
        return self

    def _tls_problems(self) -> list[tuple[str, str]]:
        if self.tls_cert is not None and self.tls_key is None:
            return [("tls_key", "set it too (the private key of web.tls_cert), or neither")]
        return _tls_file_problems(None, self.tls_cert, self.tls_key, ("", "tls_cert", "tls_key"))


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
        allow_inf_nan=False,
    )

    state_dir: Annotated[Path, AfterValidator(_some_path)] = Path("/var/lib/ownerlink")
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
        for name, account in self.accounts.items():
            # v1 has no alerts call to add: a key that would silently do nothing is refused.
            if account.health_alerts and account.provider != "fordconnect-query":
                message = "only a fordconnect-query account reads health alerts"
                problems.append(_problem(("accounts", name, "health_alerts"), message))
        problems.extend(_same_car_problems(self))
        problems.extend(_vin_problems(self))
        assistants = [name for name, app in self.apps.items() if app.home_assistant]
        for name in assistants[1:]:
            problems.append(
                _problem(("apps", name, "home_assistant"), "only one app can be Home Assistant")
            )
        problems.extend(_topic_problems(self.mqtt))
        problems.extend(_login_problems(self))
        problems.extend(_order_problems(self))
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
        return (init_settings, EnvironmentSource(settings_cls), YamlDocumentSource(settings_cls))


# (key, relation, other key): pairs of keys that only make sense in this order.
ORDER_RULES: tuple[tuple[str, str, str], ...] = (
    # An id forgotten while its message is still young enough would run a second time.
    ("commands.dedup_window_s", "at least", "commands.max_age_s"),
    # Back-offs grow from the minimum to the maximum; reversed, the "maximum" is never reached.
    ("polling.parked_min_interval_s", "at most", "polling.parked_max_interval_s"),
    ("mqtt.reconnect_min_s", "at most", "mqtt.reconnect_max_s"),
    # An hourly allowance above the daily one can never be spent: a typo, not a policy.
    ("budget.calls_per_hour", "at most", "budget.calls_per_day"),
)


def _order_problems(settings: Settings) -> Iterator[InitErrorDetails]:
    for key, relation, other in ORDER_RULES:
        value, limit = _key_value(settings, key), _key_value(settings, other)
        if value > limit if relation == "at most" else value < limit:
            yield _problem(tuple(key.split(".")), f"must be {relation} {other} ({limit:g})")


def _key_value(settings: Settings, key: str) -> Any:
    value: Any = settings
    for name in key.split("."):
        value = getattr(value, name)
    return value


class _NotJson(ValueError):
    """An environment value that must be JSON and is not; `problem` is the line to report."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class EnvironmentSource(EnvSettingsSource):
    """The environment. A section or a list is given there as JSON (`OWNERLINK_WEB__ALLOW_CIDRS=
    '["10.0.0.0/8"]'`); for a value that is not, pydantic-settings raises SettingsError, whose
    traceback names neither the variable nor the key, so it becomes a ConfigError line here."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except (ValueError, RecursionError) as exc:
            # A ValueError subclass, so where pydantic-settings tolerates non-JSON it still can.
            raise _NotJson(self._not_json_problem(field_name, field, value, exc)) from exc

    def __call__(self) -> dict[str, Any]:
        problems = list(self._unusable_variables())
        if problems:
            raise ConfigError(problems)
        try:
            values = super().__call__()
        except SettingsError as exc:
            if isinstance(exc.__cause__, _NotJson):
                raise ConfigError([exc.__cause__.problem]) from exc
            raise
        # JSON may spell what the variable's bytes could not (a "\ud800" escape).
        problems = [f"{line} (in the environment)" for line in _unusable_values(values, (), set())]
        if problems:
            raise ConfigError(problems)
        return values

    def _unusable_variables(self) -> Iterator[str]:
        """Settings variables whose value is not UTF-8 (`$(printf 'pw\\xff')`): Python carries such
        bytes as lone surrogates, which pass every check and then fail with a traceback at first
        use (the broker login, a log line), as the YAML file's are refused by _unusable_values."""
        prefix = self.env_prefix.lower()
        for variable, text in sorted(self.env_vars.items()):
            if not variable.startswith(prefix) or text is None or variable.upper() in NOT_SETTINGS:
                continue
            key = self._key_of(variable)
            if key.split(".")[0] in self.settings_cls.model_fields and not _encodable(text):
                # The value itself is never echoed: it may hold a secret.
                yield f"{key}: {variable.upper()} is not valid UTF-8 text"

    def _key_of(self, variable: str) -> str:
        """The dotted key a (lower-cased) variable names: ownerlink_mqtt__host → mqtt.host."""
        nesting = self.env_nested_delimiter or "__"
        return variable[len(self.env_prefix) :].replace(nesting.lower(), ".")

    def _not_json_problem(
        self, name: str, field: FieldInfo | None, value: Any, exc: Exception
    ) -> str:
        variable = self._variable_for(name, value)
        key = self._key_of(variable)
        if isinstance(exc, json.JSONDecodeError):
            reason = exc.msg  # says what is wrong without quoting the value
        else:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else "cannot be read"
        shape = "a JSON object" if _is_mapping(field) else 'a JSON list, e.g. ["a", "b"]'
        # The value itself is never echoed: it may hold a secret.
        return f"{key}: {variable.upper()} is not valid JSON ({reason}); use {shape}"

    def _variable_for(self, name: str, value: Any) -> str:
        """The variable holding `value` for the key `name` (the last part of the variable name)."""
        prefix = self.env_prefix.lower()
        whole = f"{prefix}{name}".lower()
        tail = f"{self.env_nested_delimiter}{name}".lower()
        for variable, text in sorted(self.env_vars.items()):
            lowered = variable.lower()
            named = lowered == whole or (lowered.startswith(prefix) and lowered.endswith(tail))
            if named and text == value:
                return lowered
        return whole


def _is_mapping(field: FieldInfo | None) -> bool:
    annotation = None if field is None else field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return get_origin(annotation) is dict


class YamlDocumentSource(PydanticBaseSettingsSource):
    """The already-parsed YAML file, as the lowest-precedence source above the defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _yaml_document.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_document.get())


def _topic_problems(mqtt: MqttConfig) -> list[InitErrorDetails]:
    """The bridge's topics and Home Assistant's discovery topics must not contain each other:
    the Home Assistant app may read everything under the discovery prefix, which would then
    include location and every app's results whatever its scopes."""
    base, prefix = mqtt.base_topic.split("/"), [mqtt.discovery_prefix]
    if base[:1] != prefix:
        return []
    return [
        _problem(
            ("mqtt", "base_topic"),
            f"must not be {mqtt.discovery_prefix!r} or under it (mqtt.discovery_prefix): "
            "Home Assistant's discovery topics would include the car's own",
        )
    ]


# 17 characters of the VIN alphabet (no I, O or Q), letters and digits both: an alias or a name
# so written is published in every topic or in Home Assistant's discovery.
_VIN = re.compile(r"(?=.*[0-9])(?=.*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}", re.IGNORECASE)


def _vin_problems(settings: Settings) -> Iterator[InitErrorDetails]:
    """An alias or display name that looks like a VIN: owners are told never to publish theirs,
    and the alias is in every topic of the car, its name in Home Assistant's discovery."""
    advice = "it looks like a VIN, which would be published; choose a name such as `mache`"
    for alias, vehicle in settings.vehicles.items():
        if _VIN.fullmatch(alias):
            yield _problem(("vehicles", alias), advice)
        if vehicle.name is not None and _VIN.fullmatch(vehicle.name.strip()):
            yield _problem(("vehicles", alias, "name"), advice)


def _same_car_problems(settings: Settings) -> Iterator[InitErrorDetails]:
    """Two aliases for one car: the same id on one account, two without an id (each means the
    login's only car), or two on a Query account (its login is one car). Each alias polled it
    again, from the same budget, and Home Assistant showed the car twice."""
    first: dict[tuple[str, str | None], str] = {}
    for alias, vehicle in settings.vehicles.items():
        account = settings.accounts.get(vehicle.account)
        query = account is not None and account.provider == "fordconnect-query"
        car = (vehicle.account, None if query else vehicle.id)
        if car not in first:
            first[car] = alias
            continue
        if query:
            why = f"account {vehicle.account} is a Query login, which is one car"
        elif vehicle.id is None:
            why = "neither names an id: give each the id of its car"
        else:
            why = "the same id on the same account"
        yield _problem(("vehicles", alias), f"the same car as vehicles.{first[car]} ({why})")


def _login_problems(settings: Settings) -> list[InitErrorDetails]:
    """App ids the registry would refuse when the daemon imports them at start: it then exited 1
    (restarted in a loop under systemd) on a file `config check` had passed."""
    clashes = ((app_id, settings.mqtt.own_login(app_id)) for app_id in settings.apps)
    problems = [
        _problem(("apps", app_id), f"{login!r} is the bridge's own broker login")
        for app_id, login in clashes
        if login is not None
    ]
    first: dict[str, str] = {}
    for app_id in settings.apps:
        if app_id.lower() in RESERVED_IDS:
            problems.append(_problem(("apps", app_id), "reserved for the owner or the daemon"))
        elif app_id.lower() in first:
            problems.append(
                _problem(
                    ("apps", app_id),
                    f"the same broker login as apps.{first[app_id.lower()]} (logins ignore case)",
                )
            )
        first.setdefault(app_id.lower(), app_id)
    return problems


def _problem(loc: tuple[str, ...], message: str) -> InitErrorDetails:
    error = PydanticCustomError("reference", message)
    return {"type": error, "loc": loc, "input": None}


# Variables with the prefix that are not settings: the config file's path.
NOT_SETTINGS = frozenset({"OWNERLINK_CONFIG"})


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """`OWNERLINK_*` variables that name no setting (pure). The environment is shared with other
    tools, so these are worth a warning, not an error; the usual slip is one underscore where
    sections need two (`OWNERLINK_MQTT_HOST` for `OWNERLINK_MQTT__HOST`)."""
    prefix, nesting = "OWNERLINK_", "__"
    unknown = []
    for name in sorted(environ):
        if not name.upper().startswith(prefix) or name.upper() in NOT_SETTINGS:
            continue
        section = name[len(prefix) :].split(nesting)[0].lower()
        if section not in Settings.model_fields:
            unknown.append(f"{name} is not a setting{_nesting_hint(name, section)}")
    return unknown


def _nesting_hint(name: str, section: str) -> str:
    head, _, rest = section.partition("_")
    if rest and head in Settings.model_fields:
        fixed = f"OWNERLINK_{head}__{rest}".upper()
        return f" (did you mean {fixed}? sections take two underscores)"
    return ""


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
    problems = list(_unusable_values(data, (), set()))
    if problems:
        raise ConfigError(problems)
    return _without_empty_sections(data, Settings)


def _without_empty_sections(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """A section left empty (`mqtt:` with every key under it commented out) reads as YAML null;
    it means the defaults, as a missing section does, not an error."""
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        section = field.annotation if field is not None else None
        if value is None and (_is_section(section) or get_origin(section) is dict):
            continue
        nested = isinstance(value, dict) and _is_section(section)
        out[key] = _without_empty_sections(value, section) if nested else value  # type: ignore[arg-type]
    return out


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return _load_unique_keys(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: {problem}{where}"]) from exc
    except RecursionError as exc:  # PyYAML recurses once per nesting level
        raise ConfigError([f"{path}: nested too deeply"]) from exc
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise ConfigError([f"{path}: {exc}"]) from exc


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _load_unique_keys(path: Path, text: str) -> Any:
    """`yaml.safe_load`, refusing a key given twice in one mapping: YAML would silently keep the
    last one (`mqtt: {host: a}` then `mqtt: {port: 1884}` loses the host)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = list(_duplicate_keys(node, (), set()))
        if duplicates:
            raise ConfigError([f"{path}: {problem}" for problem in duplicates])
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, where: tuple[str, ...], seen: set[int]) -> Iterator[str]:
    if id(node) in seen:  # an alias: its node was checked where the anchor is (it may hold itself)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*where, str(index)), seen)
    elif isinstance(node, yaml.MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            # `<<` merges an anchor; keys written next to it override it on purpose.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                ident, mark = (key_node.tag, name), key_node.start_mark
                if ident in first_lines:
                    yield (
                        f"{'.'.join((*where, name))}: duplicate key at line {mark.line + 1}, "
                        f"column {mark.column + 1} (first at line {first_lines[ident]})"
                    )
                first_lines.setdefault(ident, mark.line + 1)
            yield from _duplicate_keys(value_node, (*where, name), seen)


def _unusable_values(value: Any, where: tuple[str, ...], seen: set[int]) -> Iterator[str]:
    """Keys that are not text, and strings no file name or log line can carry (NUL bytes, lone
    surrogates): refused here, naming the key, rather than failing later with a traceback."""
    key = ".".join(where) or "(top level)"
    if isinstance(value, dict | list):
        # An alias repeats a part already checked, may contain itself, and nested aliases would
        # make the walk exponential ("billion laughs"): each container is checked once.
        if id(value) in seen:
            return
        seen.add(id(value))
    if isinstance(value, dict):
        for name, inner in value.items():
            if not isinstance(name, str):
                yield f"{key}: key {name!r} must be text"
                continue
            yield from _unusable_values(inner, (*where, name), seen)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _unusable_values(inner, (*where, str(index)), seen)
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


# pydantic's words for a value of the wrong shape name Python types ("a valid frozenset", "an
# instance of MqttConfig"); these say what the YAML should look like.
_SHAPES = {
    "model_type": "must be a section of `key: value` lines",
    "dict_type": "must be a section of `name:` entries",
    "list_type": "must be a list, e.g. [a, b] (one item too needs the brackets)",
    "tuple_type": "must be a list, e.g. [a, b] (one item too needs the brackets)",
    "set_type": "must be a list, e.g. [a, b] (one item too needs the brackets)",
    "frozen_set_type": "must be a list, e.g. [a, b] (one item too needs the brackets)",
    "path_type": "must be a path",
}
# What a name under accounts:, vehicles: or apps: may look like, by its pattern.
_NAME_RULES = {
    SLUG_PATTERN: "a-z, 0-9, - and _ (at most 32, starting with a letter or a digit)",
    APP_ID_PATTERN: "letters, digits, - and _ (at most 64)",
}


def format_errors(exc: ValidationError) -> list[str]:
    """One `path.to.key: what is wrong` line per problem, never echoing a secret value; a key
    the environment set says so, or the owner searches the YAML file for it in vain."""
    variables = {name.upper() for name in os.environ}
    lines = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif err["type"] in _SHAPES:
            # Only whether the value is there at all is looked at: it may be a secret.
            empty = " (it is empty)" if err.get("input") is None else ""
            message = _SHAPES[err["type"]] + empty
        elif loc[-1:] == ("[key]",) and err["type"] == "string_pattern_mismatch":
            loc = loc[:-1]
            rule = _NAME_RULES.get(str((err.get("ctx") or {}).get("pattern")))
            message = f"not a usable name: use {rule}" if rule else message
        path = ".".join(str(part) for part in loc) or "(top level)"
        variable = _variable_setting(loc, variables)
        lines.append(f"{path}: {message}" + (f" (set by {variable})" if variable else ""))
    return lines


def _variable_setting(loc: tuple[Any, ...], variables: set[str]) -> str | None:
    """The environment variable that gave the value at `loc` (the key itself, or a section
    given as JSON): the environment overrides the file, so if one exists, it was used."""
    parts = [str(part) for part in loc if isinstance(part, str) and part != "[key]"]
    for end in range(len(parts), 0, -1):
        variable = "OWNERLINK_" + "__".join(parts[:end]).upper()
        if variable in variables and variable not in NOT_SETTINGS:
            return variable
    return None


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
