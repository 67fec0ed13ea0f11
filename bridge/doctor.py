"""The checks behind `ownerlink doctor`: each looks at one thing and returns a Check with a fix.

A check never raises for the problem it looks for; it returns `Check(name, ok, detail, fix)`
where `ok` is True (passed), None (a warning: worth knowing, nothing is broken) or False
(failed: `fix` says what to do). The CLI (`bridge/cli/doctor.py`) composes them and prints.

Doctor only looks: it publishes nothing, never connects with the daemon's client id (which would
kick the running daemon off the broker) and never spends the owner's API budget. The provider is
probed with httpx by the CLI, so this module, which talks to the broker, keeps to one side of the
paho/httpx line; what the CLI learned arrives here as plain `HttpAnswer` data.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket
import sqlite3
import ssl
import stat
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from bridge.access.aclfile import ACL_FILE, USERS_FILE
from bridge.access.control import Connection, DynsecControl, DynsecReply
from bridge.audit.chain import chain_files
from bridge.audit.verify import Report, verify
from bridge.commands.stepup import secret_path
from bridge.config import MqttConfig, Settings
from bridge.errors import (
    BrokerError,
    BudgetExhausted,
    Forbidden,
    ProviderError,
    RateLimited,
    ReauthRequired,
    StateError,
)
from bridge.events import CollectingAlerts
from bridge.mqtt.client import tls_context
from bridge.polling.budget import Budget, BudgetUsage
from bridge.providers.tokens import StoredTokens, TokenStore
from bridge.store import DB_NAME, Store

# Step-up codes move every 30 s and we accept one step either way; Ford checks token lifetimes
# against its own clock. Beyond this much skew, codes and tokens start failing in odd ways.
MAX_CLOCK_SKEW_S = 30.0
# Warn this long before a refresh token dies, so the owner can log in before polling stops.
RELOGIN_WARNING = timedelta(days=2)
PRIVATE_MODE_BITS = 0o077  # group and others: nothing

_STATUS = {True: "ok", None: "warn", False: "fail"}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: `ok` is True (passed), None (warning) or False (failed)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None

    @property
    def status(self) -> str:
        return _STATUS[self.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def warning(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, None, detail, fix)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def relogin(account: str) -> str:
    return f"run: ownerlink login {account}"


# -- config ---------------------------------------------------------------------------------------


def check_config(settings: Settings, path: Path | None) -> Check:
    """The config loaded (a bad one never gets here: it exits 2 like every command)."""
    source = str(path) if path is not None else "no config file (defaults and environment)"
    if not settings.accounts:
        return warning(
            "config",
            f"{source}: no accounts configured",
            "add an account under `accounts:` (see config.example.yaml), then run: "
            "ownerlink login ACCOUNT",
        )
    counts = f"{_plural(len(settings.accounts), 'account')}, "
    counts += _plural(len(settings.vehicles), "vehicle")
    return passed("config", f"{source}: {counts}")


# -- the state directory --------------------------------------------------------------------------


def check_state(state_dir: Path, *, uid: int, now: datetime) -> list[Check]:
    """The directory itself, then what is in it (skipped when the directory is unusable)."""
    directory = check_state_dir(state_dir, uid=uid)
    if not can_look_inside(state_dir):
        return [directory]
    database = state_dir / DB_NAME
    return [
        directory,
        check_private_files(state_dir),
        check_database(database),
        check_stepup_lockouts(database, now),
    ]


def check_state_dir(state_dir: Path, *, uid: int) -> Check:
    """Exists, belongs to the user running doctor, and nobody else may even list it (0700)."""
    name = "state directory"
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        return failed(
            name,
            f"{state_dir} does not exist",
            f"create it for the daemon's user: install -d -m 700 {state_dir} "
            "(`ownerlink login` also creates it)",
        )
    except OSError as exc:
        return failed(name, f"cannot look at {state_dir}: {exc.strerror}", _AS_DAEMON_USER)
    if not stat.S_ISDIR(st.st_mode):
        return failed(name, f"{state_dir} is not a directory", "point state_dir at a directory")
    if st.st_uid != uid:
        return _foreign_owner(state_dir, st.st_uid, uid)
    return _judge_dir_mode(state_dir, stat.S_IMODE(st.st_mode), uid)


def _judge_dir_mode(state_dir: Path, mode: int, uid: int) -> Check:
    name, fix = "state directory", f"chmod 700 {state_dir}"
    if mode & PRIVATE_MODE_BITS:
        detail = f"{state_dir} is mode {mode:04o}: other users can reach tokens and secrets"
        return failed(name, detail, fix)
    if not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        return failed(name, f"{state_dir} is mode {mode:04o}: not even its owner can use it", fix)
    return passed(name, f"{state_dir}: mode {mode:04o}, owned by {_user(uid)}")


def can_look_inside(directory: Path) -> bool:
    """Whether doctor may list and read `directory` (a wrong user may not: skip its files)."""
    st = _stat(directory)
    return st is not None and stat.S_ISDIR(st.st_mode) and os.access(directory, os.R_OK | os.X_OK)


_AS_DAEMON_USER = (
    "run doctor as the user the daemon runs as (e.g. sudo -u ownerlink ownerlink doctor)"
)


def _foreign_owner(state_dir: Path, owner: int, uid: int) -> Check:
    return failed(
        "state directory",
        f"{state_dir} belongs to {_user(owner)}, but doctor runs as {_user(uid)}",
        f"{_AS_DAEMON_USER}; if {_user(uid)} runs the daemon: "
        f"sudo chown -R {_user(uid)} {state_dir}",
    )


def private_files(state_dir: Path) -> list[Path]:
    """Files holding secrets: token files, the step-up secret, the state database."""
    tokens = sorted((state_dir / "tokens").glob("*.json"))
    others = [secret_path(state_dir), state_dir / DB_NAME]
    return [path for path in [*tokens, *others] if path.exists()]


def check_private_files(state_dir: Path) -> Check:
    """Token files and secrets are 0600 and their folder 0700: readable by the daemon only."""
    name = "private files"
    files = private_files(state_dir)
    tokens_dir = state_dir / "tokens"
    open_files = [path for path in files if _mode(path) & PRIVATE_MODE_BITS]
    open_dir = tokens_dir.is_dir() and bool(_mode(tokens_dir) & PRIVATE_MODE_BITS)
    if open_files or open_dir:
        exposed = [*open_files, *([tokens_dir] if open_dir else [])]
        return failed(
            name,
            "readable by other users: " + ", ".join(str(p) for p in exposed),
            _chmod_fix(open_files, tokens_dir if open_dir else None),
        )
    if not files:
        return passed(name, "no token or secret files yet")
    return passed(name, f"{_plural(len(files), 'file')} with secrets, all 0600")


def _chmod_fix(files: Sequence[Path], directory: Path | None) -> str:
    commands = [f"chmod 600 {' '.join(str(p) for p in files)}"] if files else []
    commands += [f"chmod 700 {directory}"] if directory is not None else []
    return "; ".join(commands)


def check_database(path: Path) -> Check:
    """The SQLite file opens read-only and passes SQLite's own quick integrity check."""
    name = "state database"
    if not path.exists():
        return warning(
            name, f"{path} does not exist yet", "nothing to do: the daemon creates it at start"
        )
    try:
        verdict = _read_db(path, "PRAGMA quick_check")[0][0]
        parts = [row[0] for row in _read_db(path, "SELECT part FROM schema_versions ORDER BY 1")]
    except sqlite3.Error as exc:
        return failed(name, f"{path}: {exc}", _DB_FIX)
    if verdict != "ok":
        return failed(name, f"{path}: the integrity check says {verdict}", _DB_FIX)
    return passed(name, f"{path}: readable, intact (schema parts: {', '.join(parts) or 'none'})")


_DB_FIX = (
    "stop the daemon and restore the file from a backup; without one, move it aside "
    "(mv ownerlink.db ownerlink.db.broken): the daemon starts a new one, but registered apps, "
    "budget history and step-up state are lost"
)


def check_stepup_lockouts(path: Path, now: datetime) -> Check:
    """Apps locked out of sensitive commands after too many wrong step-up codes (a warning)."""
    name = "step-up lockouts"
    try:
        rows = _read_db(
            path, "SELECT app, until FROM stepup_lockouts WHERE until > ?", (now.timestamp(),)
        )
    except sqlite3.Error:
        return passed(name, "none (step-up has not been used yet)")
    if not rows:
        return passed(name, "none")
    locked = ", ".join(f"{app} until {_hhmm(until)}" for app, until in rows)
    return warning(
        name,
        f"locked out of unlock / remote start: {locked}",
        "wait for the lockout to end and check the authenticator's clock; if nobody typed those "
        "codes, revoke the app: ownerlink apps revoke APP",
    )


def _read_db(path: Path, sql: str, params: Sequence[object] = ()) -> list[Any]:
    # mode=ro: doctor must not create, migrate or lock the daemon's database for writing.
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql, params).fetchall())


# -- the broker -----------------------------------------------------------------------------------


def check_broker(mqtt: MqttConfig, *, timeout_s: float) -> list[Check]:
    """Reachable, TLS, the daemon's login, then enforcement; stops where later steps cannot work."""
    reach = check_broker_reachable(mqtt, timeout_s=timeout_s)
    if not reach.ok:
        return [reach]
    tls = check_broker_tls(mqtt, timeout_s=timeout_s)
    if tls.ok is False:
        return [reach, tls]
    login = judge_connack(probe_connack(mqtt, timeout_s=timeout_s), mqtt)
    return [reach, tls, login, check_enforcement(mqtt, timeout_s=timeout_s)]


def check_broker_reachable(mqtt: MqttConfig, *, timeout_s: float) -> Check:
    """A TCP connection to mqtt.host:mqtt.port opens within the timeout."""
    name, where = "broker reachable", f"{mqtt.host}:{mqtt.port}"
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        return failed(name, f"cannot resolve {mqtt.host}: {exc.strerror}", "check mqtt.host")
    except TimeoutError:
        return failed(
            name,
            f"no answer from {where} within {timeout_s:g} s",
            "check mqtt.host and mqtt.port, and any firewall between here and the broker",
        )
    except OSError as exc:
        return failed(
            name,
            f"{where}: {exc.strerror or exc}",
            "start the broker (systemctl start mosquitto, or the Mosquitto add-on) and check "
            "mqtt.host and mqtt.port",
        )
    return passed(name, f"{where} accepts connections")


def check_broker_tls(mqtt: MqttConfig, *, timeout_s: float) -> Check:
    """With TLS on: the handshake succeeds and the certificate is trusted for mqtt.host."""
    name = "broker TLS"
    if not mqtt.tls.enabled:
        return _tls_off(mqtt)
    try:
        # The daemon's own context builder, so doctor verifies exactly what the daemon will.
        version = _handshake(mqtt, tls_context(mqtt.tls), timeout_s)
    except BrokerError as exc:
        return failed(
            name,
            str(exc),
            "check mqtt.tls.ca_file, cert_file and key_file: they must exist and be readable "
            "by this user",
        )
    except ssl.SSLCertVerificationError as exc:
        return failed(
            name, f"the broker's certificate is not trusted: {exc.verify_message}", _TLS_TRUST_FIX
        )
    except OSError as exc:  # ssl.SSLError is one; so is a connection the broker drops mid-way
        return failed(
            name,
            f"the TLS handshake with {mqtt.host}:{mqtt.port} failed: {_ssl_reason(exc)}",
            _TLS_PORT_FIX,
        )
    if mqtt.tls.insecure_skip_verify:
        return warning(
            name,
            f"{version}, but the certificate is not checked (mqtt.tls.insecure_skip_verify)",
            "set mqtt.tls.ca_file to the broker's CA and turn insecure_skip_verify off",
        )
    return passed(name, f"{version}, certificate verified for {mqtt.host}")


_TLS_TRUST_FIX = (
    "set mqtt.tls.ca_file to the CA that signed the broker's certificate, and use the host name "
    "the certificate was issued for as mqtt.host"
)
_TLS_PORT_FIX = (
    "check that mqtt.port is the broker's TLS listener (usually 8883) and, if the broker asks "
    "for client certificates, set mqtt.tls.cert_file and key_file; for a plain listener set "
    "mqtt.tls.enabled: false"
)


def _tls_off(mqtt: MqttConfig) -> Check:
    if _is_loopback(mqtt.host):
        return passed("broker TLS", "off (the broker is on this machine)")
    # Not a failure: many home networks run plain MQTT. But the password travels in clear.
    return warning(
        "broker TLS",
        f"off: the daemon's broker password crosses the network to {mqtt.host} in clear",
        "give the broker a TLS listener (port 8883) and set mqtt.tls.enabled: true",
    )


def _handshake(mqtt: MqttConfig, context: ssl.SSLContext, timeout_s: float) -> str:
    with (
        socket.create_connection((mqtt.host, mqtt.port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=mqtt.host) as tls,
    ):
        return tls.version() or "TLS"


def _ssl_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class Connack:
    """The broker's answer to a CONNECT: a reason `code` (None when none came) and its name."""

    code: int | None
    reason: str


def probe_connack(mqtt: MqttConfig, *, timeout_s: float) -> Connack:
    """CONNECT with the daemon's credentials, wait for the CONNACK, disconnect at once."""
    client = _probe_client(mqtt)
    answers: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive)
    except (OSError, ValueError) as exc:
        return Connack(None, f"could not connect: {exc}")
    try:
        return _await_connack(client, answers, timeout_s)
    finally:
        client.disconnect()
        client.loop(timeout=0.05)  # lets paho send DISCONNECT and close its socket


def _probe_client(mqtt: MqttConfig) -> paho.Client:
    v5 = mqtt.protocol == "5"
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        # Never the daemon's client id: the broker would disconnect the running daemon for it.
        client_id=f"{mqtt.client_id}-doctor-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    if mqtt.username is not None:
        secret = mqtt.password.get_secret_value() if mqtt.password else None
        client.username_pw_set(mqtt.username, secret)
    if mqtt.tls.enabled:
        client.tls_set_context(tls_context(mqtt.tls))
    return client


def _await_connack(client: paho.Client, answers: list[Any], timeout_s: float) -> Connack:
    # Driving paho's loop from this thread: no network thread to start, join or leak.
    deadline = time.monotonic() + timeout_s
    while not answers and time.monotonic() < deadline:
        if client.loop(timeout=0.1) != paho.MQTT_ERR_SUCCESS and not answers:
            return Connack(None, "the broker closed the connection without a CONNACK")
    if not answers:
        return Connack(None, f"no CONNACK within {timeout_s:g} s")
    reason = answers[0]
    return Connack(int(reason.value), str(reason))


# MQTT 5 CONNACK reason codes; paho turns the 3.1.1 return codes into these (4 → 134, 5 → 135).
BAD_CREDENTIALS, NOT_AUTHORISED, BAD_PROTOCOL, BAD_CLIENT_ID = 134, 135, 132, 133
UNAVAILABLE, BUSY, BANNED, BAD_AUTH_METHOD = 136, 137, 138, 140

_CREDENTIALS_FIX = (
    "check mqtt.username and mqtt.password (or OWNERLINK_MQTT__PASSWORD). A password_file broker: "
    "mosquitto_passwd -b FILE USER PASSWORD, then reload Mosquitto. dynsec: `ownerlink apps sync` "
    "creates a missing daemon login but never resets one: "
    "mosquitto_ctrl dynsec setClientPassword USER"
)
_CONNACK_ADVICE: dict[int, tuple[str, str]] = {
    BAD_PROTOCOL: ("the broker does not speak MQTT 5", "set mqtt.protocol: '3.1.1'"),
    BAD_CLIENT_ID: (
        "the broker refused the client id",
        "check the broker's clientid_prefixes against mqtt.client_id",
    ),
    UNAVAILABLE: ("the broker is unavailable", "check the broker's log, then run doctor again"),
    BUSY: ("the broker is busy", "run doctor again in a minute; check the broker's log"),
    BANNED: ("the broker has banned this client", "check the broker's configuration and log"),
    BAD_AUTH_METHOD: (
        "the broker wants another way to authenticate",
        "check the broker's listener settings (client certificates: mqtt.tls.cert_file)",
    ),
}


def judge_connack(connack: Connack, mqtt: MqttConfig) -> Check:
    """The CONNACK as a check, with advice for each kind of refusal."""
    name = "broker login"
    who = repr(mqtt.username) if mqtt.username else "an anonymous client"
    if connack.code == 0:
        return passed(name, f"the broker accepted {who}")
    if connack.code is None:
        return failed(name, f"{connack.reason}", _NO_CONNACK_FIX)
    if connack.code == BAD_CREDENTIALS:
        return failed(name, f"the broker refused the password of {who}", _CREDENTIALS_FIX)
    if connack.code == NOT_AUTHORISED:
        return _not_authorised(mqtt, who)
    what, fix = _CONNACK_ADVICE.get(connack.code, ("refused", "see the broker's log for why"))
    return failed(name, f"{what} ({connack.reason}, code {connack.code})", fix)


_NO_CONNACK_FIX = (
    "check that mqtt.port is an MQTT listener; if it is the TLS listener (usually 8883), "
    "set mqtt.tls.enabled: true"
)


def _not_authorised(mqtt: MqttConfig, who: str) -> Check:
    # Mosquitto answers "not authorised" both to anonymous clients it does not allow and, over
    # MQTT 3.1.1, to a wrong password: say which case this is.
    if mqtt.username is None:
        return failed(
            "broker login",
            "the broker requires a login and none is configured",
            "set mqtt.username and mqtt.password (the password best in OWNERLINK_MQTT__PASSWORD)",
        )
    return failed(
        "broker login",
        f"the broker refused {who}: not authorised (wrong password, or a user it does not allow)",
        _CREDENTIALS_FIX,
    )


def check_enforcement(mqtt: MqttConfig, *, timeout_s: float) -> Check:
    """The mode in mqtt.enforcement actually works on this broker."""
    if mqtt.enforcement == "dynsec":
        return check_dynsec(mqtt, timeout_s=timeout_s)
    if mqtt.enforcement == "acl-file":
        return check_acl_files(mqtt)
    return warning(
        "broker enforcement",
        "mode none: any client the broker lets in can read vehicle state and publish to command "
        "topics (Ownerlink still checks each app's scopes)",
        "set mqtt.enforcement: dynsec (Mosquitto's dynamic-security plugin) or acl-file",
    )


def check_dynsec(mqtt: MqttConfig, *, timeout_s: float) -> Check:
    """The admin login works and the plugin answers a `listClients`."""
    name = "broker enforcement"
    if not mqtt.admin_username or mqtt.admin_password is None:
        return failed(
            name,
            "mode dynsec, but no broker admin login is configured",
            "set mqtt.admin_username and mqtt.admin_password (the login made by "
            "`mosquitto_ctrl dynsec init`)",
        )
    try:
        reply = _list_clients(mqtt, mqtt.admin_username, mqtt.admin_password, timeout_s)
    except BrokerError as exc:
        return failed(name, f"mode dynsec: {exc}", _dynsec_fix(str(exc)))
    if reply.error:
        return failed(name, f"mode dynsec: listClients refused: {reply.error}", _DYNSEC_ADMIN_FIX)
    total = reply.data.get("totalCount", len(reply.data.get("clients", [])))
    return passed(
        name, f"mode dynsec: the plugin answered {mqtt.admin_username!r} ({total} clients)"
    )


_DYNSEC_ADMIN_FIX = (
    "check mqtt.admin_username and mqtt.admin_password: the broker's dynamic-security admin "
    "(made by `mosquitto_ctrl dynsec init`), which needs the `admin` role"
)
_DYNSEC_PLUGIN_FIX = (
    "load the plugin in mosquitto.conf (plugin /usr/lib/…/mosquitto_dynamic_security.so and "
    "plugin_opt_config_file …/dynamic-security.json), restart Mosquitto, and give the admin "
    "login the `admin` role"
)


def _list_clients(
    mqtt: MqttConfig, username: str, password: SecretStr, timeout_s: float
) -> DynsecReply:
    connection = Connection.from_config(
        mqtt,
        username=username,
        password=password.get_secret_value(),
        # Like the CLI's admin connections: unique, so no other admin session is dropped.
        client_id=f"{mqtt.client_id}-doctor-admin-{uuid.uuid4().hex[:6]}",
    )
    control = DynsecControl(connection=connection, timeout_s=timeout_s)
    try:
        return control.execute([{"command": "listClients", "count": -1}])[0]
    finally:
        control.stop()


def _dynsec_fix(message: str) -> str:
    return _DYNSEC_ADMIN_FIX if "refused" in message else _DYNSEC_PLUGIN_FIX


def check_acl_files(mqtt: MqttConfig) -> Check:
    """The rendered password and ACL files exist (and hold the daemon's login)."""
    name = "broker enforcement"
    if mqtt.acl_dir is None:
        return failed(
            name,
            "mode acl-file, but mqtt.acl_dir is not set",
            "set mqtt.acl_dir to the folder Mosquitto reads its password and ACL files from",
        )
    users, acl = mqtt.acl_dir / USERS_FILE, mqtt.acl_dir / ACL_FILE
    missing = [str(p) for p in (users, acl) if not p.is_file()]
    if missing:
        return failed(name, f"mode acl-file: {', '.join(missing)} missing", _ACL_RENDER_FIX)
    if mqtt.username and not _has_user(users, mqtt.username):
        return failed(
            name,
            f"mode acl-file: the daemon's login {mqtt.username!r} is not in {users}",
            _ACL_RENDER_FIX,
        )
    return passed(
        name,
        f"mode acl-file: {users} and {acl} rendered (Mosquitto loads them as "
        "password_file and acl_file on reload)",
    )


_ACL_RENDER_FIX = (
    "run: ownerlink apps sync (renders both files), point Mosquitto's password_file and acl_file "
    "at them and reload it: kill -HUP $(pidof mosquitto)"
)


def _has_user(users: Path, username: str) -> bool:
    try:
        lines = users.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return any(line.partition(":")[0] == username for line in lines)


# -- logins (tokens) ------------------------------------------------------------------------------


def check_tokens(account: str, store: TokenStore, now: datetime) -> Check:
    """The account's token file: present, readable, and whether polling can go on."""
    try:
        stored = store.load(account)
    except StateError as exc:
        return failed(
            f"tokens: {account}",
            str(exc),
            f"chmod 600 {store.path(account)}; if the file is damaged: {relogin(account)}",
        )
    except OSError as exc:  # the state directory belongs to someone else
        return failed(f"tokens: {account}", f"cannot read: {exc.strerror}", _AS_DAEMON_USER)
    return judge_tokens(account, stored, now)


def judge_tokens(account: str, stored: StoredTokens | None, now: datetime) -> Check:
    """Pure: what a token file means for the daemon at `now`."""
    name, at = f"tokens: {account}", now.timestamp()
    if stored is None:
        return failed(name, "not logged in (no token file)", relogin(account))
    if stored.relogin_needed:
        return failed(name, "re-login needed: Ford refused the stored login", relogin(account))
    dead = _unusable(stored, at)
    if dead is not None:
        return failed(name, dead, relogin(account))
    detail = f"{_access_text(stored, at)}; {_refresh_text(stored, at)}"
    ends = stored.refresh_expires_at
    if ends is not None and ends - at < RELOGIN_WARNING.total_seconds():
        return warning(name, detail, f"log in again before it expires: ownerlink login {account}")
    return passed(name, detail)


def _unusable(stored: StoredTokens, at: float) -> str | None:
    """Why these tokens cannot get the daemon a working access token, or None."""
    access_dead = stored.access_token is None or stored.expires_at <= at
    if stored.refresh_token is None and access_dead:
        return "the access token has expired and there is no refresh token"
    ends = stored.refresh_expires_at
    if ends is not None and ends <= at:
        return f"the refresh token expired {_span(at - ends)} ago"
    return None


def _access_text(stored: StoredTokens, at: float) -> str:
    if stored.access_token is None or stored.expires_at <= at:
        # Normal: access tokens live 20 minutes and are refreshed when next needed.
        return "access token expired (renewed on next use)"
    return f"access token valid for {_span(stored.expires_at - at)}"


def _refresh_text(stored: StoredTokens, at: float) -> str:
    if stored.refresh_expires_at is None:
        return "refresh token present (Ford did not say when it expires)"
    return f"refresh token expires in {_span(stored.refresh_expires_at - at)}"


# -- the provider (answers gathered by the CLI) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What one request without credentials to a provider URL got back."""

    label: str  # "API" or "token endpoint"
    url: str
    received_at: datetime  # local clock when the answer arrived
    status: int | None = None
    server_date: datetime | None = None  # the server's `Date` header
    error: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def skew_s(self) -> float | None:
        """How far the local clock is ahead of the server's (negative: behind)."""
        if self.server_date is None:
            return None
        return (self.received_at - self.server_date).total_seconds()


def check_provider(account: str, answers: Sequence[HttpAnswer]) -> Check:
    """Pure: the account's API and token endpoint answered (any HTTP status below 500)."""
    name = f"provider: {account}"
    broken = [a for a in answers if a.error is not None]
    if broken:
        return failed(
            name,
            "; ".join(f"{a.label} {a.host}: {a.error}" for a in broken),
            "check this machine's internet access, DNS, proxy and firewall; if api_base_url or "
            "token_url are set for this account, check them",
        )
    down = [a for a in answers if a.status is not None and a.status >= 500]
    if down:
        return warning(
            name,
            "; ".join(f"{a.label} {a.host} answers HTTP {a.status}" for a in down),
            "nothing to fix here: the car maker's service is in trouble; the daemon backs off "
            "and retries",
        )
    seen = ", ".join(f"{a.label} {a.host} HTTP {a.status}" for a in answers)
    return passed(name, f"{seen} (asked without a token: no budget spent)")


def check_clock(answers: Sequence[HttpAnswer]) -> Check:
    """Pure: the local clock against the servers' `Date` headers; more than 30 s off fails."""
    dated = [a for a in answers if a.skew_s is not None]
    if not dated:
        return warning(
            "clock",
            "no server answered with a Date header, so the clock was not compared",
            "check that time sync runs: timedatectl status (or chronyc tracking)",
        )
    worst = max(dated, key=lambda a: abs(a.skew_s or 0.0))
    skew = worst.skew_s or 0.0
    if abs(skew) <= MAX_CLOCK_SKEW_S:
        return passed("clock", f"within {abs(skew):.0f} s of {worst.host}")
    direction = "ahead of" if skew > 0 else "behind"
    return failed(
        "clock",
        f"this machine's clock is {_span(abs(skew))} {direction} {worst.host} "
        f"(more than {MAX_CLOCK_SKEW_S:g} s): step-up codes and token expiry go wrong",
        "turn on time sync: sudo timedatectl set-ntp true (or install chrony); in a container, "
        "fix the host's clock",
    )


def judge_online(account: str, error: ProviderError | None, vehicles: int) -> Check:
    """Pure: the outcome of `--online`'s one list-vehicles call."""
    name = f"online: {account}"
    if error is None:
        return passed(name, f"listed {_plural(vehicles, 'vehicle')}; 1 call charged to the budget")
    if isinstance(error, ReauthRequired):
        return failed(name, str(error), relogin(account))
    if isinstance(error, BudgetExhausted):
        return warning(name, "not asked: the call budget is used up", _BUDGET_FIX)
    if isinstance(error, RateLimited):
        return failed(
            name,
            f"Ford is throttling this account (retry after {error.retry_after:g} s)",
            _SHARED_ACCOUNT_FIX,
        )
    if isinstance(error, Forbidden):
        return failed(
            name,
            f"Ford refused the account: {error}",
            "if Ford suspended it for too many calls, wait it out (often a day); "
            + _SHARED_ACCOUNT_FIX,
        )
    return failed(
        name,
        str(error),
        "run doctor again later; if it persists, check the account's "
        "api_base_url and the car maker's status page",
    )


_SHARED_ACCOUNT_FIX = (
    "stop other integrations that poll the same Ford login, and keep budget.calls_per_day at or "
    "below 250"
)
_BUDGET_FIX = (
    "nothing to do: polling resumes by itself and commands keep their reserve; raising "
    "budget.calls_per_day risks Ford suspending the account"
)


# -- budget and audit -----------------------------------------------------------------------------


def check_budgets(settings: Settings, now: datetime) -> list[Check]:
    """Each account's calls in the rolling day, read from the state database."""
    path = settings.state_dir / DB_NAME
    if not settings.accounts:
        return []
    st = _stat(path)
    if st is not None and stat.S_IMODE(st.st_mode) & PRIVATE_MODE_BITS:
        # Opening it the daemon's way would chmod it 0600 and hide what `private files` reported.
        return [warning("budget", "not read until the state database is private again")]
    try:
        usages = _read_usages(settings, path, now)
    except (StateError, sqlite3.Error, OSError) as exc:
        return [failed("budget", f"cannot read the budget: {exc}", _DB_FIX)]
    return [judge_budget(name, usages.get(name)) for name in settings.accounts]


def _read_usages(settings: Settings, path: Path, now: datetime) -> dict[str, BudgetUsage]:
    if not path.exists() or ("budget",) not in _read_db(path, "SELECT part FROM schema_versions"):
        return {}
    # Budget.usage needs the daemon's Store (a write lock, briefly); on an existing database its
    # connect() only re-asserts pragmas and the 0600 mode checked above, and nothing is migrated.
    store = Store(path)
    store.connect()
    try:
        budget = Budget(store=store, config=settings.budget, alerts=CollectingAlerts())
        return {name: budget.usage(name, now) for name in settings.accounts}
    finally:
        store.close()


def judge_budget(account: str, usage: BudgetUsage | None) -> Check:
    """Pure: used and left in the rolling 24 hours; reads used up is a warning, not a failure."""
    name = f"budget: {account}"
    if usage is None or usage.used_day == 0:
        return passed(name, "no calls in the last 24 h")
    day, hour = usage.day, usage.hour
    detail = (
        f"{day.used} of {day.limit} calls used in the last 24 h ({day.left} left); "
        f"{hour.used} of {hour.limit} in the last hour"
    )
    if usage.reads_left == 0:
        # The rest is the command reserve: polling stops, commands still go through.
        resume = usage.next_free_at.strftime("%H:%M UTC")
        return warning(name, f"{detail}; polling paused until {resume}", _BUDGET_FIX)
    return passed(name, detail)


def audit_directories(state_dir: Path) -> list[Path]:
    """Where audit files are: the state directory (as `ownerlink apps` writes) or `audit/`."""
    return [d for d in (state_dir, state_dir / "audit") if can_look_inside(d) and chain_files(d)]


def check_audit(state_dir: Path) -> Check:
    """Every record's hash and link verifies; a failure names the first bad record."""
    name = "audit log"
    if _stat(state_dir) is not None and not can_look_inside(state_dir):
        return failed(name, f"cannot read {state_dir}", _AS_DAEMON_USER)
    directories = audit_directories(state_dir)
    if not directories:
        return passed(name, "no records yet")
    reports = []
    for directory in directories:
        try:
            report = verify(directory)
        except OSError as exc:
            return failed(name, f"cannot read {directory}: {exc.strerror or exc}", _AS_DAEMON_USER)
        if report.problem is not None:
            return failed(name, f"broken at {report.problem.describe()}", _AUDIT_FIX)
        reports.append(report)
    return passed(name, "; ".join(_intact(report) for report in reports))


def _intact(report: Report) -> str:
    seq, value = report.head
    text = f"intact: {_plural(report.records, 'record')} in {_plural(report.files, 'file')}"
    # A hash prefix is enough to compare by eye with the head published on the broker.
    text += f", head {seq}:{value[:12]}…" if value else ""
    return "; ".join([text, *report.notes])


_AUDIT_FIX = (
    "keep the files as evidence and find out who changed them (`ownerlink audit verify` shows "
    "the same); the daemon will not append to a broken chain: to start a new one, stop it and "
    "move the audit files into a dated folder"
)


# -- small helpers --------------------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _span(seconds: float) -> str:
    """A duration the way a person says it: 40 s, 14 min, 3 h, 89 days."""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _hhmm(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M UTC")


def _stat(path: Path) -> os.stat_result | None:
    """The path's status, or None when it is missing or out of reach (never raises)."""
    try:
        return path.stat()
    except OSError:
        return None


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
