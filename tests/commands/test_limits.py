"""Sliding-window rate limits and the persisted command-id window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.commands.dedup import DedupStore
from bridge.commands.ratelimit import CommandRateLimits, SlidingWindow
from bridge.commands.recover import recent_charges
from bridge.model import App, Scope
from bridge.store import Store
from tests.commands.fakes import T0


def test_sliding_window_allows_n_in_any_60_seconds() -> None:
    """Three per minute: the fourth waits until the first is a full minute old."""
    window = SlidingWindow()
    for t in (0.0, 10.0, 20.0):
        assert window.allows("k", 3, t)
        window.record("k", t)
    assert not window.allows("k", 3, 59.9)
    assert window.allows("k", 3, 60.0)


def test_allows_changes_nothing() -> None:
    """Asking is free: only record() counts."""
    window = SlidingWindow()
    for _ in range(10):
        assert window.allows("k", 1, 0.0)


def test_app_and_vehicle_limits_are_separate_keys() -> None:
    """An app's own limit and the vehicle's shared limit are both enforced."""
    limits = CommandRateLimits(2)
    a = App("a", "A", frozenset(Scope), T0)
    b = App("b", "B", frozenset(Scope), T0, rate_limit_per_minute=10)
    limits.record(a, "car", 0.0)
    limits.record(a, "car", 1.0)
    assert not limits.allows(a, "van", 2.0)  # a's own limit
    assert not limits.allows(b, "car", 2.0)  # car's limit
    assert limits.allows(b, "van", 2.0)


def test_asking_about_many_vehicles_keeps_nothing() -> None:
    """Every command is asked about before it is refused: an app (or, without broker
    enforcement, anyone using its name) sending to a new made-up vehicle name each time left a
    key behind for each, for as long as the daemon ran. Keys go once their window is empty."""
    window = SlidingWindow()
    limits = CommandRateLimits(6, window)
    app = App("ha", "HA", frozenset(Scope), T0)
    for n in range(10_000):
        assert limits.allows(app, f"junk-{n}", 1000.0 + n / 1000)
    assert len(window) == 0
    limits.record(app, "car", 1000.0)
    assert len(window) == 2
    assert limits.allows(app, "car", 1100.0)  # both windows empty by then: both keys go
    assert len(window) == 0


def test_ids_expire_after_the_window(tmp_path: Path) -> None:
    """An id is seen within dedup_window_s and forgotten after it; ids are per app."""
    ids = DedupStore(store=Store.open(tmp_path), window_s=3600)
    ids.start()
    ids.remember("ha", "x", 1000.0)
    assert ids.seen("ha", "x", 1000.0 + 3599)
    assert not ids.seen("ha", "x", 1000.0 + 3600)
    assert not ids.seen("other", "x", 1001.0)


def test_ids_survive_reopening_the_store(tmp_path: Path) -> None:
    """Remembered ids are in SQLite: a new store on the same directory still sees them."""
    first = DedupStore(store=Store.open(tmp_path), window_s=3600)
    first.start()
    first.remember("ha", "x", 1000.0)
    first.store.close()
    second = DedupStore(store=Store.open(tmp_path), window_s=3600)
    second.start()
    assert second.seen("ha", "x", 1001.0)


def _decision(at: datetime, reason: str, app: str = "ha", vehicle: str = "car") -> dict[str, Any]:
    return {
        "kind": "command.decision",
        "ts": at.isoformat(),
        "app": app,
        "vehicle": vehicle,
        "reason": reason,
    }


def test_the_last_minute_is_read_from_the_end_of_the_log_and_counted() -> None:
    """Decisions that used up an allowance in the last minute come back oldest first; junk
    refused before the rate check does not count; reading stops at the first older record."""
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def newest_first() -> Iterator[dict[str, Any]]:
        yield _decision(now - timedelta(seconds=5), "ok", vehicle="van")
        yield {"kind": "command.outcome", "ts": (now - timedelta(seconds=6)).isoformat()}
        yield _decision(now - timedelta(seconds=10), "malformed")  # never charged
        yield _decision(now - timedelta(seconds=20), "stepup_failed", app="nr")
        yield _decision(now - timedelta(seconds=61), "ok")
        raise AssertionError("read past the window")

    charges = recent_charges(newest_first(), now - timedelta(seconds=60))
    assert charges == [
        ("nr", "car", (now - timedelta(seconds=20)).timestamp()),
        ("ha", "van", (now - timedelta(seconds=5)).timestamp()),
    ]
    limits = CommandRateLimits(2)
    for app_id, vehicle, at in charges:
        limits.restore(app_id, vehicle, at)
    ha = App("ha", "HA", frozenset(Scope), T0, rate_limit_per_minute=1)
    assert not limits.allows(ha, "truck", now.timestamp())  # ha's one a minute is used
    assert limits.allows(ha, "truck", now.timestamp() + 55.1)


def test_an_event_counted_late_keeps_the_window_in_time_order() -> None:
    """Another process's commands are taken in up to a second after ours: counted where they
    belong, they leave the window on time. Appended behind a newer one, pruning stopped at the
    newer one, and the late event counted until that one's minute was up too."""
    window = SlidingWindow()
    window.record("k", 10.0)
    window.record("k", 5.0)  # decided earlier, by `ownerlink command`, and taken in now
    assert not window.allows("k", 2, 64.0)
    assert window.allows("k", 2, 65.5)  # the one at 5.0 is a minute old; only 10.0 counts
    assert not window.allows("k", 1, 65.5)
    assert window.allows("k", 1, 70.0)
