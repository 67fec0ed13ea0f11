"""Provider chaos: hours of a simulated day of API faults against the real daemon, in-process.

How a simulated day passes for the daemon: it runs in this process with the simulator's sped-up
clock as its own clock (`SimTimeDaemon`: budget windows, back-off, staleness and the poll plan
are all simulated time; only the poll timer needed telling the speed). Its provider requests go
over real sockets through a recording transport, so every call on the wire is counted at
simulated time, token refreshes included.

The chaos, from a few simulated minutes after start until three quarters of the run: 10 % 5xx,
5 % timeouts, 2 % malformed bodies; 429 bursts (every call refused for ten simulated minutes,
several times); every access token invalidated each simulated minute (as /sim/tokens/expire
does, between two requests: the instant between a refresh and its retry has its own test);
and one suspension of the account (403 on every call). Then the faults stop. Commands arrive
over MQTT throughout.

The token endpoint gets the 5xx share only. The simulator rotates refresh tokens strictly (the
presented one dies at once), so a timeout or garbled body *after* it rotated loses the new
refresh token for good: no client can recover from that without the owner logging in again.
That case has its own tests below (`test_lost_refresh_answer_*`), and is reported in
docs/reliability.md.

Asserted: the daemon never crashes (no error logged, still polling); no sliding 24 h or 1 h
window holds more calls than the budget; the simulator's own limits never throttle us; calls per
simulated minute stay bounded (no tight retry loop); availability goes offline during the
suspension and back online after it, without a restart; a fresh state is published after the
faults stop; every command gets exactly one final result and none runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from bridge.config import Settings
from bridge.demo.run import login
from bridge.simulator import Limits, Timings
from bridge.simulator.faults import TRANSPORT_FAULTS, FaultInjector, FaultKind, Meter
from tests.conftest import BrokerAddress
from tests.reliability.checks import decisions, match_executions, max_in_window, tally_results
from tests.reliability.conftest import Figures
from tests.support.daemon import (
    CHAOS_APP,
    CommandStream,
    DaemonConfig,
    MqttObserver,
    RecordingTransport,
    SimHandle,
    SimTimeDaemon,
    audit_records,
    await_until,
    running_simulator,
)

FAULTS = "5xx=0.1,timeout=0.05,malformed=0.02"
BURST = "429=1.0"
BURST_S = 600.0
EXPIRE_EVERY_S = 60.0
MAX_CALLS_PER_SIM_MINUTE = 12  # a poll with a 401, a refresh and a retry, plus a command's calls
# Faults the daemon is expected to log at error level: none. Anything logged at error is a bug.
ERROR_LEVELS = frozenset({"error", "critical", "exception"})


@dataclass(frozen=True, slots=True)
class Plan:
    """A chaos run, in simulated seconds from the daemon's start."""

    hours: float
    speed: float
    suspension_s: float
    stale_after_s: float
    suspension_pause_s: float
    bursts: int
    command_every_s: float  # an app's command every so often (an owner's few a day)

    @property
    def length_s(self) -> float:
        return self.hours * 3600

    @property
    def suspend_at(self) -> float:
        return 0.4 * self.length_s

    @property
    def clear_at(self) -> float:
        return 0.75 * self.length_s

    def burst_starts(self) -> list[float]:
        """Bursts spread over the faulty span before the suspension."""
        span = self.suspend_at - 0.1 * self.length_s
        return [0.1 * self.length_s + span * (i + 0.5) / self.bursts for i in range(self.bursts)]


MONDAY = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)  # the commute starts soon: the car will move
SHORT = Plan(
    hours=3,
    speed=1440,
    suspension_s=2700,
    stale_after_s=1200,
    suspension_pause_s=3600,
    bursts=2,
    command_every_s=1800,
)
DAY = Plan(
    hours=24,
    speed=720,
    suspension_s=3 * 3600,
    stale_after_s=2 * 3600,
    suspension_pause_s=4 * 3600,
    bursts=6,
    command_every_s=7200,
)


def chaos_settings(
    root: Path, sim: SimHandle, broker: BrokerAddress, base: str, plan: Plan
) -> Settings:
    config = DaemonConfig.for_simulator(
        root,
        sim,
        broker,
        base,
        extra={
            # The budget at its defaults (250/day, 40/h): the point is that faults never push
            # the daemon over it. A timeout costs 0.5 real s (12 simulated minutes at 1440x).
            "budget": {"calls_per_day": 250, "calls_per_hour": 40},
            "accounts": {"sim": {"request_timeout_s": 0.5}},
            "polling": {
                "stale_after_s": plan.stale_after_s,
                "suspension_pause_s": plan.suspension_pause_s,
            },
            "commands": {"rate_limit_per_minute": 6, "timeout_s": 20},
        },
    )
    return Settings(**config.document())


# Faults that strike after the simulator did the work (rotated the refresh token).
AFTER_WORK = TRANSPORT_FAULTS - {FaultKind.SERVER_ERROR}


class TokenEndpointSpared(FaultInjector):
    """The simulator's fault injector, but the token endpoint only ever gets 5xx (see above)."""

    spared = 0

    def roll(self, allowed: frozenset[FaultKind]) -> FaultKind | None:
        fault = super().roll(allowed)
        if allowed == TRANSPORT_FAULTS and fault in AFTER_WORK:
            self.served[fault] -= 1
            self.spared += 1
            return None
        return fault


def spare_token_endpoint(sim: SimHandle) -> TokenEndpointSpared:
    """Swap the simulator's injector for one that spares the token endpoint (seeded alike)."""
    current = sim.sim.faults
    spared = TokenEndpointSpared(rates=current.rates, rng=random.Random(f"{sim.sim.seed}:faults"))
    sim.sim.faults = spared
    return spared


class Chaos:
    """Drives the fault timeline on simulated time while the daemon runs."""

    def __init__(
        self, sim: SimHandle, plan: Plan, start: datetime, transport: RecordingTransport
    ) -> None:
        self.sim, self.plan, self.start, self.transport = sim, plan, start, transport
        self.expiries = 0
        self.suspended_at: datetime | None = None
        self.cleared_at: datetime | None = None

    def elapsed(self) -> float:
        return (self.sim.sim.now() - self.start).total_seconds()

    async def run(self) -> None:
        next_expiry = 60.0
        bursts = self.plan.burst_starts()
        await self.until(0.05 * self.plan.length_s)
        self.sim.set_faults(FAULTS)
        while (now := self.elapsed()) < self.plan.clear_at:
            if now >= next_expiry and not self.transport.in_flight:
                # Synchronous, between two requests: never in the instant between a refresh and
                # its retry (that race has its own test).
                self.sim.sim.expire_tokens()
                self.expiries += 1
                next_expiry = now + EXPIRE_EVERY_S
            if bursts and now >= bursts[0]:
                bursts.pop(0)
                await self._burst()
            if self.suspended_at is None and now >= self.plan.suspend_at:
                self._suspend()
            await asyncio.sleep(0.005)
        self.sim.set_faults("")
        self.cleared_at = self.sim.sim.now()

    async def _burst(self) -> None:
        self.sim.set_faults(BURST)
        await self.until(self.elapsed() + BURST_S)
        self.sim.set_faults(FAULTS)

    def _suspend(self) -> None:
        """One suspension of the account, as Ford does after too many calls (403 on every call)."""
        sim = self.sim.sim
        account = next(iter(sim.auth.accounts))
        with sim.lock:
            self.suspended_at = sim.now()
            meter = sim.limiter.meters.setdefault(account, Meter())
            meter.suspended_until = self.suspended_at + timedelta(seconds=self.plan.suspension_s)

    async def until(self, elapsed_s: float, done: Callable[[], bool] = lambda: False) -> None:
        """Wait for `elapsed_s` simulated seconds from the start, or until `done()`."""
        while self.elapsed() < elapsed_s and not done():
            await asyncio.sleep(0.005)


def sim_times(
    mqtt: MqttObserver, topic: str, sim: SimHandle, anchor: tuple[float, datetime]
) -> list[tuple[datetime, bytes]]:
    """Messages on `topic` with their simulated receipt time (monotonic times speed)."""
    mono0, sim0 = anchor
    speed = sim.sim.clock.speed
    return [
        (sim0 + timedelta(seconds=(m.at - mono0) * speed), m.payload)
        for m in mqtt.snapshot()
        if m.topic == topic
    ]


async def run_provider_chaos(
    broker: BrokerAddress, root: Path, base: str, plan: Plan, figures: Figures
) -> None:
    timings = Timings(command_delay_s=0.2, timeout_delay_s=2.0)
    with (
        running_simulator(
            vehicles=1, speed=plan.speed, limits=Limits(), timings=timings, start=MONDAY
        ) as sim,
        MqttObserver(broker.host, broker.port, (f"{base}/#",)) as mqtt,
        capture_logs() as logs,
    ):
        settings = chaos_settings(root, sim, broker, base, plan)
        await login(settings)
        injector = spare_token_endpoint(sim)
        transport = RecordingTransport(sim.sim.now)
        daemon = SimTimeDaemon(settings, sim=sim, transport=transport)
        await daemon.start()
        start = sim.sim.now()
        anchor = (time.monotonic(), start)
        chaos = Chaos(sim, plan, start, transport)
        stream = CommandStream(
            mqtt,
            f"{base}/app/{CHAOS_APP}/car-1/cmd/lock",
            base=base,
            interval_s=plan.command_every_s / plan.speed,
        )
        try:
            await await_until(lambda: mqtt.first(f"{base}/car-1/status"), 10, what="a first state")
            stream.start()
            await chaos.run()
            await chaos.until(plan.length_s)
            # The daemon's pause is counted from the 403 it met, and the faults and back-off
            # place that anywhere within the suspension (or, with retries, just after it): a late
            # one still gets its whole pause before "never came back online" is judged.
            availability_topic = f"{base}/car-1/availability"
            await chaos.until(
                plan.length_s + plan.suspension_pause_s,
                lambda: last_payload(mqtt, availability_topic) == b"online",
            )
            ended_at = sim.sim.now()
            stream.finish()
            await await_until(
                lambda: not stream.unanswered(), 60, what="an answer to every command"
            )
            stream.stop()
            polling = daemon.poller.status("car-1")
            running_logs = list(logs)  # what was logged while running (stopping has its own test)
        finally:
            stream.stop()
            await daemon.stop()
        accounts = sim.accounts()
        executed = sim.executed()
        faults = sim.get("/sim/faults")["served"] | {"token_endpoint_spared": injector.spared}
    records = audit_records(settings.state_dir)
    (root / "calls.txt").write_text(
        "\n".join(
            f"{(c.at - start.timestamp()) / 3600:7.3f}h {c.method} {c.path} {c.status}"
            for c in transport.calls
        )
    )
    figures["run_h"] = round((ended_at - start).total_seconds() / 3600, 2)
    availability = sim_times(mqtt, availability_topic, sim, anchor)
    statuses = sim_times(mqtt, f"{base}/car-1/status", sim, anchor)
    judge(
        plan,
        chaos,
        start,
        transport,
        accounts,
        availability,
        statuses,
        polling,
        running_logs,
        figures,
        faults,
    )
    judge_commands(stream, mqtt, base, records, executed, figures)


def last_payload(mqtt: MqttObserver, topic: str) -> bytes | None:
    payloads = [m.payload for m in mqtt.snapshot() if m.topic == topic]
    return payloads[-1] if payloads else None


def offline_during(
    availability: list[tuple[datetime, bytes]], start: datetime, end: datetime
) -> list[datetime]:
    """When the offline spell that overlaps [start, end] began (empty: online all along)."""
    spell: datetime | None = None
    for at, payload in availability:
        if at > end:
            break
        if payload == b"offline" and spell is None:
            spell = at
        elif payload == b"online":
            if spell is not None and at >= start:
                return [spell]
            spell = None
    return [spell] if spell is not None else []


def judge(
    plan: Plan,
    chaos: Chaos,
    start: datetime,
    transport: RecordingTransport,
    accounts: list[dict[str, Any]],
    availability: list[tuple[datetime, bytes]],
    statuses: list[tuple[datetime, bytes]],
    polling: dict[str, Any],
    logs: Sequence[Mapping[str, Any]],
    figures: Figures,
    faults: dict[str, int],
) -> None:
    times = [c.at for c in transport.calls]
    account = accounts[0]

    def hours(at: datetime) -> float:
        return round((at - start).total_seconds() / 3600, 2)

    assert chaos.suspended_at is not None and chaos.cleared_at is not None
    outage_end = chaos.suspended_at + timedelta(seconds=plan.suspension_s + plan.suspension_pause_s)
    offline = offline_during(availability, chaos.suspended_at, outage_end)
    back = [at for at, p in availability if p == b"online" and offline and at > offline[0]]
    fresh = [at for at, _ in statuses if at > chaos.cleared_at]
    errors = [e for e in logs if e.get("log_level") in ERROR_LEVELS]
    figures.update(
        simulated_hours=plan.hours,
        speed=plan.speed,
        calls=len(times),
        calls_unanswered=sum(1 for c in transport.calls if c.status is None),
        statuses=dict(Counter(str(c.status) for c in transport.calls)),
        max_calls_24h=max_in_window(times, 86_400),
        max_calls_1h=max_in_window(times, 3_600),
        max_calls_per_sim_minute=max_in_window(times, 60),
        budget_day=250,
        budget_hour=40,
        sim_throttled=account["throttled"],
        sim_refused_suspended=account["refused_suspended"],
        faults_served=faults,
        token_expiries=chaos.expiries,
        suspended_at_h=hours(chaos.suspended_at),
        suspension_h=plan.suspension_s / 3600,
        availability=[(hours(at), p.decode()) for at, p in availability],
        offline_at_h=hours(offline[0]) if offline else None,
        online_again_at_h=hours(back[0]) if back else None,
        faults_cleared_at_h=hours(chaos.cleared_at),
        first_fresh_state_after_clear_h=hours(fresh[0]) if fresh else None,
        error_logs=len(errors),
        final_polling=polling,
        ended_waiting_for_budget=polling.get("mode") == "exhausted",
    )
    assert not errors, f"errors logged under provider chaos: {errors[:5]}"
    assert figures["max_calls_24h"] <= 250, "over the daily budget"
    assert figures["max_calls_1h"] <= 40, "over the hourly budget"
    assert account["throttled"] == 0, "the simulator's own rate limit throttled us"
    assert figures["max_calls_per_sim_minute"] <= MAX_CALLS_PER_SIM_MINUTE, "a tight retry loop"
    assert offline, "availability was never offline during the suspension"
    assert back, "availability never came back online after the outage (no restart allowed)"
    # After the faults stop the daemon must be polling again: a fresh state, online at the end,
    # unless the only thing holding it back is its own budget (the chaos spent it: a read with a
    # refused token costs three calls), which it must then be waiting out, not stuck elsewhere.
    recovered = bool(fresh) and availability[-1][1] == b"online"
    assert recovered or figures["ended_waiting_for_budget"], (
        f"no fresh state after the faults stopped, and not waiting for budget: {polling}"
    )


def judge_commands(
    stream: CommandStream,
    mqtt: MqttObserver,
    base: str,
    records: list[dict[str, Any]],
    executed: list[dict[str, Any]],
    figures: Figures,
) -> None:
    tally = tally_results(mqtt.results(base))
    allowed = Counter(str(r["id"]) for r in decisions(records, "allowed"))
    match = match_executions(executed, records)
    figures.update(
        commands=len(stream.ids),
        command_finals=dict(
            Counter(f"{v[0]['status']}/{v[0]['reason']}" for v in tally.finals.values())
        ),
        commands_allowed=len(allowed),
        commands_executed=len(executed),
        commands_executed_unlinked=len(match.unmatched),
    )
    wrong = {cid: tally.count(cid) for cid in stream.ids if tally.count(cid) != 1}
    assert not wrong, f"commands without exactly one final result: {wrong}"
    assert all(n == 1 for n in allowed.values()), "an id was allowed twice"
    assert all(len(v) == 1 for v in match.by_id.values()), "a command executed twice"
    # A timeout or dropped answer can hide the provider's command id: such runs stay unlinked,
    # but can never outnumber the commands allowed and sent.
    assert len(executed) <= len(allowed), "more executions than allowed commands"


async def test_provider_faults_for_three_simulated_hours(
    broker: BrokerAddress, tmp_path: Path, base_topic: str, figures: Figures
) -> None:
    """Three simulated hours of API faults: no crash, in budget, offline and back, no restart."""
    await run_provider_chaos(broker, tmp_path, base_topic, SHORT, figures)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_provider_faults_for_a_simulated_day(
    broker: BrokerAddress, tmp_path: Path, base_topic: str, figures: Figures
) -> None:
    """A simulated day of the same faults: every bar of the short run holds."""
    await run_provider_chaos(broker, tmp_path, base_topic, DAY, figures)


def test_burst_plan_spreads_bursts_before_the_suspension() -> None:
    """The chaos plan places every 429 burst after the start and before the suspension."""
    for plan in (SHORT, DAY):
        starts = plan.burst_starts()
        assert len(starts) == plan.bursts
        assert all(0.05 * plan.length_s < s < plan.suspend_at - BURST_S for s in starts)
        assert plan.suspend_at + plan.suspension_s < plan.clear_at


# -- the token races: what the chaos above spares the daemon ----------------------------------


class OnceOnTokenEndpoint(FaultInjector):
    """No faults, except `kind` on the token endpoint's next answer once `armed`."""

    def __init__(self, kind: FaultKind) -> None:
        super().__init__(rates={}, rng=random.Random(0))
        self.kind = kind
        self.armed = False

    def roll(self, allowed: frozenset[FaultKind]) -> FaultKind | None:
        if self.armed and allowed == TRANSPORT_FAULTS:
            self.armed = False
            self.served[self.kind] += 1
            return self.kind
        return None


@dataclass
class TokenRace:
    """A daemon on simulated time, with the wire recorded and MQTT observed."""

    sim: SimHandle
    settings: Settings
    daemon: SimTimeDaemon
    transport: RecordingTransport
    mqtt: MqttObserver
    base: str

    def events(self) -> list[str]:
        return [m.payload.decode() for m in self.mqtt.on(f"{self.base}/bridge/event")]

    def availability(self) -> bytes | None:
        messages = self.mqtt.on(f"{self.base}/car-1/availability")
        return messages[-1].payload if messages else None

    async def sim_hours(self, hours: float) -> None:
        """Let `hours` of simulated time pass (the daemon runs meanwhile)."""
        end = self.sim.sim.now() + timedelta(hours=hours)
        while self.sim.sim.now() < end:
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def token_race(broker: BrokerAddress, root: Path, base: str) -> AsyncIterator[TokenRace]:
    with (
        running_simulator(vehicles=1, speed=1440, limits=Limits(), start=MONDAY) as sim,
        MqttObserver(broker.host, broker.port, (f"{base}/#",)) as mqtt,
    ):
        settings = Settings(
            **DaemonConfig.for_simulator(
                root,
                sim,
                broker,
                base,
                extra={"budget": {"calls_per_day": 250, "calls_per_hour": 40}},
            ).document()
        )
        await login(settings)
        transport = RecordingTransport(sim.sim.now)
        daemon = SimTimeDaemon(settings, sim=sim, transport=transport)
        await daemon.start()
        try:
            await await_until(lambda: mqtt.first(f"{base}/car-1/status"), 10, what="a first state")
            yield TokenRace(sim, settings, daemon, transport, mqtt, base)
        finally:
            await daemon.stop()


async def lose_the_refresh_answer(race: TokenRace) -> None:
    """The token endpoint rotates the refresh token, then its answer arrives garbled: the new
    refresh token is lost, and the old one is dead. Returns once the daemon has given up."""
    injector = OnceOnTokenEndpoint(FaultKind.MALFORMED)
    race.sim.sim.faults = injector
    injector.armed = True
    race.sim.sim.expire_tokens()  # the next call needs a refresh
    await await_until(
        lambda: any("relogin_needed" in e for e in race.events()), 10, what="the re-login alert"
    )


async def test_lost_refresh_answer_asks_the_owner_to_log_in_and_stops_calling(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """A refresh answer lost after rotation: one re-login alert, offline, and no more calls."""
    async with token_race(broker, tmp_path, base_topic) as race:
        await lose_the_refresh_answer(race)
        calls = len(race.transport.calls)
        await race.sim_hours(1)
        assert len(race.transport.calls) == calls, "calls after the login was lost"
        assert race.availability() == b"offline"
        assert sum("relogin_needed" in e for e in race.events()) == 1


async def test_polling_resumes_after_the_owner_logs_in_again(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """After a lost login, `ownerlink login` alone (no restart) brings polling back."""
    async with token_race(broker, tmp_path, base_topic) as race:
        await lose_the_refresh_answer(race)
        await await_until(lambda: race.availability() == b"offline", 10, what="offline")
        await login(race.settings)  # what `ownerlink login` does, from another process
        await await_until(
            lambda: race.availability() == b"online", 10, what="polling back after the login"
        )


async def test_token_invalidated_between_refresh_and_retry_is_recovered(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """A token invalidated between its refresh and the retry costs a pause, not the account."""
    async with token_race(broker, tmp_path, base_topic) as race:
        raced: list[float] = []

        def invalidate_the_fresh_token(request: httpx.Request, response: httpx.Response) -> None:
            if request.url.path == "/oauth/token" and response.status_code == 200 and not raced:
                raced.append(time.monotonic())
                race.sim.sim.expire_tokens()

        race.transport.on_response = invalidate_the_fresh_token
        race.sim.sim.expire_tokens()  # the next call needs a refresh
        await await_until(lambda: raced, 10, what="a refresh")
        race.transport.on_response = None
        # From the history, not the latest value: at simulated speed the pause lasts well under
        # a second, and a busy machine may look only once it is over.
        topic = f"{race.base}/car-1/availability"
        off = await await_until(
            lambda: race.mqtt.first(topic, b"offline", since=raced[0]), 10, what="offline"
        )
        await await_until(
            lambda: race.mqtt.first(topic, b"online", since=off.at),
            10,
            what="polling back without a restart",
        )


async def test_stopping_during_a_poll_logs_no_error(
    broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    """A clean stop while a poll waits on the provider logs nothing at error level."""
    with capture_logs() as logs:
        async with token_race(broker, tmp_path, base_topic) as race:
            race.sim.sim.timings = Timings(timeout_delay_s=3.0)
            race.sim.set_faults("timeout=1.0")  # every answer now takes 3 s: polls hang
            await await_until(lambda: race.transport.in_flight, 10, what="a poll in flight")
    errors = [e for e in logs if e.get("log_level") in ERROR_LEVELS]
    assert not errors, [e.get("event") for e in errors]
