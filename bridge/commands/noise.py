"""A flood of refused commands is counted, not written to the audit log one record at a time.

Every refusal is fsync'd as its own record, and refusals come before any rate limit (junk must
not spend an app's allowance), so an app sending junk as fast as the broker takes it would fill
the disk; once the disk is full, the audit log stops every command. Up to `per_minute` refusals
per sender in any minute are recorded one by one, as always; beyond that each is still refused
with a result, and counted, and one `command.suppressed` record a minute later says how many,
for which reasons, between when and when. Nothing allowed is ever summarised: only refusals,
which by definition reached no car.

Pure: the clock is passed in; the pipeline schedules the summary and writes it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bridge.commands.ratelimit import WINDOW_S, SlidingWindow
from bridge.commands.reasons import BEFORE_RATE_LIMIT, Reason

# The refusals that may be counted instead of recorded: those that cost the sender nothing (they
# come before the rate limit, the rate limit's own included) and the bridge's "not yet". A
# step-up or budget refusal is always recorded: those are bounded by the step-up lockout and the
# rate limit, and a wrong code is what an owner looks for first.
SUPPRESSIBLE = BEFORE_RATE_LIMIT | {Reason.AUDIT_UNCHECKED}

# Refusals from senders the bridge does not know (no such app) share one allowance, so that
# inventing app names (possible only on a broker that does not enforce logins) gains nothing.
UNKNOWN_SENDER = "?"


@dataclass(slots=True)
class Suppressed:
    """Refusals counted for one sender since the first that was not recorded on its own."""

    first: float
    last: float
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(self.reasons.values())


class RefusalRecords:
    """Which refusals get a record of their own, and the count of those that did not."""

    def __init__(self, per_minute: int, window_s: float = WINDOW_S) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._window = SlidingWindow(window_s)
        self._suppressed: dict[str, Suppressed] = {}

    def admit(self, sender: str, now: float) -> bool:
        """Should this refusal be recorded on its own? Counts it when so."""
        if not self._window.allows(sender, self.per_minute, now):
            return False
        self._window.record(sender, now)
        return True

    def suppress(self, sender: str, reason: str, now: float) -> bool:
        """Count a refusal that gets no record of its own. True for the first of a run: the
        caller then schedules the summary, `window_s` from now."""
        run = self._suppressed.get(sender)
        if run is None:
            run = self._suppressed[sender] = Suppressed(first=now, last=now)
        run.last = now
        run.reasons[reason] += 1
        return run.count == 1

    def take(self, sender: str) -> Suppressed | None:
        """The run counted for `sender`, forgotten here (the caller records it)."""
        return self._suppressed.pop(sender, None)
