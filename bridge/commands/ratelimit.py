"""Per-app and per-vehicle command rate limits: exact sliding windows, clock passed in, no I/O.

A sliding-window log (the times of the last `limit` commands) rather than a token bucket: the
numbers are small (a handful a minute), and "at most N in any 60 seconds" is the rule an owner
reads in the config and can check against the audit log.
"""

from __future__ import annotations

import bisect
from collections import deque

from bridge.model import App

WINDOW_S = 60.0


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._events: dict[str, deque[float]] = {}

    def allows(self, key: str, limit: int, now: float) -> bool:
        """Would one more event at `now` stay within the limit? Changes nothing, and keeps
        nothing for a key never recorded: every command is asked about before it is refused for
        anything else, and a key per junk vehicle name, kept for ever, grew without bound."""
        events = self._prune(key, now)
        return events is None or len(events) < limit

    def record(self, key: str, now: float) -> None:
        """Count an event at `now`. Kept in time order even when it is older than the newest:
        another process's commands are taken in up to a second late, and pruning stops at the
        first event still in the window, so one out of order would count past its minute."""
        events = self._events.setdefault(key, deque())
        if events and events[-1] > now:
            bisect.insort(events, now)
        else:
            events.append(now)

    def __len__(self) -> int:
        """How many keys have events in the window (or had, until they are next asked about)."""
        return len(self._events)

    def _prune(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events


class CommandRateLimits:
    """The two limits a command must pass: its app's and its vehicle's (shared by every app)."""

    def __init__(self, default_per_minute: int, window: SlidingWindow | None = None) -> None:
        self.default_per_minute = default_per_minute
        self._window = window if window is not None else SlidingWindow()

    def allows(self, app: App, vehicle: str, now: float) -> bool:
        """Both limits have room at `now` (epoch seconds)."""
        return self._window.allows(_app_key(app), self._app_limit(app), now) and (
            self._window.allows(_vehicle_key(vehicle), self.default_per_minute, now)
        )

    def record(self, app: App, vehicle: str, now: float) -> None:
        """Charge one command to both."""
        self._window.record(_app_key(app), now)
        self._window.record(_vehicle_key(vehicle), now)

    def restore(self, app_id: str, vehicle: str, at: float) -> None:
        """Count a command decided before this process started, or by another process meanwhile
        (both read from the audit log), so neither a restart nor `ownerlink command` beside the
        daemon hands out a second minute's allowance."""
        self._window.record(f"app:{app_id}", at)
        self._window.record(_vehicle_key(vehicle), at)

    def _app_limit(self, app: App) -> int:
        return app.rate_limit_per_minute or self.default_per_minute


def _app_key(app: App) -> str:
    return f"app:{app.id}"  # as `restore` writes it


def _vehicle_key(vehicle: str) -> str:
    return f"vehicle:{vehicle}"
