"""`api.access` audit records, aggregated per app per minute.

Every REST access is audited, but an fsync per read would let one chatty dashboard fill the log and
wear out an SD card. So within each app's current minute, the first access of each kind (route,
vehicle, HTTP status) is written at once, and repeats are counted and written as one summary when
the minute is over (on the next access, the periodic flush, or shutdown).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from bridge.config import SLUG_PATTERN
from bridge.events import AuditSink
from bridge.web.ports import Clock

AccessKey = tuple[str, str | None, int]  # (route, vehicle, status)
_ALIAS = re.compile(SLUG_PATTERN)
_METHOD = re.compile(r"[A-Z]{1,10}")


@dataclass
class _Window:
    minute: int
    seen: set[AccessKey] = field(default_factory=set)
    repeats: Counter[AccessKey] = field(default_factory=Counter)


class AccessLog:
    """Writes `api.access` records through the audit sink."""

    def __init__(self, *, audit: AuditSink, clock: Clock) -> None:
        self.audit = audit
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def record(
        self,
        *,
        app: str | None,
        ip: str,
        method: str,
        route: str,
        vehicle: str | None,
        status: int,
    ) -> bool:
        """Account for one access; True when it opened the app's minute (a cue to `touch` it)."""
        who = app or "-"
        minute = int(self.clock().timestamp() // 60)
        window = self._windows.get(who)
        opened = window is None or window.minute != minute
        if window is None or opened:
            if window is not None:
                self._summarise(who, window)
            window = self._windows[who] = _Window(minute)
        # Anyone the allowlist admits can ask, token or not, so nothing they make up may grow
        # the log: the path's vehicle is written only when it could be an alias (an invented
        # 60 KB name would be fsync'd once a minute per kind), and errors are keyed without it.
        vehicle = vehicle if vehicle is not None and _ALIAS.fullmatch(vehicle) else None
        method = method if _METHOD.fullmatch(method) else "other"
        key: AccessKey = (route, vehicle if status < 400 else None, status)
        if key in window.seen:
            window.repeats[key] += 1
            return opened
        self.audit.append(
            "api.access",
            app=app,
            ip=ip,
            method=method,
            route=route,
            vehicle=vehicle,
            status=status,
            decision="allowed" if status < 400 else "denied",
        )
        # Only once it is written: a kind whose record failed is not a repeat of anything, and
        # the next request of that kind must try (and, while the log is down, fail) again.
        window.seen.add(key)
        return opened

    def flush(self, *, everything: bool = False) -> None:
        """Write the summaries of finished minutes (all of them when shutting down)."""
        minute = int(self.clock().timestamp() // 60)
        for who, window in list(self._windows.items()):
            if everything or window.minute != minute:
                self._summarise(who, window)
                del self._windows[who]

    def _summarise(self, who: str, window: _Window) -> None:
        if not window.repeats:
            return
        start = datetime.fromtimestamp(window.minute * 60, tz=self.clock().tzinfo)
        repeats = [
            {"route": route, "vehicle": vehicle, "status": status, "count": count}
            for (route, vehicle, status), count in sorted(window.repeats.items(), key=str)
        ]
        self.audit.append(
            "api.access",
            app=None if who == "-" else who,
            summary=True,
            minute=start.isoformat(),
            repeats=repeats,
        )
