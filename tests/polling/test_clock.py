"""The local zone the poller's hours are in: named, so they follow daylight saving time."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.polling.clock import local_zone

ZONES = Path("/usr/share/zoneinfo")
WINTER = datetime(2027, 1, 15, 12, tzinfo=UTC)
SUMMER = datetime(2027, 7, 15, 12, tzinfo=UTC)

pytestmark = pytest.mark.skipif(
    not (ZONES / "Europe" / "Berlin").is_file(), reason="no system zone database"
)


def offsets(zone: tzinfo) -> tuple[timedelta | None, timedelta | None]:
    return WINTER.astimezone(zone).utcoffset(), SUMMER.astimezone(zone).utcoffset()


BERLIN = (timedelta(hours=1), timedelta(hours=2))


@pytest.mark.parametrize(
    "tz", ["Europe/Berlin", ":Europe/Berlin", str(ZONES / "Europe" / "Berlin")]
)
def test_tz_names_the_zone_by_name_or_file(tz: str, tmp_path: Path) -> None:
    """TZ as the C library reads it (a name, `:name` or a zone file) gives the zone with its DST
    rules, and wins over /etc/localtime."""
    other = tmp_path / "localtime"
    other.symlink_to(ZONES / "Asia" / "Tokyo")
    assert offsets(local_zone({"TZ": tz}, other)) == BERLIN


def test_without_tz_the_zone_is_etc_localtimes_link(tmp_path: Path) -> None:
    """/etc/localtime linking into a zoneinfo tree gives that zone, by its name."""
    localtime = tmp_path / "localtime"
    localtime.symlink_to(ZONES / "Europe" / "Berlin")
    zone = local_zone({}, localtime)
    assert zone == ZoneInfo("Europe/Berlin")
    assert offsets(zone) == BERLIN


def test_a_copied_localtime_file_keeps_its_dst_rules(tmp_path: Path) -> None:
    """/etc/localtime copied rather than linked (common in containers) is read as a zone file."""
    localtime = tmp_path / "localtime"
    shutil.copyfile(ZONES / "Europe" / "Berlin", localtime)
    assert offsets(local_zone({}, localtime)) == BERLIN


def test_a_link_into_a_zone_tree_python_does_not_know_is_read_from_the_file(
    tmp_path: Path,
) -> None:
    """/etc/localtime linking to a name no zone database has (a private tree): its contents."""
    home = tmp_path / "etc" / "zoneinfo" / "Local" / "Home"
    home.parent.mkdir(parents=True)
    shutil.copyfile(ZONES / "Europe" / "Berlin", home)
    localtime = tmp_path / "localtime"
    localtime.symlink_to(home)
    assert offsets(local_zone({}, localtime)) == BERLIN


@pytest.mark.parametrize("tz", ["CET-1CEST,M3.5.0,M10.5.0/3", "Nowhere/Atlantis", ""])
def test_a_tz_that_names_no_zone_falls_back_to_the_current_offset(tz: str, tmp_path: Path) -> None:
    """A POSIX rule, an unknown name or an empty TZ is no zone here: the current fixed offset
    (which the C library derives from TZ), never an error and never /etc/localtime."""
    localtime = tmp_path / "localtime"
    localtime.symlink_to(ZONES / "Asia" / "Tokyo")
    zone = local_zone({"TZ": tz}, localtime)
    assert not isinstance(zone, ZoneInfo)
    assert zone.utcoffset(None) == datetime.now().astimezone().utcoffset()


def test_no_zone_anywhere_falls_back_to_the_current_offset(tmp_path: Path) -> None:
    """Neither TZ nor a readable /etc/localtime: the current fixed offset."""
    zone = local_zone({}, tmp_path / "missing")
    assert zone.utcoffset(None) == datetime.now().astimezone().utcoffset()
