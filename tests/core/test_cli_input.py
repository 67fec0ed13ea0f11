"""What the owner types at the command line: option values and passwords that are not usable
are one clear line (or a usage error), never a traceback, and change nothing."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.store import Store
from bridge.web.passwords import owner_password_hash


class BinaryStdin(io.TextIOWrapper):
    """Standard input carrying raw bytes, decoded as the interpreter decodes its own."""

    def __init__(self, data: bytes, errors: str) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", errors=errors)


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])
def test_a_password_that_is_not_utf8_is_refused_and_nothing_is_stored(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    errors: str,
) -> None:
    """`--password-stdin` given bytes that are not UTF-8 (read as lone surrogates in most
    locales, a decoding error in strict ones): one line, exit 1, no password set."""
    monkeypatch.setattr(sys, "stdin", BinaryStdin(b"a long owner password\xff\n", errors))
    status = main(["owner", "set-password", "--password-stdin", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert err == "error: the password is not UTF-8 text; nothing was changed\n"
    store = Store.open(tmp_path)
    assert owner_password_hash(store) is None
    store.close()


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "1e300", "soon"])
def test_a_listen_timeout_that_is_no_positive_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """`login --listen --timeout` takes what `doctor --timeout` takes: more than 0 seconds and a
    bound (-1 gave up at once, nan was accepted)."""
    with pytest.raises(SystemExit) as stopped:
        main(["login", "--listen", f"--timeout={timeout}"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "argument --timeout:" in err and "Traceback" not in err
