"""Crash-safe private files: tokens, the step-up secret and rendered broker files."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
import time
from pathlib import Path

from bridge.errors import StateError

# A writer is done with its temp file within seconds; one older than this was left by a crash.
STALE_TEMP_S = 600.0
# Flags for every file opened in place in the state directory (locks, the audit log, the
# database, secrets read): never through a symlink. Whoever holds the daemon's account could
# plant one, and a command run as root (`sudo ownerlink …`) would then truncate, chmod, create or
# read whatever file it names. (An atomic write renames over the name: a link is replaced.)
IN_PLACE = os.O_NOFOLLOW | os.O_CLOEXEC


def write_private_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically: own temp file (0600), fsync, rename, fsync the dir.

    A crash at any point leaves either the old file or the new one, never a torn mix; the secret
    is never readable by other users, not even for the moment between create and chmod. Each
    writer has a temp file of its own: two processes replacing one file (the daemon refreshing
    tokens while `ownerlink login` stores new ones) must never write into the same one.
    """
    try:
        # mkstemp creates the file 0600 and O_EXCL under a name no other writer can have.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(name)
    try:
        _fill(fd, data, mode)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    _sweep_leftovers(path)


def _sweep_leftovers(path: Path) -> None:
    """Remove temp files of `path` a crashed writer left (they may hold a secret): any older
    than a writer could still be busy with."""
    cutoff = time.time() - STALE_TEMP_S
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _fill(fd: int, data: bytes, mode: int) -> None:
    """Write all of `data` to the open temp file, set its mode, fsync it and close it."""
    try:
        os.fchmod(fd, mode)  # mkstemp's 0600 is right for secrets; broker files want 0640
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]  # a write may be short (a signal, a full pipe)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a created or renamed entry in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_lock(path: Path) -> int:
    """A lock file in the state directory: read-write, created 0600 (the umask permitting),
    never through a symlink; StateError saying why it cannot be opened."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | IN_PLACE, 0o600)
    except OSError as exc:
        raise StateError(f"state_dir: cannot open {path}: {open_problem(exc)}") from exc


def open_problem(exc: OSError) -> str:
    """Why a file in the state directory could not be opened, saying what to do."""
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link, which ownerlink never follows in its state directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{exc.strerror}: run ownerlink as the user that owns the state directory "
            "(e.g. sudo -u ownerlink ownerlink …)"
        )
    return exc.strerror or str(exc)


def read_private(path: Path) -> bytes | None:
    """Read a private file, or None when absent; refuse one that others can read, or a link."""
    try:
        fd = os.open(path, os.O_RDONLY | IN_PLACE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"cannot read {path}: {open_problem(exc)}") from exc
        raise
    with os.fdopen(fd, "rb") as handle:
        if os.fstat(handle.fileno()).st_mode & 0o077:
            raise StateError(f"{path} is readable by other users; run: chmod 600 {path}")
        return handle.read()
