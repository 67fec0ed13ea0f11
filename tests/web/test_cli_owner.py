"""`ownerlink owner set-password`: stores a scrypt hash that the web login accepts."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.store import Store
from bridge.web.passwords import owner_password_hash, verify_password


class Terminal(io.StringIO):
    """Standard input as a terminal: the owner at the keyboard (getpass itself is faked)."""

    def isatty(self) -> bool:
        return True


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
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", lambda _prompt="": next(answers))
    code = main(["owner", "set-password", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "differ" in capsys.readouterr().err


def test_without_a_terminal_it_asks_for_password_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No terminal and no --password-stdin (`</dev/null`, a script): one error line, exit 1."""

    def no_input(_prompt: str = "") -> str:
        raise EOFError  # what getpass does when it falls back to an empty stdin

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr("getpass.getpass", no_input)
    code = main(["owner", "set-password", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "--password-stdin" in err


def test_end_of_input_at_the_prompt_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-D at the prompt on a terminal: exit 1, no password stored."""

    def end_of_input(_prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(sys, "stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", end_of_input)
    code = main(["owner", "set-password", "--state-dir", str(tmp_path)])
    assert code == 1 and "error: no password typed" in capsys.readouterr().err
    store = Store.open(tmp_path)
    assert owner_password_hash(store) is None
    store.close()
