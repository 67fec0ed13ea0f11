"""Budget and freshness: Ownerlink's poller against fixed-interval polling on the same cars.

    .venv/bin/python benchmarks/freshness.py [--seeds 1,2,3,4,5] [--days 7]

For each seed, one simulator (three cars: a commuter EV, a combustion car parked for days, an EV
charging overnight) runs from a Monday midnight on a manual clock that jumps from event to event
(the same Poller code as in the daemon; only APScheduler's real-time timer is swapped for a
discrete-event one), for a week by default so the Poller can learn each car's habits; `--days 1`
shows the first day, before any history. Each car is consented
to two accounts: one polled by Ownerlink's Poller (real provider, budget, policy, breaker), one
by a fixed-interval poller spending the same number of calls (token refreshes included). The
fixed interval is solved from Ownerlink's call count and checked against the count it produced.

Reported per car: calls used, calls over budget (any sliding 24 h / 1 h window), 429s (simulator
ground truth, /sim/accounts), and the lag of every upload the car made while driving or charging:
simulated time from the upload (simulator ground truth) until a state at least that fresh reached
the poller's `on_state` callback. The MQTT publish after that callback is not part of the run (it
is sub-millisecond next to lags of seconds to minutes); nor is HTTP latency, which takes no
simulated time here. Medians over the seeds are printed last, with the ratio of mean lags.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import (
    Charged,
    CountingGate,
    FixedPoller,
    LagStats,
    Publishes,
    SimWorld,
    UploadLog,
    lags,
    max_per_day,
    over_budget,
)

from bridge import logs
from bridge.config import BudgetConfig, PollingConfig
from bridge.polling.budget import Budget
from bridge.polling.history import ActivityHistory
from bridge.polling.scheduler import Poller
from bridge.providers.base import FreeGate
from bridge.store import Store

START = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday: the week starts with commuting days
SAMPLE_S = 5.0  # ground-truth sampling step; uploads are never closer together than this
TOKEN_VALID_S = 1200.0 - 60.0  # the simulator's token lifetime minus the provider's refresh lead
PROFILES = {
    "commuter_ev": "commuter EV",
    "weekend_ice": "ICE parked for days",
    "overnight_ev": "EV charging overnight",
}


@dataclass(frozen=True, slots=True)
class Side:
    """One poller's result for one car."""

    calls: int
    max_day: int
    over: int
    throttled: int
    lag: LagStats


@dataclass(frozen=True, slots=True)
class CarResult:
    profile: str
    ours: Side
    fixed: Side
    fixed_interval_s: float
    active_uploads: int


async def simulate(
    seed: int, days: float, fixed_intervals: dict[str, float] | None
) -> dict[str, CarResult | Side]:
    """One run. Without `fixed_intervals`, only Ownerlink's poller runs (to count its calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        world = SimWorld(seed=seed, start=START, state_dir=Path(tmp))
        cars = {v.spec.profile.value: v.vehicle_id for v in world.sim.vehicles}
        store = Store.open(Path(tmp) / "budget")
        config = BudgetConfig()
        budget = Budget(store=store, config=config, alerts=world.alerts, clock=world.now)
        budget.start()
        ActivityHistory(store=store).start()
        ours_gate = CountingGate(budget, world.now)
        fixed_gate = CountingGate(FreeGate(), world.now)
        published = {p: Publishes() for p in cars}
        for profile, vehicle_id in cars.items():
            world.add_account(f"own-{profile}", vehicle_id)
            if fixed_intervals is not None:
                world.add_account(f"fixed-{profile}", vehicle_id)
        poller = Poller(
            providers={f"own-{p}": world.provider(f"own-{p}", ours_gate) for p in cars},
            vehicles={p: (f"own-{p}", vid) for p, vid in cars.items()},
            budget=budget,
            config=PollingConfig(),
            on_state=lambda slug, state: published[slug].record(world.now(), state),
            on_availability=lambda slug, online: None,
            on_budget=lambda slug, doc: None,
            alerts=world.alerts,
            clock=world.now,
            timer=world.timer,
            history=ActivityHistory(store=store),
            tz=UTC,  # the simulated world keeps UTC as its local time
        )
        fixed = {}
        if fixed_intervals is not None:
            for p, vid in cars.items():
                provider = world.provider(f"fixed-{p}", fixed_gate)
                fixed[p] = FixedPoller(
                    world=world, provider=provider, vehicle_id=vid, interval_s=fixed_intervals[p]
                )
                fixed[p].start(f"fixed-{p}")
        truth = {p: UploadLog(world, vid) for p, vid in cars.items()}
        if fixed_intervals is not None:
            for p, log in truth.items():
                world.every(f"truth-{p}", SAMPLE_S, log.sample)
        await poller.start()
        end = START + timedelta(days=days)
        await world.timer.run_until(end)
        await poller.stop()
        if world.timer.errors:
            raise RuntimeError(f"poll jobs failed: {world.timer.errors[:3]}")
        accounts = {a["login_hint"]: a for a in (await world.admin("/sim/accounts"))["accounts"]}
        store.close()
    out: dict[str, CarResult | Side] = {}
    for p in cars:
        ours = _side(
            ours_gate.calls.get(f"own-{p}", []),
            accounts.get(f"own-{p}"),
            config,
            truth[p],
            published[p],
            end,
        )
        if fixed_intervals is None:
            out[p] = ours
            continue
        theirs = _side(
            fixed_gate.calls.get(f"fixed-{p}", []),
            accounts.get(f"fixed-{p}"),
            config,
            truth[p],
            fixed[p].publishes,
            end,
        )
        active = len(truth[p].active(START.timestamp()))
        out[p] = CarResult(p, ours, theirs, fixed_intervals[p], active)
    return out


def _side(
    calls: list[Charged],
    account: dict[str, Any] | None,
    config: BudgetConfig,
    truth: UploadLog,
    publishes: Publishes,
    end: datetime,
) -> Side:
    return Side(
        calls=len(calls),
        max_day=max_per_day(calls),
        over=over_budget(calls, per_day=config.calls_per_day, per_hour=config.calls_per_hour),
        throttled=account["throttled"] if account else 0,
        lag=lags(truth.active(START.timestamp()), publishes, end.timestamp()),
    )


def calls_at_interval(interval_s: float, seconds: float) -> float:
    """Calls a fixed poller makes: a read per interval, plus a token refresh whenever the access
    token (refreshed a minute before its 20 minutes are up) has lapsed since the last refresh."""
    reads = seconds / interval_s
    reads_per_token = max(1, -int(-TOKEN_VALID_S // interval_s))
    return reads * (1 + 1 / reads_per_token)


def interval_for(calls: int, seconds: float) -> float:
    """The fixed interval that spends `calls` over `seconds` (bisection on calls_at_interval)."""
    lo, hi = 1.0, seconds
    for _ in range(100):
        mid = (lo + hi) / 2
        if calls_at_interval(mid, seconds) > calls:
            lo = mid
        else:
            hi = mid
    return hi


async def run_seed(seed: int, days: float) -> dict[str, CarResult]:
    """Count Ownerlink's calls, solve the fixed intervals, then run both side by side; correct
    the fixed interval once more if its real count missed Ownerlink's by more than 2 %."""
    seconds = days * 86_400.0
    alone = await simulate(seed, days, None)
    counts = {p: r.calls for p, r in alone.items() if isinstance(r, Side)}
    intervals = {p: interval_for(max(1, n), seconds) for p, n in counts.items()}
    for _ in range(3):
        both = await simulate(seed, days, intervals)
        results = {p: r for p, r in both.items() if isinstance(r, CarResult)}
        off = {p: r.fixed.calls / max(1, r.ours.calls) for p, r in results.items()}
        if all(abs(ratio - 1) <= 0.02 for ratio in off.values()):
            break
        intervals = {p: intervals[p] * off[p] for p in intervals}
    return results


def _fmt(x: float) -> str:
    return "    n/a" if x != x else f"{x:7.1f}"  # NaN check: a car that never drove nor charged


def print_table(title: str, results: dict[str, CarResult]) -> None:
    print(f"\n{title}")
    head = (
        f"{'car':22} {'poller':8} {'calls':>6} {'max/24h':>7} {'over':>5} {'429s':>5} "
        f"{'uploads':>7} {'lag mean':>8} {'median':>7} {'p95':>7}  interval"
    )
    print(head)
    print("-" * len(head))
    for p, r in results.items():
        for name, side, note in (
            ("ownerlink", r.ours, "policy"),
            ("fixed", r.fixed, f"{r.fixed_interval_s:.0f} s"),
        ):
            print(
                f"{PROFILES[p]:22} {name:8} {side.calls:6d} {side.max_day:7d} {side.over:5d} "
                f"{side.throttled:5d} {r.active_uploads:7d} {_fmt(side.lag.mean)} "
                f"{_fmt(side.lag.median)} {_fmt(side.lag.p95)}  {note}"
            )


def _pick(result: CarResult, which: str) -> Side:
    return result.ours if which == "ours" else result.fixed


def pooled_mean(results: dict[str, CarResult], which: str) -> float:
    """Mean lag over every active upload of every car (weights cars by their uploads)."""
    total = sum(
        _pick(r, which).lag.mean * r.active_uploads for r in results.values() if r.active_uploads
    )
    return total / max(1, sum(r.active_uploads for r in results.values()))


def median_table(runs: list[dict[str, CarResult]]) -> dict[str, CarResult]:
    """Per car and poller, the median of each figure over the seeds."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    def side(p: str, which: str) -> Side:
        sides = [getattr(run[p], which) for run in runs]
        return Side(
            calls=int(med([s.calls for s in sides])),
            max_day=int(med([s.max_day for s in sides])),
            over=int(med([s.over for s in sides])),
            throttled=int(med([s.throttled for s in sides])),
            lag=LagStats(
                int(med([s.lag.count for s in sides])),
                int(med([s.lag.censored for s in sides])),
                med([s.lag.mean for s in sides]),
                med([s.lag.median for s in sides]),
                med([s.lag.p95 for s in sides]),
            ),
        )

    return {
        p: CarResult(
            p,
            side(p, "ours"),
            side(p, "fixed"),
            med([run[p].fixed_interval_s for run in runs]),
            int(med([run[p].active_uploads for run in runs])),
        )
        for p in runs[0]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated simulator seeds")
    parser.add_argument("--days", type=float, default=7.0, help="simulated days per run")
    args = parser.parse_args()
    logs.configure("warning", "console")  # token refreshes and polls would drown the table
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs, ratios = [], []
    began = time.monotonic()
    for seed in seeds:
        results = asyncio.run(run_seed(seed, args.days))
        runs.append(results)
        ratio = pooled_mean(results, "fixed") / pooled_mean(results, "ours")
        ratios.append(ratio)
        print_table(
            f"seed {seed}: {args.days:g} simulated days from {START:%a %Y-%m-%d}, "
            f"budget {BudgetConfig().calls_per_day}/day — pooled lag ratio {ratio:.2f}x",
            results,
        )
    summary = median_table(runs)
    print_table(f"median over {len(seeds)} seeds", summary)
    over = sum(r.ours.over for run in runs for r in run.values())
    throttled = sum(r.ours.throttled for run in runs for r in run.values())
    ratio = statistics.median(ratios)
    ok = over == 0 and throttled == 0 and ratio >= 3.0
    print(
        f"\nSUMMARY: {len(seeds)} seeds x {args.days:g} days: ownerlink over budget {over}, "
        f"429s {throttled}; active-lag mean ratio fixed/ownerlink {ratio:.2f}x (median over "
        f"seeds; target ≥ 3x) — {'PASS' if ok else 'FAIL'} "
        f"[{time.monotonic() - began:.0f} s wall]"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
