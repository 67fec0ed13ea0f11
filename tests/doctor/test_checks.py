"""The checks as functions: data in, Check out (plus the few that read real files)."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import doctor
from bridge.access.aclfile import ACL_FILE, USERS_FILE
from bridge.cli.doctor import ASCII_MARKS, http_date, print_report, summary
from bridge.commands.decide import StepUpCheck, StepUpStatus
from bridge.commands.stepup import StepUp, enroll, secret_path
from bridge.config import MqttConfig, StepUpConfig
from bridge.doctor import Check, Connack, HttpAnswer
from bridge.errors import BudgetExhausted, Forbidden, RateLimited, ReauthRequired
from bridge.events import CollectingAlerts
from bridge.files import write_private_atomic
from bridge.providers.tokens import StoredTokens
from bridge.store import DB_NAME, Store

NOW = datetime(2025, 6, 11, 12, 0, tzinfo=UTC)
AT = NOW.timestamp()
DAY = 86_400.0


def tokens(**overrides: object) -> StoredTokens:
    values: dict[str, object] = {
        "access_token": "a",
        "refresh_token": "r",
        "expires_at": AT + 600,
        "refresh_expires_at": AT + 90 * DAY,
    }
    values.update(overrides)
    return StoredTokens(**values)  # type: ignore[arg-type]


# -- CONNACK advice -------------------------------------------------------------------------------


def test_a_bad_password_connack_points_at_the_credentials() -> None:
    """Reason 134 (bad user name or password): fail, check mqtt.username and mqtt.password."""
    check = doctor.judge_connack(
        Connack(134, "Bad user name or password"), MqttConfig(username="u")
    )
    assert check.ok is False and "refused the password of 'u'" in check.detail
    assert check.fix is not None and "check mqtt.username and mqtt.password" in check.fix


def test_an_old_broker_is_told_to_use_mqtt_3_1_1() -> None:
    """Reason 132 (unsupported protocol version): set mqtt.protocol to 3.1.1."""
    check = doctor.judge_connack(Connack(132, "Unsupported protocol version"), MqttConfig())
    assert check.ok is False and check.fix == "set mqtt.protocol: '3.1.1'"


def test_an_unknown_refusal_still_fails_with_its_code() -> None:
    """A reason code without specific advice is still a failure naming the code."""
    check = doctor.judge_connack(Connack(159, "Connection rate exceeded"), MqttConfig())
    assert check.ok is False and "code 159" in check.detail


def test_no_connack_suggests_the_tls_port() -> None:
    """Silence after CONNECT: perhaps a TLS listener spoken to in plain MQTT."""
    check = doctor.judge_connack(Connack(None, "no CONNACK within 5 s"), MqttConfig())
    assert check.ok is False and check.fix is not None and "mqtt.tls.enabled: true" in check.fix


# -- tokens ---------------------------------------------------------------------------------------


def test_live_tokens_pass_with_both_expiries() -> None:
    """A fresh login: access token minutes, refresh token days."""
    check = doctor.judge_tokens("home", tokens(), NOW)
    assert check.ok is True
    assert check.detail == "access token valid for 10 min; refresh token expires in 90 days"


def test_a_refresh_token_close_to_expiry_warns() -> None:
    """Less than two days left on the refresh token: a warning to log in again soon."""
    check = doctor.judge_tokens("home", tokens(refresh_expires_at=AT + 3600 * 5), NOW)
    assert check.ok is None and check.fix == "log in again before it expires: ownerlink login home"


def test_no_refresh_token_and_an_expired_access_token_fails() -> None:
    """Nothing left to renew with: re-login."""
    check = doctor.judge_tokens("home", tokens(refresh_token=None, expires_at=AT - 1), NOW)
    assert check.ok is False and check.fix == "run: ownerlink login home"


def test_an_unknown_refresh_expiry_is_not_a_problem() -> None:
    """Ford does not always say when a refresh token dies: pass, and say so."""
    check = doctor.judge_tokens("home", tokens(refresh_expires_at=None), NOW)
    assert check.ok is True and "did not say when it expires" in check.detail


# -- provider and clock ---------------------------------------------------------------------------


def answer(skew_s: float | None = 0.0, **kw: object) -> HttpAnswer:
    date = None if skew_s is None else NOW - timedelta(seconds=skew_s)
    values: dict[str, object] = {
        "label": "API",
        "url": "https://api.example/v1",
        "received_at": NOW,
        "status": 401,
        "server_date": date,
    }
    values.update(kw)
    return HttpAnswer(**values)  # type: ignore[arg-type]


def test_the_worst_skew_decides_the_clock_check() -> None:
    """Several servers: the one furthest off is named."""
    check = doctor.check_clock([answer(3), answer(-31, url="https://token.example/t")])
    assert check.ok is False and "31 s behind token.example" in check.detail


def test_no_date_header_means_the_clock_is_not_checked() -> None:
    """Without a Date header there is nothing to compare: a warning, not a pass."""
    assert doctor.check_clock([answer(None)]).ok is None


def test_an_http_date_is_parsed_as_utc() -> None:
    """RFC 9110 dates become aware datetimes; junk becomes None."""
    assert http_date("Wed, 11 Jun 2025 12:00:00 GMT") == NOW
    assert http_date("yesterday") is None and http_date(None) is None


def test_a_transport_error_fails_the_provider_check() -> None:
    """A connection error on the token endpoint fails, naming it."""
    broken = answer(None, label="token endpoint", status=None, error="ConnectError: refused")
    check = doctor.check_provider("home", [answer(), broken])
    assert check.ok is False and "token endpoint api.example: ConnectError" in check.detail


@pytest.mark.parametrize(
    ("error", "ok", "words"),
    [
        (ReauthRequired("no login"), False, "run: ownerlink login home"),
        (BudgetExhausted("spent", retry_at=0), None, "polling resumes by itself"),
        (RateLimited("429", retry_after=60), False, "other integrations"),
        (Forbidden("403 suspended"), False, "wait it out"),
    ],
)
def test_online_errors_map_to_advice(error: Exception, ok: bool | None, words: str) -> None:
    """--online: each provider error becomes the check an owner can act on."""
    check = doctor.judge_online("home", error, 0)  # type: ignore[arg-type]
    assert check.ok is ok and check.fix is not None and words in check.fix


def test_acl_file_mode_looks_where_the_daemon_writes_without_acl_dir(tmp_path: Path) -> None:
    """Without mqtt.acl_dir the files are checked in `<state_dir>/mosquitto`, the daemon's and
    the docs' default (doctor said "mqtt.acl_dir is not set"); mqtt.acl_dir, when set, wins."""
    mqtt = MqttConfig(enforcement="acl-file", username="ownerlink")
    missing = doctor.check_acl_files(mqtt, state_dir=tmp_path)
    assert missing.ok is False and "not set" not in missing.detail
    assert str(tmp_path / "mosquitto" / USERS_FILE) in missing.detail
    (tmp_path / "mosquitto").mkdir()
    (tmp_path / "mosquitto" / USERS_FILE).write_text("ownerlink:$7$hash\n")
    (tmp_path / "mosquitto" / ACL_FILE).write_text("user ownerlink\n")
    assert doctor.check_acl_files(mqtt, state_dir=tmp_path).ok is True
    elsewhere = MqttConfig(enforcement="acl-file", username="ownerlink", acl_dir=tmp_path / "x")
    assert doctor.check_acl_files(elsewhere, state_dir=tmp_path).ok is False


# -- state ----------------------------------------------------------------------------------------


def test_a_stepup_lockout_is_a_warning_naming_the_app(tmp_path: Path) -> None:
    """Five wrong codes lock an app out; doctor warns with the app and when it ends."""
    store = Store.open(tmp_path)
    stepup = StepUp(
        store=store, state_dir=tmp_path, config=StepUpConfig(), alerts=CollectingAlerts()
    )
    stepup.start()
    for _ in range(StepUpConfig().max_failures):
        stepup.settle("node-red", StepUpCheck(StepUpStatus.FAILED), allowed=False, now=NOW)
    store.close()
    check = doctor.check_stepup_lockouts(tmp_path / DB_NAME, NOW)
    assert check.ok is None and "node-red until 12:15 UTC" in check.detail
    assert doctor.check_stepup_lockouts(tmp_path / DB_NAME, NOW + timedelta(hours=1)).ok


def _older_registry(state_dir: Path, *app_ids: str) -> None:
    """The apps table as the first versions created it, holding ids they let through."""
    with sqlite3.connect(state_dir / DB_NAME) as conn:
        conn.execute(
            "CREATE TABLE apps (id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, "
            "created_at TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1)"
        )
        for app_id in app_ids:
            conn.execute(
                "INSERT INTO apps (id, name, scopes, created_at) VALUES (?, ?, '[]', ?)",
                (app_id, app_id, NOW.isoformat()),
            )
    conn.close()


def test_an_app_under_the_bridges_own_login_fails_before_the_daemon_does(tmp_path: Path) -> None:
    """An app an older version registered under what is now mqtt.username stops the daemon at
    start (exit 2) while `config check` passes: doctor names it, with the way out."""
    _older_registry(tmp_path, "nodered", "Bridge-Login")
    check = doctor.check_app_ids(tmp_path / DB_NAME, ("bridge-login",))
    assert check.ok is False and "'Bridge-Login'" in check.detail
    assert "mqtt.username" in check.fix


def test_an_app_under_a_reserved_id_is_a_warning(tmp_path: Path) -> None:
    """owner-web-login was reserved after older versions let it be registered."""
    _older_registry(tmp_path, "owner-web-login", "nodered")
    check = doctor.check_app_ids(tmp_path / DB_NAME, ("ownerlink",))
    assert check.ok is None and "owner-web-login" in check.detail
    fine = tmp_path / "fine"
    fine.mkdir()
    _older_registry(fine, "nodered")
    assert doctor.check_app_ids(fine / DB_NAME, ("ownerlink",)).ok is True


def test_a_state_directory_without_files_is_fine(tmp_path: Path) -> None:
    """A fresh 0700 directory: no secrets yet, no database yet (a warning), nothing failing."""
    tmp_path.chmod(0o700)
    found = doctor.check_state(tmp_path, uid=tmp_path.stat().st_uid, now=NOW)
    assert [c.ok for c in found] == [True, True, None, True, True, True]


@pytest.mark.parametrize("content", [b"not base32!\n", "geheimnis-\u00e9".encode(), b"", b"ABC\n"])
def test_a_damaged_stepup_secret_fails_with_the_re_enrolment(
    tmp_path: Path, content: bytes
) -> None:
    """A secret file no authenticator code can match (not base32, not ASCII, empty, cut short)
    fails, naming the file and `stepup enroll --force`; an enrolled one passes."""
    write_private_atomic(secret_path(tmp_path), content)
    check = doctor.check_stepup_secret(tmp_path)
    assert check.ok is False and str(secret_path(tmp_path)) in check.detail
    assert check.fix is not None and "ownerlink stepup enroll --force" in check.fix
    enroll(tmp_path, force=True)
    assert doctor.check_stepup_secret(tmp_path).detail.endswith("enrolled")


# -- output ---------------------------------------------------------------------------------------


def test_a_console_without_unicode_gets_words() -> None:
    """An ASCII-only terminal sees OK/WARN/FAIL instead of ✓/!/✗."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    print_report([Check("clock", False, "off", "fix it"), Check("config", True, "ok")], out)
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert text.startswith(f"{ASCII_MARKS['fail']} clock") and "fix: fix it" in text


def test_the_summary_counts_failures_and_warnings() -> None:
    """The last line says how many failed and how many only warned."""
    found = [
        Check("a", False, ""),
        Check("b", None, ""),
        Check("c", None, ""),
        Check("d", True, ""),
    ]
    assert summary(found).startswith("1 check failed (2 warnings)")
    assert summary(found[1:]) == "All checks passed (2 warnings)."
