"""The redaction processor keeps secrets out of every log line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from pydantic import SecretStr

from bridge import logs


def capture() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    return stream


def test_secret_keys_are_blanked() -> None:
    """Values under token/secret/password/code keys never appear."""
    stream = capture()
    logs.get_logger("t").info(
        "login",
        access_token="tok-AAAA",
        client_secret="sec-BBBB",
        password="pw-CCCC",
        totp_code="123456",
        nested={"refresh_token": "r"},
    )
    out = stream.getvalue()
    for secret in ("tok-AAAA", "sec-BBBB", "pw-CCCC", "123456"):
        assert secret not in out
    assert json.loads(out)["nested"]["refresh_token"] == logs.REDACTED


def test_secret_looking_text_is_scrubbed() -> None:
    """Bearer headers, JWTs and secret query parameters inside free text are redacted."""
    stream = capture()
    logs.get_logger("t").info(
        "request",
        url="https://x/cb?code=abc123def&state=s1",
        header="Authorization: Bearer eyJhbGciOi.eyJzdWIiOiIx.c2ln",
    )
    out = stream.getvalue()
    assert "abc123def" not in out
    assert "eyJzdWIiOiIx" not in out
    assert "state=s1" in out


def test_registered_secret_redacted_anywhere() -> None:
    """A token registered at run time is redacted even inside an unrelated message."""
    stream = capture()
    logs.register_secret("opaque-token-value-42")
    logs.get_logger("t").warning("failed with opaque-token-value-42 in body")
    assert "opaque-token-value-42" not in stream.getvalue()


def test_the_step_up_secret_once_loaded_is_redacted_anywhere(tmp_path: Path) -> None:
    """A second safeguard: no line carries the TOTP secret today, and one that ever did would
    show the redaction marker instead."""
    from bridge.commands.stepup import load_secret, store_secret

    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    store_secret(tmp_path, secret)
    stream = capture()
    assert load_secret(tmp_path) == secret
    logs.get_logger("t").warning(f"otpauth://totp/x?secret={secret.lower()}&{secret}")
    assert secret not in stream.getvalue() and secret.lower() not in stream.getvalue()


def test_secretstr_values_never_render() -> None:
    """A SecretStr passed as any field renders as the redaction marker."""
    stream = capture()
    logs.get_logger("t").info("cfg", thing=SecretStr("hidden-value"))
    assert "hidden-value" not in stream.getvalue()


def test_exception_tracebacks_are_scrubbed() -> None:
    """Secrets inside an exception message are scrubbed from the rendered traceback."""
    stream = capture()
    try:
        raise RuntimeError("refresh failed: refresh_token=zzz-secret-zzz")
    except RuntimeError:
        logs.get_logger("t").exception("boom")
    assert "zzz-secret-zzz" not in stream.getvalue()


def test_safe_keys_survive() -> None:
    """Keys like status_code that merely contain a secret-ish word are kept."""
    stream = capture()
    logs.get_logger("t").info("http", status_code=429, command="lock")
    doc = json.loads(stream.getvalue())
    assert doc["status_code"] == 429
    assert doc["command"] == "lock"


def test_standard_library_loggers_come_out_as_json_and_redacted() -> None:
    """uvicorn, paho and APScheduler log through `logging`: their lines are JSON like ours (a
    `jq` filter over the journal must not stop at a plain-text line) and redacted the same way."""
    stream = capture()
    logs.register_secret("opaque-token-value-43")
    # A name no other test configures: uvicorn's own loggers are global state other tests touch.
    logging.getLogger("some.library").warning("started; Bearer opaque-token-value-43")
    doc = json.loads(stream.getvalue())
    assert doc["logger"] == "some.library" and doc["level"] == "warning"
    assert "opaque-token-value-43" not in doc["event"] and doc["event"].startswith("started")


def test_the_oauth_librarys_debug_lines_never_carry_its_codes_and_tokens() -> None:
    """oauthlib logs the refresh tokens and authorisation codes it handles, in the clear, at
    DEBUG ("Validating refresh token %s", "Created authorization code grant %r"): with
    `logging.level: debug` they reached the log, in no form the redaction recognises."""
    stream = capture()
    refresh = "kq3Xb9TzR1mWcV8yLp2NfA7sGd4HjE"
    logging.getLogger("oauthlib.oauth2.rfc6749.grant_types.refresh_token").debug(
        "Validating refresh token %s for client %r.", refresh, "dash"
    )
    logging.getLogger("oauthlib.oauth2.rfc6749.grant_types.authorization_code").debug(
        "Created authorization code grant %r for request %r.", {"code": refresh}, None
    )
    assert refresh not in stream.getvalue()
