"""The clock polling code is given (a callable returning an aware UTC datetime), and the local
zone whose hours decide what is night."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Clock = Callable[[], datetime]

LOCALTIME = Path("/etc/localtime")
# Where a zone's name starts in the path /etc/localtime links to (…/zoneinfo/Europe/Berlin).
_ZONEINFO_DIR = "zoneinfo/"


def utc_now() -> datetime:
    """The real wall clock, timezone-aware."""
    return datetime.now(UTC)


def local_zone(environ: Mapping[str, str] = os.environ, localtime: Path = LOCALTIME) -> tzinfo:
    """The system's zone with its daylight-saving rules: the zone `TZ` names (or its file), else
    /etc/localtime's (by the name its link points to, or its contents). Only when neither is a
    zone (a POSIX rule in TZ, no zone database) the current fixed offset, which a DST change
    makes an hour wrong until restart."""
    # A TZ that is set wins over /etc/localtime, as in the C library, even when it names no zone.
    zone = _zone_named(environ["TZ"]) if "TZ" in environ else _zone_of_file(localtime)
    return zone or datetime.now().astimezone().tzinfo or UTC


def _zone_named(value: str) -> ZoneInfo | None:
    """TZ as the C library reads it: `Europe/Berlin`, `:Europe/Berlin` or a zone file's path."""
    name = value.removeprefix(":").strip()
    if not name:
        return None  # TZ set but empty is UTC to the C library; the fixed offset says as much
    if name.startswith("/"):
        return _zone_of_file(Path(name))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_of_file(path: Path) -> ZoneInfo | None:
    """The zone in a TZif file, named after its link target when it is one into a zoneinfo tree
    Python knows; else read from the file itself (a private tree, a name tzdata lacks)."""
    return _zone_named_by_link(path) or _zone_read_from(path)


def _zone_named_by_link(path: Path) -> ZoneInfo | None:
    try:
        target = str(path.readlink()) if path.is_symlink() else ""
        if _ZONEINFO_DIR in target:
            return ZoneInfo(target.rsplit(_ZONEINFO_DIR, 1)[1])
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    return None


def _zone_read_from(path: Path) -> ZoneInfo | None:
    try:
        with path.open("rb") as tzif:
            return ZoneInfo.from_file(tzif, key=str(path))
    except (ValueError, OSError):
        return None
