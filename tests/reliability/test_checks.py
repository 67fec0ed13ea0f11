"""The reliability suites' own checks, on small hand-made records: each one can fail."""

from __future__ import annotations

from typing import Any

from tests.reliability.checks import (
    executions_without_decision,
    find_secrets,
    match_executions,
    max_in_window,
    tally_results,
)


def decision(cid: str, ts: str, verdict: str = "allowed") -> dict[str, Any]:
    return {"kind": "command.decision", "id": cid, "decision": verdict, "ts": ts}


def outcome(cid: str, provider_id: str | None, ts: str) -> dict[str, Any]:
    record = {"kind": "command.outcome", "id": cid, "ts": ts, "status": "succeeded"}
    if provider_id:
        record["provider_command_id"] = provider_id
    return record


def executed(provider_id: str, at: str) -> dict[str, Any]:
    return {"command_id": provider_id, "at": at, "command": "lock"}


T = "2025-06-02T10:00:{:02d}+00:00"


def test_tally_counts_duplicate_refusals_apart() -> None:
    """A `duplicate_id` refusal is not a second answer; a second real final result is."""
    results = [
        {"id": "a", "status": "accepted", "reason": "ok"},
        {"id": "a", "status": "succeeded", "reason": "ok"},
        {"id": "a", "status": "rejected", "reason": "duplicate_id"},
        {"id": "b", "status": "failed", "reason": "timeout"},
        {"id": "b", "status": "succeeded", "reason": "ok"},
    ]
    tally = tally_results(results)
    assert tally.count("a") == 1 and tally.duplicates["a"] == 1
    assert tally.count("b") == 2


def test_tally_counts_a_resent_copy_apart_from_a_second_answer() -> None:
    """The same final result sent again after a restart is a copy; one that differs is not."""
    first = {"id": "a", "status": "succeeded", "reason": "ok", "ts": T.format(1)}
    results = [first, dict(first), {**first, "ts": T.format(2)}]
    tally = tally_results(results)
    assert tally.redelivered["a"] == 1
    assert tally.count("a") == 2


def test_executions_link_to_command_ids_through_outcomes() -> None:
    """The provider's command id in an outcome ties an execution to our id; others stay loose."""
    records = [decision("a", T.format(1)), outcome("a", "p1", T.format(2))]
    match = match_executions([executed("p1", T.format(1)), executed("p2", T.format(3))], records)
    assert [e["command_id"] for e in match.by_id["a"]] == ["p1"]
    assert [e["command_id"] for e in match.unmatched] == ["p2"]


def test_an_execution_without_any_decision_is_found() -> None:
    """A command at the car with no allowed decision before it is reported."""
    records = [decision("a", T.format(5), "refused")]
    assert executions_without_decision([executed("p1", T.format(6))], records)


def test_an_unlinked_execution_needs_its_own_earlier_decision() -> None:
    """Two executions cut off by a kill need two allowed decisions without outcomes, earlier."""
    records = [decision("a", T.format(1)), decision("b", T.format(10))]
    early = [executed("p1", T.format(2)), executed("p2", T.format(3))]
    assert len(executions_without_decision(early, records)) == 1  # "b" came after both
    late = [executed("p1", T.format(2)), executed("p2", T.format(11))]
    assert not executions_without_decision(late, records)


def test_a_linked_execution_before_its_decision_is_found() -> None:
    """An execution recorded as ours but earlier than our decision is reported."""
    records = [decision("a", T.format(9)), outcome("a", "p1", T.format(10))]
    assert executions_without_decision([executed("p1", T.format(2))], records)


def test_max_in_window_slides() -> None:
    """The busiest window is found wherever it starts."""
    assert max_in_window([0, 10, 59, 61, 62, 200], 60) == 4
    assert max_in_window([], 60) == 0


def test_find_secrets_sees_values_and_standalone_codes_only() -> None:
    """Exact values anywhere; a six-digit code only as a number of its own."""
    sources = {
        "log": "token=abcdef123456 at 2025-06-02T10:00:00.123456+00:00 hash 9a123456bc",
        "mqtt": '{"code": "123456"}',
    }
    leaks = find_secrets(sources, {"token": ["abcdef123456"]}, codes=["123456"])
    assert {(leak.kind, leak.where) for leak in leaks} == {("token", "log"), ("totp code", "mqtt")}
    assert "<SECRET>" in leaks[0].excerpt
