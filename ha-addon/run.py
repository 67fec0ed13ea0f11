"""Home Assistant add-on entry point: the add-on's options and the Supervisor's MQTT service
become Ownerlink settings (environment variables), then this process becomes `ownerlink run`.

What the owner writes in /config/config.yaml (the add-on's `addon_config` folder) wins: a key set
there is never overridden here. The one exception is `web.allow_cidrs`, which always keeps the
Supervisor's network so its watchdog can reach `/healthz`.

Secrets (the broker password, the FordConnect client secret) travel only in the environment of
the exec'd daemon: never on its command line, never in this script's output.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

# The Supervisor's own address on its internal network (172.30.32.0/23), where its watchdog
# connects from. Only that address: every other add-on lives on the same network.
SUPERVISOR_NETWORK = "172.30.32.2/32"
# The daemon's own default, kept so the image's HEALTHCHECK (127.0.0.1) still gets an answer.
LOOPBACK = ("127.0.0.0/8", "::1/128")
# The account the add-on's ford_* options define (vehicles refer to it as `account: ford`).
ACCOUNT = "ford"
SUPERVISOR_URL = "http://supervisor"
PREFIX = "OWNERLINK_"

STARTER_CONFIG = f"""\
# Ownerlink add-on configuration: your own settings, in the format of docs/configuration.md.
# The add-on fills in, from its options and the Supervisor: the MQTT broker (Home Assistant's
# MQTT service), logging.level, mqtt.enforcement, mqtt.acl_dir, state_dir, web.host,
# web.allow_cidrs, web.ingress_from and the `{ACCOUNT}` account (ford_* options). A key you set
# here wins over those; web.allow_cidrs always keeps {SUPERVISOR_NETWORK} for the Supervisor.
# Reference: https://github.com/ownerlink/ownerlink/blob/main/docs/configuration.md
#
# vehicles:
#   car:
#     account: {ACCOUNT}
#     id: 0123456789abcdef0123456789abcdef
"""


class AddonError(Exception):
    """The add-on cannot start; the message says what to do (and never holds a secret)."""


@dataclass(frozen=True)
class AddonPaths:
    """Where the Supervisor puts things inside the add-on container."""

    options: Path = Path("/data/options.json")
    config: Path = Path("/config/config.yaml")
    state_dir: Path = Path("/data")
    # Readable by the Mosquitto add-on (it maps /share too); see docs/broker-setup.md.
    acl_dir: Path = Path("/share/ownerlink")


def variable(key: str) -> str:
    """The variable for a dotted key: `mqtt.tls.enabled` → OWNERLINK_MQTT__TLS__ENABLED."""
    return PREFIX + key.upper().replace(".", "__")


def user_sets(config: Mapping[str, Any], key: str) -> bool:
    """True when the owner's config file gives `key` (dotted) a value, even null."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node[part]
    return node


def _text(value: Any) -> str | None:
    """An option's value as text (unchanged: it may be a password); None when missing or blank."""
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def build_environment(
    options: Mapping[str, Any],
    user_config: Mapping[str, Any],
    mqtt_service: Mapping[str, Any] | None,
    environ: Mapping[str, str],
    paths: AddonPaths = AddonPaths(),
) -> dict[str, str]:
    """The daemon's environment (pure): `environ` plus the settings the add-on provides.

    `mqtt_service` is the `data` of the Supervisor's answer for the MQTT service, or None when
    the owner's file names a broker of its own.
    """
    env = {k: v for k, v in environ.items() if k not in {"SUPERVISOR_TOKEN", "HASSIO_TOKEN"}}
    env["OWNERLINK_CONFIG"] = str(paths.config)

    def fill(key: str, value: str | None) -> None:
        if user_sets(user_config, key):
            env.pop(variable(key), None)  # the image's defaults must not beat the owner's file
        elif value is not None:
            env[variable(key)] = value

    fill("state_dir", str(paths.state_dir))
    fill("logging.level", _text(options.get("log_level")))
    fill("mqtt.enforcement", _text(options.get("enforcement")))
    enforcement = (
        _lookup(user_config, "mqtt.enforcement")
        if user_sets(user_config, "mqtt.enforcement")
        else options.get("enforcement")
    )
    if enforcement == "acl-file":
        fill("mqtt.acl_dir", str(paths.acl_dir))
    # Supervisor's watchdog connects to the add-on's address on its network, not to loopback.
    fill("web.host", "0.0.0.0")  # noqa: S104 - the container's own interface; guarded by allow_cidrs
    _allow_supervisor(env, user_config)
    # The Supervisor's Ingress proxy serves the page in Home Assistant's sidebar; its
    # X-Ingress-Path header is believed from its address only.
    fill("web.ingress_from", json.dumps([SUPERVISOR_NETWORK]))

    if mqtt_service is not None:
        for key in ("host", "port", "username", "password"):
            fill(f"mqtt.{key}", _text(mqtt_service.get(key)))
        fill("mqtt.tls.enabled", "true" if mqtt_service.get("ssl") is True else "false")

    account = _account(options, user_config)
    if account:
        env[variable("accounts")] = json.dumps({ACCOUNT: account})
    else:
        env.pop(variable("accounts"), None)
    return env


def _allow_supervisor(env: dict[str, str], user_config: Mapping[str, Any]) -> None:
    """web.allow_cidrs: the owner's list (or the daemon's loopback default) plus the Supervisor."""
    key = "web.allow_cidrs"
    if user_sets(user_config, key):
        cidrs = _lookup(user_config, key)
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            env.pop(variable(key), None)  # malformed: the daemon reports it, naming the key
            return
    else:
        cidrs = list(LOOPBACK)
    if SUPERVISOR_NETWORK not in cidrs:
        cidrs = [*cidrs, SUPERVISOR_NETWORK]
    env[variable(key)] = json.dumps(cidrs)


def _account(options: Mapping[str, Any], user_config: Mapping[str, Any]) -> dict[str, str]:
    """The `ford` account's fields from the options, less those the owner's file sets."""
    given = {
        "client_id": _text(options.get("ford_client_id")),
        "client_secret": _text(options.get("ford_client_secret")),
        "application_id": _text(options.get("ford_application_id")),
    }
    if given["client_id"] is None and given["client_secret"] is None:
        return {}  # no account in the options (it may be in the file)
    given["provider"] = _text(options.get("ford_provider"))
    return {
        name: value
        for name, value in given.items()
        if value is not None and not user_sets(user_config, f"accounts.{ACCOUNT}.{name}")
    }


# -- I/O ------------------------------------------------------------------------------------------


def read_options(path: Path) -> dict[str, Any]:
    """The add-on's options, as the Supervisor wrote them."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AddonError(f"cannot read the add-on options in {path} ({exc})") from exc
    if not isinstance(data, dict):
        raise AddonError(f"{path}: expected a JSON object")
    return data


def read_user_config(path: Path) -> dict[str, Any]:
    """The owner's config file, or {} when there is none (or it is broken: then the daemon
    refuses it with the same parser and names the problem, exit status 2)."""
    from bridge.config import read_yaml
    from bridge.errors import ConfigError

    if not path.is_file():
        return {}
    try:
        return read_yaml(path)
    except ConfigError:
        return {}


def write_starter_config(path: Path) -> bool:
    """Create a commented (empty) config file for the owner to edit; False if it cannot."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:
            out.write(STARTER_CONFIG)
        path.chmod(0o600)  # the owner may put secrets in it later
    except FileExistsError:
        return True
    except OSError as exc:
        say(f"cannot create {path} ({exc.strerror or exc}); starting without a config file")
        return False
    return True


def fetch_mqtt_service(
    base_url: str, token: str | None, *, attempts: int = 5, delay_s: float = 2.0
) -> dict[str, Any]:
    """`data` of `GET /services/mqtt`: host, port, username, password, ssl, protocol."""
    if not token:
        raise AddonError("SUPERVISOR_TOKEN is not set: this image runs as a Home Assistant add-on")
    request = urllib.request.Request(  # noqa: S310 - a fixed http URL to the Supervisor
        f"{base_url.rstrip('/')}/services/mqtt",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    problem = "no answer"
    for attempt in range(attempts):
        if attempt:
            time.sleep(delay_s)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}: {_supervisor_message(exc)}"
            if exc.code in {400, 401, 403, 404}:
                break  # not available or not allowed: asking again will not help
            continue
        except (OSError, ValueError) as exc:
            problem = str(exc)
            continue
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict) and data.get("host"):
            return data
        problem = "the answer has no broker in it"
    raise AddonError(
        f"cannot get the MQTT service from the Supervisor ({problem}); install and start the "
        "Mosquitto broker add-on, or set mqtt.host (and its login) in the add-on's config.yaml"
    )


def _supervisor_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
    except (OSError, ValueError):
        return exc.reason or "error"
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "error")


def say(message: str) -> None:
    print(f"ownerlink add-on: {message}", file=sys.stderr, flush=True)


def prepare(
    paths: AddonPaths = AddonPaths(),
    environ: Mapping[str, str] | None = None,
    supervisor_url: str | None = None,
) -> dict[str, str]:
    """Read the options, the owner's file and the MQTT service: the daemon's environment."""
    environ = os.environ if environ is None else environ
    options = read_options(paths.options)
    user_config = read_user_config(paths.config)
    service = None
    if user_sets(user_config, "mqtt.host"):
        say("using the broker named in config.yaml (mqtt.host), not the Supervisor's")
    else:
        url = supervisor_url or environ.get("SUPERVISOR_API", SUPERVISOR_URL)
        token = environ.get("SUPERVISOR_TOKEN") or environ.get("HASSIO_TOKEN")
        service = fetch_mqtt_service(url, token)
        say(f"broker {service.get('host')}:{service.get('port')} from the Supervisor")
    env = build_environment(options, user_config, service, environ, paths)
    if not paths.config.is_file() and not write_starter_config(paths.config):
        env.pop("OWNERLINK_CONFIG", None)
    provided = sorted(k for k in env if k.startswith(PREFIX) and environ.get(k) != env[k])
    say("settings from the add-on: " + (", ".join(provided) or "none"))  # names, never values
    return env


def main(paths: AddonPaths = AddonPaths(), argv: Sequence[str] | None = None) -> NoReturn:
    """Become `ownerlink run`, or `ownerlink ARGS` with the same settings when given arguments
    (`docker exec -it <container> python3 /opt/ownerlink-addon/run.py login ford`)."""
    command = list(sys.argv[1:] if argv is None else argv) or ["run"]
    try:
        env = prepare(paths)
    except AddonError as exc:
        say(str(exc))
        sys.exit(1)
    # Replace this process: the daemon is the container's main process and gets its signals.
    os.execvpe("ownerlink", ["ownerlink", *command], env)  # noqa: S606, S607 - no shell, on PATH


if __name__ == "__main__":
    main()
