"""The configuration: the example validates, every bad input names its key, precedence holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

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
        # A read scope guarded nothing, yet read as if the car's location needed the code.
        (
            "stepup:\n  required_for: [read:location, command:unlock]\n",
            "stepup.required_for: Value error, read:location: only command scopes can need",
        ),
        (
            "commands:\n  max_age_s: 600\n  dedup_window_s: 300\n",
            "commands.dedup_window_s: must be at least commands.max_age_s (600)",
        ),
        # Durations past any sensible value overflowed a datetime in `ownerlink run`.
        ("polling:\n  stale_after_s: 1e12\n", "polling.stale_after_s: Input should be less than"),
        ("polling:\n  stale_after_s: .inf\n", "polling.stale_after_s: Input should be a finite"),
        ("stepup:\n  lockout_s: .nan\n", "stepup.lockout_s: Input should be a finite number"),
        ("mqtt:\n  port: true\n", "mqtt.port: Input should be a number, not true or false"),
        ("mqtt:\n  protocol: 4\n", "mqtt.protocol: Input should be '5' or '3.1.1'"),
        ("mqtt:\n  protocol: 5.0\n", "mqtt.protocol: Input should be '5' or '3.1.1'"),
        (
            "polling:\n  parked_min_interval_s: 7200\n  parked_max_interval_s: 3600\n",
            "polling.parked_min_interval_s: must be at most polling.parked_max_interval_s (3600)",
        ),
        (
            "mqtt:\n  reconnect_min_s: 30\n  reconnect_max_s: 10\n",
            "mqtt.reconnect_min_s: must be at most mqtt.reconnect_max_s (10)",
        ),
        (
            "budget:\n  calls_per_day: 100\n  calls_per_hour: 101\n",
            "budget.calls_per_hour: must be at most budget.calls_per_day (100)",
        ),
        # Found at the first connection before, exiting 1 without the key.
        (
            "mqtt:\n  tls: {enabled: true, ca_file: /nonexistent/ca.pem}\n",
            "mqtt.tls.ca_file: cannot read /nonexistent/ca.pem: No such file or directory",
        ),
        (
            "mqtt:\n  tls: {enabled: true, ca_file: /}\n",
            "mqtt.tls.ca_file: cannot read /: Is a directory",
        ),
        (
            "mqtt:\n  tls: {enabled: true, key_file: /etc/hostname}\n",
            "mqtt.tls.key_file: set cert_file too",
        ),
        # Accepted as the current directory before (the file system's root under systemd).
        ('state_dir: ""\n', "state_dir: Value error, give a directory"),
        # Failed only when the first alert was sent.
        ("alerts:\n  webhook_url: ftp://x\n", "alerts.webhook_url: Value error, not an http://"),
        # Each passed `config check`, then was a traceback (or a restart loop) in a command.
        ('web:\n  public_url: "http://[::1"\n', "web.public_url: Value error, not a valid URL"),
        (
            "accounts:\n  ford: {client_id: i, client_secret: s, token_url: 'http://127.0.0.1:80a/x'}\n",
            "accounts.ford.token_url: Value error, the URL's port must be a number from 1 to 65535",
        ),
        (
            "accounts:\n  ford: {client_id: i, client_secret: s, redirect_uri: 'http://127.0.0.1:99999/cb'}\n",
            "accounts.ford.redirect_uri: Value error, the URL's port must be a number",
        ),
        (
            "accounts:\n  ford: {client_id: i, client_secret: s, api_base_url: 'https://x:99999/v1'}\n",
            "accounts.ford.api_base_url: Value error, the URL's port must be a number",
        ),
        (
            "accounts:\n  ford: {client_id: i, client_secret: s, authorize_url: 'https://'}\n",
            "accounts.ford.authorize_url: Value error, not an http:// or https:// URL",
        ),
        (
            "alerts:\n  webhook_url: 'http://h:99999/'\n",
            "alerts.webhook_url: Value error, the URL's p",
        ),
        ("alerts:\n  webhook_url: 'http://h:0/'\n", "alerts.webhook_url: Value error, the URL's p"),
        (
            "alerts:\n  webhook_url: 'http://a b/'\n",
            "alerts.webhook_url: Value error, the URL conta",
        ),
        (
            "alerts:\n  webhook_url: 'http://999.1.1.1/'\n",
            "alerts.webhook_url: Value error, the URL's h",
        ),
        (
            "alerts:\n  webhook_url: 'http://h!x/'\n",
            "alerts.webhook_url: Value error, the URL's host",
        ),
        ('mqtt:\n  host: ""\n', "mqtt.host: Value error, '' is not a host name or an IP address"),
        (
            'mqtt:\n  host: "192.168.1.10:1883"\n',
            "mqtt.host: Value error, '192.168.1.10:1883' is not a host name or an IP address",
        ),
        ("mqtt:\n  host: mqtt://broker\n", "mqtt.host: Value error, 'mqtt://broker' is not a"),
        ("mqtt:\n  host: '[::1]'\n", "mqtt.host: Value error, '[::1]' is not a host name"),
        ("web:\n  host: ''\n", "web.host: Value error, '' is not a host name or an IP address"),
        # Home Assistant's app may read the discovery prefix: the car's topics must be elsewhere.
        (
            "mqtt:\n  base_topic: homeassistant/ownerlink\n",
            "mqtt.base_topic: must not be 'homeassistant' or under it",
        ),
        (
            "mqtt:\n  base_topic: cars\n  discovery_prefix: cars\n",
            "mqtt.base_topic: must not be 'cars' or under it",
        ),
        # An app under the daemon's login would get its access, and its revocation delete it.
        (
            "mqtt:\n  username: Bridge\napps:\n  bridge: {scopes: [read:status]}\n",
            "apps.bridge: 'Bridge' is the bridge's own broker login",
        ),
        (
            "mqtt:\n  admin_username: boss\napps:\n  boss: {scopes: [read:status]}\n",
            "apps.boss: 'boss' is the bridge's own broker login",
        ),
        # The registry refused these when the daemon imported them: exit 1 at every start.
        ("apps:\n  Owner: {}\n", "apps.Owner: reserved for the owner or the daemon"),
        (
            "apps:\n  Dash: {}\n  dash: {}\n",
            "apps.dash: the same broker login as apps.Dash (logins ignore case)",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of bad value is reported as `path.to.key: what is wrong`."""
    assert any(line.startswith(expected) for line in problems_for(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # pydantic's words named Python types: "a valid frozenset", "instance of VehicleConfig".
        ("apps:\n  x:\n    scopes: read:status\n", "apps.x.scopes: must be a list, e.g. [a, b]"),
        ("web:\n  allow_cidrs: 10.0.0.0/8\n", "web.allow_cidrs: must be a list, e.g. [a, b]"),
        ("vehicles:\n  car:\n", "vehicles.car: must be a section of `key: value` lines (it is "),
        ("mqtt: [1, 2]\n", "mqtt: must be a section of `key: value` lines"),
        ("state_dir:\n", "state_dir: must be a path (it is empty)"),
        ("accounts:\n  Ford: {client_id: a, client_secret: b}\n", "accounts.Ford: not a usable "),
        ("apps:\n  a.b: {}\n", "apps.a.b: not a usable name: use letters, digits, - and _"),
    ],
)
def test_a_value_of_the_wrong_shape_says_what_the_yaml_should_be(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = problems_for(tmp_path, text)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    assert not any(word in problems[0] for word in ("frozenset", "tuple", "instance", "[key]"))


def test_a_section_left_empty_means_its_defaults(tmp_path: Path) -> None:
    """`mqtt:` with every key under it commented out is YAML null: it was an error naming
    pydantic's MqttConfig, where a missing section means the defaults."""
    path = tmp_path / "config.yaml"
    path.write_text("mqtt:\n  # host: broker\n  tls:\naccounts:\napps:\nvehicles:\nweb:\n")
    settings = load_config(path)
    assert settings.mqtt.host == "127.0.0.1" and not settings.mqtt.tls.enabled
    assert (settings.accounts, settings.apps, settings.vehicles) == ({}, {}, {})


V1_ACCOUNT = "  home: {client_id: a, client_secret: b}\n"
QUERY_ACCOUNT = "  q: {provider: fordconnect-query, client_id: a, client_secret: b}\n"


@pytest.mark.parametrize(
    ("vehicles", "expected"),
    [
        (
            "  a: {account: home, id: 0c697ebfdf5599e3b4538451e24cfc73}\n"
            "  b: {account: home, id: 0c697ebfdf5599e3b4538451e24cfc73}\n",
            "vehicles.b: the same car as vehicles.a (the same id on the same account)",
        ),
        (
            "  a: {account: home}\n  b: {account: home}\n",
            "vehicles.b: the same car as vehicles.a (neither names an id: give each the id of "
            "its car)",
        ),
        (
            "  a: {account: q}\n  b: {account: q, id: other}\n",
            "vehicles.b: the same car as vehicles.a (account q is a Query login, which is one car)",
        ),
    ],
)
def test_one_car_under_two_aliases_is_refused(tmp_path: Path, vehicles: str, expected: str) -> None:
    """Both aliases were bridged: the car polled twice from one budget and shown twice."""
    text = f"accounts:\n{V1_ACCOUNT}{QUERY_ACCOUNT}vehicles:\n{vehicles}"
    assert problems_for(tmp_path, text) == [expected]


def test_an_alias_or_a_name_that_looks_like_a_vin_is_refused(tmp_path: Path) -> None:
    """The alias is in every topic of the car and its name in Home Assistant's discovery: a VIN
    there (lower-cased to pass as an alias) was published, though owners are told never to."""
    from bridge.simulator import Simulator

    vin = Simulator(vehicles=1, seed=1).vehicles[0].vin
    text = (
        f"accounts:\n{V1_ACCOUNT}vehicles:\n"
        f"  {vin.lower()}: {{account: home, id: 0c697ebfdf5599e3b4538451e24cfc73}}\n"
        f"  car: {{account: home, id: 38d4b8af56ca5975345c36bf8a422a11, name: {vin}}}\n"
        "  f150-lightning-ev: {account: home, id: 3d20220a11530ea5ea8e85be8fd74cad, "
        "name: F-150 Lightning}\n"
    )
    advice = "it looks like a VIN, which would be published; choose a name such as `mache`"
    assert problems_for(tmp_path, text) == [
        f"vehicles.{vin.lower()}: {advice}",
        f"vehicles.car.name: {advice}",
    ]


def test_different_cars_on_one_account_or_one_car_each_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"accounts:\n{V1_ACCOUNT}{QUERY_ACCOUNT}vehicles:\n"
        "  a: {account: home, id: 0c697ebfdf5599e3b4538451e24cfc73}\n"
        "  b: {account: home, id: 38d4b8af56ca5975345c36bf8a422a11}\n"
        "  c: {account: q}\n"
    )
    assert sorted(load_config(path).vehicles) == ["a", "b", "c"]


GOOD_URLS = [
    "http://127.0.0.1:8765/oauth/token",
    "https://api.mps.ford.com/api/fordconnect/vehicles/v1",
    "http://[::1]:8088/",
    "https://[fe80::1%25eth0]/x",
    "https://user:pass@hooks.example/x?token=abc#frag",
    "http://localhost",
    "https://ownerlink.home.arpa:8443/prefix/",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_good_urls_are_accepted_and_every_url_user_can_parse_them(tmp_path: Path, url: str) -> None:
    """Valid URLs pass for every URL key, and what passes is what urllib and httpx both take
    (the daemon's HTTP client, the login listener and the host guard)."""
    import httpx

    account = {"client_id": "i", "client_secret": "s"}
    for key in ("redirect_uri", "authorize_url", "token_url", "api_base_url"):
        account[key] = url
    document = {"accounts": {"ford": account}, "alerts": {"webhook_url": url}}
    document["web"] = {"public_url": url}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    settings = load_config(path)
    assert settings.alerts.webhook_url == settings.web.public_url == url
    parts = urlsplit(url)
    assert parts.hostname and 0 < (parts.port or 80) <= 65535
    assert httpx.URL(url).host


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "core-mosquitto", "mqtt_broker", "broker.home.arpa", "h"]
)
def test_hosts_are_names_or_addresses(tmp_path: Path, host: str) -> None:
    """A host name or an IP address (IPv6 without brackets) is a host for mqtt and web."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"mqtt": {"host": host}, "web": {"host": host}}))
    settings = load_config(path)
    assert settings.mqtt.host == settings.web.host == host


def test_a_bad_url_is_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook URL's query or user info may hold its token: the error names the key only."""
    url = "https://user:hunter2@hooks.example:99999/x?token=s3cr3t"
    problems = problems_for(tmp_path, f"alerts:\n  webhook_url: '{url}'\n")
    assert problems == [
        "alerts.webhook_url: Value error, the URL's port must be a number from 1 to 65535"
    ]
    monkeypatch.setenv("OWNERLINK_ALERTS__WEBHOOK_URL", "ftp://hooks.example/x?token=s3cr3t")
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    assert caught.value.problems == [
        "alerts.webhook_url: Value error, not an http:// or https:// URL"
        " (set by OWNERLINK_ALERTS__WEBHOOK_URL)"
    ]


def test_tls_files_that_are_not_what_they_claim_name_their_key(tmp_path: Path) -> None:
    """A CA bundle without a certificate, and a client certificate TLS cannot load (here not a
    certificate at all), are refused at load time, each with its key."""
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    bad_ca = f"mqtt:\n  tls: {{enabled: true, ca_file: {text}}}\n"
    assert problems_for(tmp_path, bad_ca)[0].startswith(
        f"mqtt.tls.ca_file: {text} holds no usable CA certificate"
    )
    bad_cert = f"mqtt:\n  tls: {{enabled: true, cert_file: {text}, key_file: {text}}}\n"
    assert problems_for(tmp_path, bad_cert)[0].startswith(
        f"mqtt.tls.cert_file: cannot load {text} with key_file"
    )
    unused = tmp_path / "off.yaml"
    unused.write_text("mqtt:\n  tls: {enabled: false, ca_file: /nonexistent/ca.pem}\n")
    assert load_config(unused).mqtt.tls.enabled is False  # TLS off: the files are not read


def _self_signed(directory: Path) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost"
    subprocess.run(
        ["openssl", *request.split(), "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_the_pages_certificate_and_key_are_checked_at_load(tmp_path: Path) -> None:
    """web.tls_cert and web.tls_key: both or neither, readable and a pair, each problem naming
    its key when the config loads (they were found only once `run` had started)."""
    cert, key = _self_signed(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a certificate\n")
    cases = {
        f"web: {{tls_cert: {cert}}}": "web.tls_key: set it",
        f"web: {{tls_key: {key}}}": "web.tls_key: set tls_cert too",
        f"web: {{tls_cert: /nonexistent/c.pem, tls_key: {key}}}": "web.tls_cert: cannot read",
        f"web: {{tls_cert: {cert}, tls_key: /nonexistent/k.pem}}": "web.tls_key: cannot read",
        f"web: {{tls_cert: {notes}, tls_key: {key}}}": f"web.tls_cert: cannot load {notes} with",
        f"web: {{enabled: false, tls_cert: {cert}}}": "web.tls_key: set it",  # metrics-only
    }
    for text, expected in cases.items():
        assert problems_for(tmp_path, text + "\n")[0].startswith(expected), text
    good = tmp_path / "good.yaml"
    good.write_text(f"web: {{tls_cert: {cert}, tls_key: {key}}}\n")
    assert load_config(good).web.tls_key == key


def test_an_encrypted_key_is_named_without_a_prompt(tmp_path: Path) -> None:
    """A key with a pass phrase is a config error naming web.tls_key (exit 2 territory), never a
    prompt on the terminal or an OSError traceback under systemd."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "enc.crt", tmp_path / "enc.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-subj", "/CN=x", "-days", "1"),
            *("-passout", "pass:secret", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    text = f"web: {{tls_cert: {cert}, tls_key: {key}}}\n"
    assert problems_for(tmp_path, text)[0].startswith(f"web.tls_key: {key} is encrypted")


def test_a_redirect_uri_may_use_an_apps_own_scheme() -> None:
    """Ford redirects to whatever the developer registered: `myapp://…` (pasted back by hand)
    is accepted; a URL with no scheme or a bad http one is still refused."""
    account = {"client_id": "i", "client_secret": "s"}
    for uri in ("fordapp://userauthorized", "https://localhost:3000"):
        accounts = {"ford": {**account, "redirect_uri": uri}}
        assert Settings.model_validate({"accounts": accounts}).accounts["ford"].redirect_uri == uri
    for uri in ("localhost:8080/cb", "http://127.0.0.1:99999/cb", "my app://x"):
        with pytest.raises(ValidationError):
            Settings.model_validate({"accounts": {"ford": {**account, "redirect_uri": uri}}})


def _is_number(annotation: Any) -> bool:
    return annotation in (int, float) or float in get_args(annotation)


NUMBERS = {key: info for key, info in field_docs(Settings) if _is_number(info.annotation)}
NUMBER_KEYS = [*NUMBERS, "accounts.ford.request_timeout_s"]
ACCOUNT = {"client_id": "id", "client_secret": "secret"}


def _document(key: str, value: Any) -> dict[str, Any]:
    """A config document setting the dotted `key` to `value` (with a valid account around it)."""
    doc: dict[str, Any] = {"accounts": {"ford": dict(ACCOUNT)}}
    *sections, name = key.split(".")
    target = doc
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = value
    return doc


@pytest.mark.parametrize("key", NUMBER_KEYS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e12, True, False])
def test_every_number_is_finite_bounded_and_not_a_boolean(
    tmp_path: Path, key: str, value: Any
) -> None:
    """No number key takes infinity, NaN, an absurd value or a boolean; the error names the key."""
    if key in NUMBERS and isinstance(value, bool) and value == NUMBERS[key].default:
        # `reconnect_min_s: true` equals the default section (True == 1.0), and pydantic-settings
        # drops a section equal to its default before validating: harmless, the default is used.
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(_document(key, value)))
        loaded: Any = load_config(path)
        for name in key.split("."):
            loaded = getattr(loaded, name)
        assert loaded == NUMBERS[key].default and not isinstance(loaded, bool)
        return
    problems = problems_for(tmp_path, yaml.safe_dump(_document(key, value)))
    assert any(line.startswith(f"{key}: ") for line in problems), problems


def test_number_keys_are_all_checked() -> None:
    """The generic test above sees the number keys (it would pass vacuously on none)."""
    assert {"polling.stale_after_s", "web.refresh_token_ttl_s", "audit.rotate_bytes"} <= set(
        NUMBERS
    )
    assert "polling.scheduled_refresh_interval_s" in NUMBER_KEYS


@pytest.mark.parametrize("text", ["mqtt:\n  protocol: 5\n", "mqtt:\n  protocol: '5'\n"])
def test_protocol_five_may_be_written_as_a_number(tmp_path: Path, text: str) -> None:
    """`protocol: 5` unquoted is a YAML integer; it means "5"."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path).mqtt.protocol == "5"


def test_protocol_311_unquoted_is_accepted(tmp_path: Path) -> None:
    """`3.1.1` is a string in YAML, so it needs no quotes."""
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  protocol: 3.1.1\n")
    assert load_config(path).mqtt.protocol == "3.1.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mqtt: {host: a}\nweb: {port: 1}\nmqtt: {port: 1884}\n",
            "mqtt: duplicate key at line 3, column 1 (first at line 1)",
        ),
        (
            "mqtt:\n  tls:\n    enabled: true\n    enabled: false\n",
            "mqtt.tls.enabled: duplicate key at line 4, column 5 (first at line 3)",
        ),
        (
            "mqtt: {host: a, host: b}\n",
            "mqtt.host: duplicate key at line 1, column 17 (first at line 1)",
        ),
        (
            "apps:\n  x:\n    scopes: [read:status]\n    name: a\n    name: b\n",
            "apps.x.name: duplicate key at line 5, column 5 (first at line 4)",
        ),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    """A key given twice is refused with its path and line, not silently merged or replaced."""
    (problem,) = problems_for(tmp_path, text)
    assert problem == f"{tmp_path / 'config.yaml'}: {expected}"


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    """`<<: *anchor` then overriding one of its keys is YAML's way to reuse, not a duplicate."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "accounts:\n  a: &base {client_id: x, client_secret: y}\n"
        "  b:\n    <<: *base\n    client_id: z\n"
    )
    settings = load_config(path)
    assert (settings.accounts["a"].client_id, settings.accounts["b"].client_id) == ("x", "z")


@pytest.mark.parametrize(
    "text", ["web: {allow_cidrs: &c [*c]}\n", "mqtt: &m {tls: *m}\n", "a: &a [*a]\n"]
)
def test_self_referencing_aliases_are_config_errors(tmp_path: Path, text: str) -> None:
    """A YAML alias inside its own anchor is reported, not a RecursionError."""
    assert problems_for(tmp_path, text)


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("OWNERLINK_MQTT", "mqtt: OWNERLINK_MQTT is not valid JSON"),
        ("OWNERLINK_MQTT__TLS", "mqtt.tls: OWNERLINK_MQTT__TLS is not valid JSON"),
        ("OWNERLINK_WEB__ALLOW_CIDRS", "web.allow_cidrs: OWNERLINK_WEB__ALLOW_CIDRS is not valid"),
        (
            "OWNERLINK_STEPUP__REQUIRED_FOR",
            "stepup.required_for: OWNERLINK_STEPUP__REQUIRED_FOR is not valid JSON",
        ),
        ("OWNERLINK_ACCOUNTS", "accounts: OWNERLINK_ACCOUNTS is not valid JSON"),
    ],
)
def test_environment_value_that_is_not_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, expected: str
) -> None:
    """A section or list set in the environment must be JSON; anything else names the variable
    and the key instead of escaping as pydantic-settings' SettingsError."""
    monkeypatch.setenv(variable, "command:lock")
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    (problem,) = caught.value.problems
    assert problem.startswith(expected)
    assert "command:lock" not in problem  # values are never echoed: they may be secrets


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OWNERLINK_MQTT__PROT", "5", "mqtt.prot: unknown key (set by OWNERLINK_MQTT__PROT)"),
        ("OWNERLINK_MQTT__PORT", "abc", "mqtt.port: Input should be a valid integer"),
        ("OWNERLINK_MQTT", '{"port": "abc"}', "mqtt.port: Input should be a valid integer"),
    ],
)
def test_a_bad_value_from_the_environment_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """The environment overrides the file: a bad key or value set there says which variable set
    it, or the owner looks for it in the YAML file in vain. The same key bad in the file does
    not mention the environment."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    (problem,) = caught.value.problems
    assert problem.startswith(expected) and problem.endswith(f" (set by {variable})"), problem


def test_a_bad_value_from_the_file_does_not_mention_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE.read_text() + "\nlogging:\n  level: loud\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert all("set by" not in problem for problem in caught.value.problems)


def test_environment_json_nested_too_deeply(monkeypatch: pytest.MonkeyPatch) -> None:
    """json.loads raises RecursionError, not ValueError, for deep nesting: still one line."""
    monkeypatch.setenv("OWNERLINK_MQTT", "[" * 100_000)
    with pytest.raises(ConfigError, match=r"mqtt: OWNERLINK_MQTT is not valid JSON \(nested too"):
        load_config(EXAMPLE)


def test_environment_json_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid JSON for a list or a section is still read, and beats the file."""
    monkeypatch.setenv("OWNERLINK_WEB__ALLOW_CIDRS", '["10.0.0.0/8"]')
    monkeypatch.setenv("OWNERLINK_MQTT", '{"host": "env"}')
    settings = load_config(EXAMPLE)
    assert (settings.web.allow_cidrs, settings.mqtt.host) == (("10.0.0.0/8",), "env")


def test_environment_value_that_is_not_utf8_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bytes that are not UTF-8 (`$(printf 'pw\\xff')`) reach Python as lone surrogates and
    failed with a traceback at first use; now the variable is named, its value never shown."""
    monkeypatch.setenv("OWNERLINK_MQTT__PASSWORD", "pw\udcff")
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    assert caught.value.problems == [
        "mqtt.password: OWNERLINK_MQTT__PASSWORD is not valid UTF-8 text"
    ]
    monkeypatch.delenv("OWNERLINK_MQTT__PASSWORD")
    monkeypatch.setenv("OWNERLINK_MQTT", '{"password": "pw\\ud800"}')  # the JSON escape
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    assert caught.value.problems == [
        "mqtt.password: contains a NUL byte or an invalid character (in the environment)"
    ]


def test_a_variable_that_is_no_setting_may_hold_any_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only settings are checked: the environment is shared with other tools."""
    monkeypatch.setenv("OWNERLINK_NOT_A_SETTING", "x\udcff")
    monkeypatch.setenv("OTHER_TOOL", "x\udcff")
    assert load_config(EXAMPLE).mqtt.host == "127.0.0.1"


def test_unknown_environment_variables_are_named_with_the_likely_fix() -> None:
    """A variable that names no setting is a warning for `config check`; one underscore where
    a section needs two gets the fix. The config file's own variable is not a setting."""
    from bridge.config import unknown_environment

    environ = {
        "OWNERLINK_MQTT_HOST": "x",
        "OWNERLINK_BOGUS": "1",
        "OWNERLINK_CONFIG": "/etc/ownerlink/config.yaml",
        "OWNERLINK_STATE_DIR": "/data",
        "OWNERLINK_MQTT__HOST": "broker",
        "HOME": "/root",
    }
    assert unknown_environment(environ) == [
        "OWNERLINK_BOGUS is not a setting",
        "OWNERLINK_MQTT_HOST is not a setting (did you mean OWNERLINK_MQTT__HOST? "
        "sections take two underscores)",
    ]


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


def test_an_accounts_secret_may_come_from_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md (Docker): the file names the account, `.env` holds its secret."""
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  ford:\n    client_id: my-app\n")
    monkeypatch.setenv("OWNERLINK_ACCOUNTS__FORD__CLIENT_SECRET", "from-env")
    account = load_config(path).accounts["ford"]
    assert (account.client_id, account.client_secret.get_secret_value()) == ("my-app", "from-env")
    assert "OWNERLINK_ACCOUNTS__FORD__CLIENT_SECRET" in (ROOT / "docs/operations.md").read_text()


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


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_config_check_exits_zero_with_summary() -> None:
    """`ownerlink config check` prints one summary line for a valid file."""
    result = run_cli("config", "check", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK")


def test_config_check_warns_of_a_missing_file_and_of_no_accounts(tmp_path: Path) -> None:
    """Run where no config file is, `config check` said only "config OK"; the file or the
    accounts missing is now said (still exit 0: the environment may carry everything)."""
    if Path("/etc/ownerlink/config.yaml").is_file():
        pytest.skip("this machine has a config file where every command looks first")
    result = run_cli("config", "check", env={"OWNERLINK_CONFIG": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK: (defaults and environment only)")
    assert "warning: no config file found (/etc/ownerlink/config.yaml, config.yaml)" in (
        result.stderr
    )
    assert "warning: no accounts configured" in result.stderr
    example = run_cli("config", "check", "--config", str(EXAMPLE))
    assert example.stderr == ""


def test_config_check_exits_two_without_traceback(tmp_path: Path) -> None:
    """A broken file exits 2, names each bad key on its own line, and prints no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("mqtt:\n  port: 99999\n  colour: red\n")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2
    assert "mqtt.port:" in result.stderr
    assert "mqtt.colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("mqtt: {host: a}\nmqtt: {port: 1884}\n", {}, "mqtt: duplicate key at line 2"),
        ("polling: {stale_after_s: .inf}\n", {}, "polling.stale_after_s: Input should be"),
        ("{}\n", {"OWNERLINK_MQTT": "notjson"}, "mqtt: OWNERLINK_MQTT is not valid JSON"),
        ("{}\n", {"OWNERLINK_WEB__ALLOW_CIDRS": "x"}, "web.allow_cidrs: OWNERLINK_WEB__ALLOW"),
        ('web: {public_url: "http://[::1"}\n', {}, "web.public_url: Value error, not a valid URL"),
        ("{}\n", {"OWNERLINK_MQTT__HOST": "192.168.1.10:1883"}, "mqtt.host: Value error"),
        ("web: {tls_cert: /nonexistent/cert.pem}\n", {}, "web.tls_key: set it too"),
        # Passed, then `run` and every `apps` command stopped on it.
        ("mqtt: {enforcement: dynsec}\n", {}, "mqtt.admin_username: required (with mqtt.admin"),
        # A key that would do nothing on a v1 account (it has no alerts call) is refused.
        (
            "accounts: {ford: {client_id: a, client_secret: b, health_alerts: true}}\n",
            {},
            "accounts.ford.health_alerts: only a fordconnect-query account reads health alerts",
        ),
        (
            "{}\n",
            {"OWNERLINK_MQTT__PASSWORD": "pw\udcff"},
            "mqtt.password: OWNERLINK_MQTT__PASSWORD is not valid UTF-8 text",
        ),
    ],
)
def test_config_check_refuses_with_one_line(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    """Each of these once passed `config check` or crashed it; now: one line, exit status 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("config", "check", "--config", str(path), env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
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
