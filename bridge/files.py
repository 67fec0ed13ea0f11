"""Crash-safe private files: tokens, the step-up secret and rendered broker files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bridge.errors import StateError


def write_private_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically: temp file (mode 0600), fsync, rename, fsync the dir.

    A crash at any point leaves either the old file or the new one, never a torn mix; the secret
    is never readable by other users, not even for the moment between create and chmod.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask; be exact
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a created or renamed entry in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: Path) -> bytes | None:
    """Read a private file, or None when absent; refuse one that others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & 0o077:
        raise StateError(f"{path} is readable by other users; run: chmod 600 {path}")
    return path.read_bytes()
