"""Broker checks: TCP, TLS, the daemon's CONNACK, enforcement (the one doctor module with paho)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from bridge.access.aclfile import ACL_FILE, USERS_FILE
from bridge.access.broker import acl_directory
from bridge.access.control import Connection, DynsecControl, DynsecReply
from bridge.config import MqttConfig
from bridge.doctor.model import Check, failed, passed, warning
from bridge.errors import BrokerError
from bridge.mqtt.client import tls_context


def check_broker(mqtt: MqttConfig, *, timeout_s: float, state_dir: Path) -> list[Check]:
    """Reachable, TLS, the daemon's login, then enforcement; stops where later steps cannot work."""
    reach = check_broker_reachable(mqtt, timeout_s=timeout_s)
    if not reach.ok:
        return [reach]
    tls = check_broker_tls(mqtt, timeout_s=timeout_s)
    if tls.ok is False:
        return [reach, tls]
    login = judge_connack(probe_connack(mqtt, timeout_s=timeout_s), mqtt)
    return [reach, tls, login, check_enforcement(mqtt, timeout_s=timeout_s, state_dir=state_dir)]


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


def check_enforcement(mqtt: MqttConfig, *, timeout_s: float, state_dir: Path) -> Check:
    """The mode in mqtt.enforcement actually works on this broker."""
    if mqtt.enforcement == "dynsec":
        return check_dynsec(mqtt, timeout_s=timeout_s)
    if mqtt.enforcement == "acl-file":
        return check_acl_files(mqtt, state_dir=state_dir)
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


def check_acl_files(mqtt: MqttConfig, *, state_dir: Path) -> Check:
    """The rendered password and ACL files exist where the daemon writes them (mqtt.acl_dir, else
    `<state_dir>/mosquitto`) and hold the daemon's login."""
    name = "broker enforcement"
    directory = acl_directory(mqtt, state_dir)
    users, acl = directory / USERS_FILE, directory / ACL_FILE
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
