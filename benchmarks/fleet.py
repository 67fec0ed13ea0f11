"""Fleet: 500 simulated vehicles in one `ownerlink run` process — polls on schedule, a publish
burst, memory per vehicle.

    .venv/bin/python benchmarks/fleet.py [--quick] [--vehicles 500] [--per-account 10] [--json OUT]

The daemon runs as a subprocess against the simulator (over HTTP, on a thread of this process,
answering at once: no faults, no account limits) and a Mosquitto started here. Polling is set
far more eager than the defaults (parked 30-60 s, driving 15 s instead of 15-60 min and 60 s), so
500 vehicles make roughly 10 polls a second: 15-60x what the same fleet does with the defaults.
The daemon runs with TZ set to a zone where it is mid-day, so the activity prior never puts the
fleet to sleep and the load does not depend on when the benchmark runs.

Measured from outside the daemon:

- poll lag: every `<base>/<vehicle>/budget` document carries `next_poll`, the instant the poller
  planned; the simulator records when each `GET /vehicles/{id}` arrived. Start lag = first read of
  that vehicle at or after `next_poll` minus `next_poll`; done lag = the next budget document
  (published when that poll has finished) minus `next_poll`. A plan with no read before the next
  plan is a missed poll. Reported for all polls and for those after the start-up sweep (the
  poller starts an account's vehicles 0.5 s apart and any two vehicles 20 ms apart: 500 vehicles
  on 50 accounts take 10 s to be polled once);
- publish burst: Home Assistant's birth message (`<prefix>/status` = online) makes the daemon
  republish every discovery and state document at once; throughput = copies received / time from
  the first to the last copy, and whether every retained document came back;
- memory: RSS with N vehicles minus RSS with one vehicle (same configuration), per vehicle;
  RSS over time after the sweep (a leak would show as a slope).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from footprint import (
    V1_PATH,
    DaemonProcess,
    Message,
    Observer,
    Rig,
    RunSpec,
    add_install_option,
    choose_install,
    first,
    machine,
    measure,
    nth_status,
    print_machine,
    problems,
    status_topics,
)

from bridge.config import BudgetConfig
from bridge.events import CollectingAlerts
from bridge.polling.budget import Budget
from bridge.polling.scheduler import first_poll_offsets
from bridge.providers.base import CallKind
from bridge.store import Store

EAGER_POLLING = {
    "driving_interval_s": 15,
    "charging_interval_s": 30,
    "parked_min_interval_s": 30,
    "parked_max_interval_s": 60,
    "sleeping_interval_s": 300,
}
STATE_KINDS = ("status", "health", "location", "budget", "availability")
# "Every poll on schedule", made checkable.
LAG_P99_TARGET_S = 1.0


def noon_tz(now: datetime | None = None) -> str:
    """A POSIX TZ name whose local hour is about noon now (`Etc/GMT-3` means UTC+3)."""
    hour = (now or datetime.now(UTC)).hour
    offset = 12 - hour
    if offset > 14:
        offset -= 24
    if offset < -12:
        offset += 24
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


@dataclass(frozen=True, slots=True)
class Plan:
    at: float  # next_poll, epoch seconds
    mode: str
    published: float  # when the budget document reached the observer


def plans_of(messages: list[Message], base: str) -> dict[str, list[Plan]]:
    out: dict[str, list[Plan]] = {}
    for m in messages:
        parts = m.topic.split("/")
        if m.topic.startswith(base + "/") and parts[-1] == "budget" and m.payload:
            doc = json.loads(m.payload)
            at = datetime.fromisoformat(doc["next_poll"]).timestamp()
            out.setdefault(parts[-2], []).append(Plan(at, doc["mode"], m.at))
    return out


def reads_of(arrivals: list[tuple[float, str]]) -> dict[str, list[float]]:
    """Vehicle id -> arrival times of `GET <v1>/{id}` (a poll's single read)."""
    out: dict[str, list[float]] = {}
    prefix = V1_PATH + "/"
    for at, path in arrivals:
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            out.setdefault(path[len(prefix) :].lower(), []).append(at)
    return out


@dataclass
class Lag:
    start: list[float]
    done: list[float]
    missed: int
    modes: dict[str, int]
    worst: list[tuple[float, float, str]]  # (start lag, planned instant, vehicle)


def poll_lags(
    plans: dict[str, list[Plan]],
    reads: dict[str, list[float]],
    slugs: dict[str, str],
    *,
    since: float,
    until: float,
) -> Lag:
    """Match each plan due in [since, until) with the read that carried it out."""
    lag = Lag([], [], 0, {}, [])
    tolerance = 0.05  # the plan's instant is rounded by the scheduler; reads never come early
    for slug, ps in plans.items():
        times = reads.get(slugs[slug].lower(), [])
        for k, plan in enumerate(ps):
            if not since <= plan.at < until:
                continue
            lag.modes[plan.mode] = lag.modes.get(plan.mode, 0) + 1
            following = ps[k + 1].published if k + 1 < len(ps) else float("inf")
            read = next((t for t in times if plan.at - tolerance <= t <= following), None)
            if read is None:
                lag.missed += 1
                continue
            lag.start.append(max(0.0, read - plan.at))
            lag.worst.append((read - plan.at, plan.at, slug))
            if following != float("inf"):
                lag.done.append(following - plan.at)
    return lag


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lag_summary(values: list[float]) -> dict[str, float | int]:
    return {
        "count": len(values),
        "p50_ms": 1000 * pct(values, 0.50),
        "p99_ms": 1000 * pct(values, 0.99),
        "max_ms": 1000 * max(values, default=float("nan")),
        "within_100ms": sum(v <= 0.1 for v in values) / max(1, len(values)),
    }


# -- the burst ---------------------------------------------------------------------------------


def expected_copies(messages: list[Message], base: str, prefix: str) -> int:
    """Retained documents the daemon keeps and must republish: states and live discovery."""
    last: dict[str, bytes] = {}
    for m in messages:
        last[m.topic] = m.payload
    states = {t for t in last if t.startswith(base + "/") and t.split("/")[-1] in STATE_KINDS}
    discovery = {
        t for t, p in last.items() if t.startswith(prefix + "/") and p and t != f"{prefix}/status"
    }
    return len(states) + len(discovery)


def without_discovery(messages: list[Message], prefix: str, slugs: list[str]) -> list[str]:
    """Vehicles whose Home Assistant discovery config never reached the broker."""
    configured = {m.topic for m in messages if m.topic.startswith(prefix + "/") and m.payload}
    return [s for s in slugs if not any(f"_{s}/" in t for t in configured)]


def burst(
    observer: Observer, prefix: str, *, quiet_s: float = 2.5, limit_s: float = 60
) -> dict[str, Any]:
    """Send the birth message; count the republished copies until the broker goes quiet."""
    before = len(observer.snapshot())
    birth = time.time()
    observer.publish(f"{prefix}/status", "online")
    while True:
        time.sleep(0.25)
        ms = observer.snapshot()
        copies = duplicates(ms, before)
        now = time.time()
        if (copies and now - copies[-1].at > quiet_s) or now - birth > limit_s:
            break
    span = copies[-1].at - copies[0].at if len(copies) > 1 else float("nan")
    return {
        "copies": len(copies),
        "first_after_s": copies[0].at - birth if copies else None,
        "span_s": span,
        "msgs_per_s": len(copies) / span if span == span and span > 0 else None,
    }


def duplicates(messages: list[Message], start: int) -> list[Message]:
    """Messages from `start` on that repeat the topic's previous payload: republished copies
    (the daemon's publishers never send the same document twice in a row otherwise)."""
    last: dict[str, bytes] = {}
    out = []
    for i, m in enumerate(messages):
        if i >= start and last.get(m.topic) == m.payload:
            out.append(m)
        last[m.topic] = m.payload
    return out


# -- the budget's cost as an account's calls grow ---------------------------------------------


def budget_cost(sizes: list[int]) -> list[dict[str, float]]:
    """Milliseconds for `Budget.usage` (every plan) and `Budget.charge` (every call) with n calls
    in the account's 24 h window: what one big shared account costs per poll, on the loop."""
    out = []
    with tempfile.TemporaryDirectory(prefix="ownerlink-budget-") as folder:
        store = Store.open(Path(folder))
        now = time.time()
        config = BudgetConfig(calls_per_day=100_000, calls_per_hour=100_000)
        Budget(store=store, config=config, alerts=CollectingAlerts()).start()  # the tables
        for n in sizes:
            with store.transaction() as conn:
                conn.execute("DELETE FROM budget_calls")
                conn.executemany(
                    "INSERT INTO budget_calls (account, ts, kind) VALUES (?, ?, ?)",
                    [("acct", now - 86_000 + i * 86_000 / n, "read") for i in range(n)],
                )
            # A fresh Budget per size: its in-memory mirror loads the rows just written.
            budget = Budget(
                store=store,
                config=config,
                alerts=CollectingAlerts(),
                clock=lambda: datetime.fromtimestamp(now, UTC),
            )
            usage = timed(lambda b=budget: b.usage("acct"), 5)
            charge = timed(lambda b=budget: b.charge("acct", CallKind.READ), 5)
            out.append({"calls": n, "usage_ms": usage, "charge_ms": charge})
        store.close()
    return out


def timed(call: Any, times: int) -> float:
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        samples.append(1000 * (time.perf_counter() - began))
    return statistics.median(samples)


# -- the run -----------------------------------------------------------------------------------


def dropped(daemon: DaemonProcess) -> int:
    """Messages the daemon's MQTT client refused because paho's queue was full (it logs each)."""
    return sum(1 for line in daemon.log_lines() if "queue full" in str(line.get("event")))


def fleet_run(rig: Rig, spec: RunSpec, duration_s: float) -> dict[str, Any]:
    prepared = rig.prepare(spec)
    base, prefix = prepared.base, prepared.prefix
    mark = len(rig.arrivals.items)
    samples: list[tuple[float, float, float]] = []  # (wall, cpu seconds, rss MB)
    with Observer(rig.broker.host, rig.broker.port, [f"{base}/#", f"{prefix}/#"]) as observer:
        daemon = DaemonProcess(prepared)
        daemon.start()
        try:
            online = observer.wait(first(lambda t: t == f"{base}/bridge/state", b"online"), 60)
            if online is None:
                raise RuntimeError(f"the daemon did not come online; see {daemon.log_path}")
            everyone = None
            end = daemon.started_at + duration_s
            while time.time() < end and daemon.alive():
                samples.append((time.time(), daemon.cpu_seconds(), daemon.rss() / 2**20))
                time.sleep(min(5.0, max(0.0, end - time.time())))
            everyone = nth_status(base, spec.vehicles)(observer.snapshot())
            samples.append((time.time(), daemon.cpu_seconds(), daemon.rss() / 2**20))
            t_end = time.time()
            before_burst = observer.snapshot()
            expected = expected_copies(before_burst, base, prefix)
            undiscovered = without_discovery(before_burst, prefix, list(prepared.slugs))
            dropped_before = dropped(daemon)
            republish = burst(observer, prefix)
            rss_after_burst = daemon.rss() / 2**20
            dropped_in_burst = dropped(daemon) - dropped_before
            messages = observer.snapshot()
        finally:
            code, stop_s = daemon.stop()
    t0 = daemon.started_at
    plans = plans_of(messages, base)
    # The first plans are published once every vehicle is resolved (one listing per account).
    first_plan = min((ps[0].at for ps in plans.values() if ps), default=online.at)
    sweep_end = first_plan + sweep_s(spec.vehicles, spec.per_account) + 5
    reads = reads_of(rig.arrivals.items[mark:])
    all_lag = poll_lags(plans, reads, prepared.slugs, since=t0, until=t_end)
    worst = sorted(all_lag.worst, reverse=True)[:5]
    steady = poll_lags(plans, reads, prepared.slugs, since=sweep_end, until=t_end)
    steady_samples = [s for s in samples if s[0] >= sweep_end] or samples[-2:]
    window = steady_samples[-1][0] - steady_samples[0][0]
    cpu = 100 * (steady_samples[-1][1] - steady_samples[0][1]) / window if window > 0 else None
    rss_trend = None
    if len(steady_samples) >= 3 and window > 0:
        xs = [s[0] for s in steady_samples]
        ys = [s[2] for s in steady_samples]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        rss_trend = (
            60
            * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs)
        )
    steady_reads = sum(1 for ts in reads.values() for t in ts if sweep_end <= t < t_end)
    in_window = [m for m in messages if sweep_end <= m.at < t_end]
    log = problems(daemon.log_lines())
    return {
        "vehicles": spec.vehicles,
        "accounts": prepared.accounts,
        "duration_s": duration_s,
        "online_s": online.at - t0,
        "all_polled_s": everyone.at - t0 if everyone else None,
        "polled": len(status_topics(base)(messages)),
        "first_plan_s": first_plan - t0,
        "sweep_end_s": sweep_end - t0,
        "steady_window_s": max(0.0, t_end - sweep_end),
        "polls_per_s": steady_reads / max(1e-9, t_end - sweep_end) if t_end > sweep_end else None,
        "publishes_per_s": len(in_window) / max(1e-9, t_end - sweep_end)
        if t_end > sweep_end
        else None,
        "lag_all": {
            "start": lag_summary(all_lag.start),
            "done": lag_summary(all_lag.done),
            "missed": all_lag.missed,
            "modes": all_lag.modes,
            "worst": [(round(lag, 3), round(at - t0, 2), slug) for lag, at, slug in worst],
        },
        "lag_steady": {
            "start": lag_summary(steady.start),
            "done": lag_summary(steady.done),
            "missed": steady.missed,
            "modes": steady.modes,
        },
        "cpu_pct_steady": cpu,
        "rss_mb_end": samples[-1][2],
        "rss_mb_after_burst": rss_after_burst,
        "rss_trend_mb_per_min": rss_trend,
        "rss_samples": [(round(s[0] - t0, 1), round(s[2], 1)) for s in samples],
        "burst": republish | {"expected": expected, "dropped_by_daemon": dropped_in_burst},
        "mqtt_dropped_before_burst": dropped_before,
        "vehicles_without_discovery": len(undiscovered),
        "exit_code": code,
        "stop_s": stop_s,
        "log_problems": log,
        "job_missed": sum(v for k, v in log.items() if "poll.job_missed" in k),
    }


def sweep_s(vehicles: int, per_account: int) -> float:
    """Seconds from the first vehicle's first poll to the last one's (accounts in blocks)."""
    return max(first_poll_offsets([str(n // per_account) for n in range(vehicles)]))


def run_fleet(vehicles: int, per_account: int, duration_s: float, quick: bool) -> dict[str, Any]:
    tz = noon_tz()
    polling, env = dict(EAGER_POLLING), {"TZ": tz}
    with Rig(vehicles=vehicles) as rig:
        settle, window = (3.0, 1.0) if quick else (15.0, 5.0)
        baseline = measure(
            rig,
            RunSpec(label="fleet-1", polling=polling, env=env),
            settle_s=settle,
            window_s=window,
        )
        print(f"baseline, 1 vehicle: RSS {baseline.rss_mb:.1f} MB", flush=True)
        spec = RunSpec(
            label="fleet", vehicles=vehicles, per_account=per_account, polling=polling, env=env
        )
        result = fleet_run(rig, spec, duration_s)
    per_vehicle = (result["rss_mb_end"] - baseline.rss_mb) * 1024 / max(1, vehicles - 1)
    costs = budget_cost([100, 1_000, 10_000] if quick else [100, 1_000, 10_000, 50_000])
    steady = result["lag_steady"]
    on_schedule = (
        result["lag_all"]["missed"] == 0
        and result["job_missed"] == 0
        and steady["start"]["count"] > 0
        and steady["start"]["p99_ms"] <= LAG_P99_TARGET_S * 1000
    )
    burst_ok = (
        result["burst"]["copies"] >= result["burst"]["expected"]
        and result["burst"]["dropped_by_daemon"] == 0
    )
    nothing_dropped = result["mqtt_dropped_before_burst"] == 0
    return result | {
        "benchmark": "fleet",
        "mode": "quick" if quick else "full",
        "tz": tz,
        "polling": EAGER_POLLING,
        "baseline_rss_mb": baseline.rss_mb,
        "kb_per_vehicle": per_vehicle,
        "budget_cost": costs,
        "targets": {
            "every_poll_on_schedule": on_schedule,
            "burst_republishes_everything": burst_ok,
            "no_mqtt_message_dropped": nothing_dropped,
        },
    }


def num(x: float | None) -> float:
    """None (not measured) as NaN for printing; a real 0.0 stays 0.0."""
    return float("nan") if x is None else x


def print_result(r: dict[str, Any]) -> None:
    def lag(x: dict[str, Any]) -> str:
        return (
            f"p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms, max {x['max_ms']:.1f} ms "
            f"({x['count']} polls, {100 * x['within_100ms']:.1f} % within 100 ms)"
        )

    print(
        f"\n{r['vehicles']} vehicles on {r['accounts']} accounts, {r['duration_s']:.0f} s, "
        f"TZ {r['tz']}; online after {r['online_s']:.2f} s; every vehicle polled after "
        f"{num(r['all_polled_s']):.1f} s ({r['polled']} polled)"
    )
    for name in ("lag_all", "lag_steady"):
        x = r[name]
        title = (
            "all polls" if name == "lag_all" else f"after the sweep ({r['steady_window_s']:.0f} s)"
        )
        print(f"  {title}: start lag {lag(x['start'])}")
        print(
            f"  {' ' * len(title)}  done lag  {lag(x['done'])}; missed {x['missed']}; "
            f"modes {x['modes']}"
        )
    print(f"  worst start lags (lag s, planned s after start, vehicle): {r['lag_all']['worst']}")
    polls = r["polls_per_s"]
    print(
        f"  steady: {num(polls):.1f} polls/s, {num(r['publishes_per_s']):.1f}"
        f" MQTT messages/s, daemon CPU {num(r['cpu_pct_steady']):.1f} % of one core"
    )
    b = r["burst"]
    print(
        f"  burst (HA birth): {b['copies']} of {b['expected']} retained documents republished in "
        f"{b['span_s']:.2f} s = {num(b['msgs_per_s']):.0f} msg/s (first copy "
        f"{num(b['first_after_s']):.2f} s after the birth: the publisher's random delay)"
    )
    print(
        f"  MQTT messages the daemon dropped (paho queue full) before the burst: "
        f"{r['mqtt_dropped_before_burst']}, in it: {b['dropped_by_daemon']}; vehicles without "
        f"discovery before the burst: {r['vehicles_without_discovery']}"
    )
    print(
        f"  RSS: {r['rss_mb_end']:.1f} MB with {r['vehicles']} vehicles, "
        f"{r['baseline_rss_mb']:.1f} MB with 1 → {r['kb_per_vehicle']:.1f} KB per vehicle; "
        f"trend after the sweep {num(r['rss_trend_mb_per_min']):+.2f} MB/min; "
        f"after the burst {r['rss_mb_after_burst']:.1f} MB"
    )
    print(
        f"  log problems: {r['log_problems'] or 'none'}; exit {r['exit_code']} "
        f"after {r['stop_s']:.2f} s"
    )
    print(
        "  budget cost by calls in the account's 24 h window: "
        + ", ".join(
            f"{c['calls']}: usage {c['usage_ms']:.1f} ms, charge {c['charge_ms']:.1f} ms"
            for c in r["budget_cost"]
        )
    )
    t = r["targets"]
    print(
        "SUMMARY: fleet "
        + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in t.items())
        + f"; start lag p99 {r['lag_steady']['start']['p99_ms']:.1f} ms after the sweep, "
        f"{r['kb_per_vehicle']:.0f} KB/vehicle, burst {num(b['msgs_per_s']):.0f} msg/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 vehicles, under a minute")
    parser.add_argument("--vehicles", type=int, default=None)
    parser.add_argument("--per-account", type=int, default=10, help="vehicles per account")
    parser.add_argument("--duration", type=float, default=None, help="seconds before the burst")
    parser.add_argument("--json", type=Path, help="write the results here")
    add_install_option(parser)
    args = parser.parse_args()
    info = machine() | {"daemon_install": choose_install(args)}
    print_machine(info)
    vehicles = args.vehicles or (30 if args.quick else 500)
    # Long enough after the start-up sweep for every vehicle to be polled again (parked: 30-60 s).
    duration = args.duration or (sweep_s(vehicles, args.per_account) + (30 if args.quick else 90))
    began = time.monotonic()
    result = run_fleet(vehicles, args.per_account, duration, args.quick) | {"machine": info}
    result["wall_s"] = time.monotonic() - began
    print_result(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
