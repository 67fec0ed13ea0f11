"""Pure checks over what a reliability run recorded: results, audit records, executions, calls.

Each function takes plain data (result documents, audit records, the simulator's executed list)
and returns what it found, so the suites stay readable and the checks can be unit-tested.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FINAL = frozenset({"rejected", "succeeded", "failed", "timed_out"})
DUPLICATE = "duplicate_id"


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultTally:
    """Final results per command id: duplicate refusals and redeliveries counted apart."""

    finals: dict[str, list[dict[str, Any]]]  # id → distinct final results, not duplicate refusals
    duplicates: Counter[str]  # id → `duplicate_id` refusals (a redelivered copy, correctly refused)
    redelivered: Counter[str]  # id → copies of a final result already seen (same document)

    def count(self, command_id: str) -> int:
        return len(self.finals.get(command_id, []))


def tally_results(results: Iterable[dict[str, Any]]) -> ResultTally:
    """A final result sent again after a restart (delivery.py) is the same document, `ts`
    included: a copy, not a second answer."""
    finals: dict[str, list[dict[str, Any]]] = {}
    duplicates: Counter[str] = Counter()
    redelivered: Counter[str] = Counter()
    for result in results:
        if result.get("status") not in FINAL:
            continue
        cid = str(result.get("id"))
        if result.get("reason") == DUPLICATE:
            duplicates[cid] += 1
        elif result in finals.get(cid, []):
            redelivered[cid] += 1
        else:
            finals.setdefault(cid, []).append(result)
    return ResultTally(finals, duplicates, redelivered)


# -- executions ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ExecutionMatch:
    """The simulator's executed commands matched to our command ids through the audit log."""

    by_id: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # our id → executions
    unmatched: list[dict[str, Any]] = field(default_factory=list)  # no outcome names them


def match_executions(
    executed: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]
) -> ExecutionMatch:
    """Link each executed command (provider id) to the `command.outcome` that recorded it."""
    ours = {
        str(r["provider_command_id"]): str(r["id"])
        for r in records
        if r.get("kind") == "command.outcome" and r.get("provider_command_id")
    }
    match = ExecutionMatch()
    for entry in executed:
        our_id = ours.get(str(entry["command_id"]))
        if our_id is None:
            match.unmatched.append(entry)
        else:
            match.by_id.setdefault(our_id, []).append(entry)
    return match


def decisions(
    records: Iterable[dict[str, Any]], verdict: str | None = None
) -> list[dict[str, Any]]:
    """`command.decision` records, optionally only `allowed` or `refused` ones."""
    return [
        r
        for r in records
        if r.get("kind") == "command.decision" and (verdict is None or r.get("decision") == verdict)
    ]


def executions_without_decision(
    executed: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    *,
    tolerance_s: float = 0.25,
) -> list[dict[str, Any]]:
    """Executed commands that no durable `allowed` decision accounts for.

    An execution linked to an outcome (by provider command id) is accounted for by that command's
    own decision, which must exist and come first. An unlinked one (the daemon was killed after the
    provider took the command, before the outcome was written) needs a distinct allowed decision
    that has no outcome, recorded before it (within `tolerance_s`, as the two clocks differ).
    Greedy assignment in time order is exact here: a decision that may precede one execution may
    precede every later one too.
    """
    allowed = {str(r["id"]): r for r in decisions(records, "allowed")}
    # An `interrupted` outcome is written after a restart for a command the kill cut off: the
    # car may have run it, so its decision still accounts for one unlinked execution.
    outcomes = {
        str(r["id"])
        for r in records
        if r.get("kind") == "command.outcome" and r.get("reason") != "interrupted"
    }
    match = match_executions(executed, records)
    bad: list[dict[str, Any]] = []
    for our_id, entries in match.by_id.items():
        decision = allowed.get(our_id)
        for entry in entries:
            if decision is None or _ts(decision) > _ts(entry) + tolerance_s:
                bad.append(entry)
    spare = sorted(_ts(r) for cid, r in allowed.items() if cid not in outcomes)
    for entry in sorted(match.unmatched, key=_ts):
        limit = bisect.bisect_right(spare, _ts(entry) + tolerance_s)
        if limit == 0:
            bad.append(entry)
        else:
            spare.pop(0)  # the earliest spare decision: any would do, the earliest keeps most room
    return bad


def _ts(item: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(item.get("ts") or item["at"])).timestamp()


# -- calls and budgets ---------------------------------------------------------------------------


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The most events in any sliding window of `window_s` seconds."""
    ordered = sorted(times)
    best = 0
    for i, t in enumerate(ordered):
        best = max(best, i - bisect.bisect_left(ordered, t - window_s + 1e-9) + 1)
    return best


# -- secrets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leak:
    kind: str
    where: str
    excerpt: str


def find_secrets(
    sources: Mapping[str, str], secrets: Mapping[str, Iterable[str]], *, codes: Iterable[str] = ()
) -> list[Leak]:
    """Every place a secret value appears in `sources` (name → text).

    `secrets` maps a kind (token, password, vin …) to exact values. Step-up `codes` are six digits,
    so they only count as standalone numbers (not inside a hash, a timestamp's fraction or another
    number).
    """
    leaks = []
    for where, text in sources.items():
        for kind, values in secrets.items():
            for value in values:
                if value and value in text:
                    leaks.append(Leak(kind, where, _excerpt(text, text.index(value), value)))
        for code in codes:
            found = re.search(rf"(?<![0-9A-Za-z.:+-]){re.escape(code)}(?![0-9A-Za-z])", text)
            if found:
                leaks.append(Leak("totp code", where, _excerpt(text, found.start(), code)))
    return leaks


def _excerpt(text: str, at: int, value: str) -> str:
    start = max(0, at - 60)
    return text[start : at + len(value) + 20].replace(value, "<SECRET>")
