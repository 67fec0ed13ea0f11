"""`ownerlink owner set-password`: stores a scrypt hash that the web login accepts."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.store import Store
from bridge.web.passwords import owner_password_hash, verify_password


def test_set_password_from_stdin_stores_a_scrypt_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--password-stdin reads one line; the database holds a hash that verifies it."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("my owner password\n"))
    code = main(["owner", "set-password", "--password-stdin", "--state-dir", str(tmp_path)])
    assert code == 0
    store = Store.open(tmp_path)
    stored = owner_password_hash(store)
    store.close()
    assert stored is not None and stored.startswith("scrypt$")
    assert verify_password("my owner password", stored)
    assert "my owner password" not in capsys.readouterr().out


def test_short_password_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under 10 characters: exit status 1 with the reason, nothing stored."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    code = main(["owner", "set-password", "--password-stdin", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "at least 10 characters" in capsys.readouterr().err
    store = Store.open(tmp_path)
    assert owner_password_hash(store) is None
    store.close()


def test_prompted_passwords_must_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typed twice at the prompt; two different entries change nothing."""
    answers = iter(["first password!", "second password"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt="": next(answers))
    code = main(["owner", "set-password", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "differ" in capsys.readouterr().err
