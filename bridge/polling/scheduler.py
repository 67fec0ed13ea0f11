"""The Poller: one job per vehicle, planned by the policy and run by a Timer (APScheduler).

Each run reads the vehicle once (unless the account is blocked), hands the state on, folds it into
the vehicle's PollInput, asks the policy for the next instant and schedules itself there. Failures
feed the account's guard (Retry-After, breaker, suspension, re-login); the last good state stays
published, and availability turns offline only when the data is too old to trust or the owner
must log in again.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from bridge.config import PollingConfig
from bridge.errors import (
    AuthUnavailable,
    BudgetExhausted,
    Forbidden,
    NotFound,
    ProviderError,
    RateLimited,
    ReauthRequired,
    StateError,
)
from bridge.events import Alert, AlertKind, AlertSink
from bridge.logs import get_logger
from bridge.model import Operation, VehicleState
from bridge.polling.breaker import AccountGuard, BreakerConfig, doubled
from bridge.polling.budget import Budget, BudgetUsage
from bridge.polling.clock import Clock, local_zone, utc_now
from bridge.polling.history import KEEP, ActivityHistory
from bridge.polling.holds import AccountHolds
from bridge.polling.policy import (
    ACTIVE,
    Activity,
    Mode,
    PollInput,
    PollPlan,
    Tuning,
    attempted,
    next_poll,
    observe,
)
from bridge.polling.prior import ActivityPrior, weekend_days
from bridge.polling.timers import ApsTimer, Timer
from bridge.providers.base import Provider

OnState = Callable[[str, VehicleState], None]
OnAvailability = Callable[[str, bool], None]
OnBudget = Callable[[str, dict[str, Any]], None]

# At start, an account's vehicles are first polled this far apart, so one account (one rate
# limit at the car maker) is not hit with all its vehicles at once; other accounts go meanwhile.
START_STAGGER_S = 0.5
# ... and any two first polls at least this far apart, so a large fleet does not start as a burst.
FLEET_STAGGER_S = 0.02
# The learned activity prior is rebuilt at least this often (the span it averages over grows).
PRIOR_REFRESH = timedelta(hours=6)
log = get_logger(__name__)


def first_poll_offsets(accounts: Sequence[str]) -> list[float]:
    """Seconds after start of each vehicle's first poll, given its account, in order (pure):
    `START_STAGGER_S` apart within an account, `FLEET_STAGGER_S` apart overall."""
    seen: Counter[str] = Counter()
    offsets = []
    for index, account in enumerate(accounts):
        offsets.append(max(seen[account] * START_STAGGER_S, index * FLEET_STAGGER_S))
        seen[account] += 1
    return offsets


@dataclass(frozen=True, slots=True)
class VehicleRef:
    """Where a vehicle lives: its account and the provider's id for it."""

    account: str
    vehicle_id: str


@dataclass(slots=True)
class _Slot:
    """The poller's mutable bookkeeping for one vehicle."""

    slug: str
    ref: VehicleRef
    track: PollInput
    plan: PollPlan | None = None
    confirm: bool = False  # a command asked for a confirmation read
    running: bool = False
    online: bool | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    prior: ActivityPrior | None = None
    prior_at: datetime | None = None
    observed_since: datetime | None = None
    missing: int = 0  # reads in a row the car maker answered "no such vehicle" (NotFound)
    forbidden: int = 0  # reads in a row the car maker refused (403)
    failures: int = 0  # reads in a row that failed otherwise (5xx, timeout, nonsense)


def budget_document(usage: BudgetUsage, plan: PollPlan) -> dict[str, Any]:
    """The `<base>/<vehicle>/budget` document. "today" is the sliding last 24 hours."""
    return {
        "calls_used_today": usage.used_day,
        "calls_left_today": usage.left_day,
        "calls_used_hour": usage.used_hour,
        "calls_left_hour": usage.left_hour,
        "reserve_left": usage.reserve_left,
        "next_poll": plan.at.isoformat(),
        "mode": plan.mode.value,
    }


class Poller:
    """Polls every configured vehicle within its account's budget."""

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        vehicles: Mapping[str, tuple[str, str]],
        budget: Budget,
        config: PollingConfig,
        on_state: OnState,
        on_availability: OnAvailability,
        on_budget: OnBudget,
        alerts: AlertSink,
        clock: Clock = utc_now,
        timer: Timer | None = None,
        rng: random.Random | None = None,
        tuning: Tuning | None = None,
        breaker: BreakerConfig | None = None,
        history: ActivityHistory | None = None,
        holds: AccountHolds | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self._providers = providers
        self._budget = budget
        self._config = config
        self._on_state = on_state
        self._on_availability = on_availability
        self._on_budget = on_budget
        self._alerts = alerts
        self._clock = clock
        self._timer: Timer = timer or ApsTimer(clock=clock)
        self._tuning = tuning or Tuning()
        self._history = history
        self._holds = holds
        # Local time decides which hours are "night": the system's named zone unless told, so the
        # hours follow daylight saving time (looked up at start: it reads /etc/localtime).
        self._given_tz = tz
        self._tz: tzinfo = tz or UTC
        rng = self._rng = rng or random.Random()
        self._slots = {
            slug: _Slot(slug, VehicleRef(account, vid), PollInput())
            for slug, (account, vid) in vehicles.items()
        }
        self._breaker = breaker or BreakerConfig()
        self._guards = {
            account: AccountGuard(config=breaker, rng=rng) for account, _ in vehicles.values()
        }
        self._per_account = Counter(account for account, _ in vehicles.values())
        self._started_at: datetime | None = None
        self._stopping = False
        self._inflight: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the timer and plan each vehicle's first poll (on the running event loop)."""
        self._started_at = self._clock()
        self._tz = self._given_tz or local_zone()
        self._timer.start(self._missed)
        for account in self._guards:
            self._restore_hold(account, self._started_at)
        slots = list(self._slots.values())
        offsets = first_poll_offsets([slot.ref.account for slot in slots])
        for slot, offset in zip(slots, offsets, strict=True):
            if self._history is not None:
                slot.observed_since = self._history.observing(slot.slug, self._started_at)
            self._plan(slot, not_before=self._started_at + timedelta(seconds=offset))

    async def stop(self) -> None:
        """Stop the timer and wait for polls in flight (their requests have timeouts)."""
        self._stopping = True
        await self._timer.stop()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    # -- what other parts call -----------------------------------------------------------------

    def add_vehicle(self, slug: str, account: str, vehicle_id: str) -> None:
        """Start polling a vehicle learnt of after start (an account that could not be listed
        then); its first poll is planned at once."""
        if slug in self._slots:
            return
        slot = self._slots[slug] = _Slot(slug, VehicleRef(account, vehicle_id), PollInput())
        if account not in self._guards:
            self._guards[account] = AccountGuard(config=self._breaker, rng=self._rng)
            self._restore_hold(account, self._clock())
        self._per_account[account] += 1
        if self._history is not None:
            slot.observed_since = self._history.observing(slug, self._clock())
        self._plan(slot)

    def request_confirmation(self, slug: str) -> None:
        """A command was sent to `slug`: read it once soon, charged to the command share."""
        slot = self._slots[slug]
        slot.confirm = True
        if not slot.running:  # a running poll re-plans when it finishes
            self._plan(slot)

    def refused(self, account: str, error: ProviderError) -> None:
        """A 429 or 403 met where nothing raised it to the poller (a command's status poll or
        request): the account's guard takes it as it takes a read's, and the account's vehicles
        are planned again around the block (a 403 also raises the suspension alert)."""
        if account not in self._guards or not self._held_back(account, error, self._clock()):
            return
        self._replan_account(account)

    def _show_block(self, account: str) -> None:
        """A block one car's read met is the account's: its other cars' budget documents (Home
        Assistant's Polling mode) say so now, not at their own next poll, hours away for a
        sleeping car. Each keeps that next poll if it is later, so none is read sooner."""
        self._replan_account(account, keep_next=True)

    def _replan_account(self, account: str, *, keep_next: bool = False) -> None:
        """Plan the account's vehicles again around its block, so each one's budget document
        shows it now rather than at its own next poll (hours away for a sleeping car)."""
        for slot in self._slots.values():
            if slot.ref.account == account and not slot.running:  # a running poll re-plans
                kept = slot.plan.at if keep_next and slot.plan is not None else None
                self._plan(slot, not_before=kept)

    def retry_after(self, account: str) -> datetime | None:
        """Until when the account's last 429 asked for no calls at all (None once it passed, or
        for an account this poller does not know): the command path sends nothing before."""
        guard = self._guards.get(account)
        return None if guard is None else guard.retry_after_until(self._clock())

    def resume(self, account: str) -> None:
        """The owner logged in again (or an operator says go): poll the account's vehicles now."""
        self._guards[account].reset()
        self._forget_hold(account)
        for slot in self._slots.values():
            if slot.ref.account == account:
                slot.missing = slot.failures = slot.forbidden = 0  # the new consent may cover it
            if slot.ref.account == account and not slot.running:
                slot.plan = None
                slot.track = replace(slot.track, last_poll_at=None)  # "look now" to the policy
                self._plan(slot)

    def status(self, slug: str) -> dict[str, Any]:
        """A plain snapshot of one vehicle's polling, for `ownerlink status`."""
        slot = self._slots[slug]
        now = self._clock()
        guard = self._guards[slot.ref.account]
        block = guard.block(now)
        usage = self._budget.usage(slot.ref.account, now)
        return {
            "vehicle": slug,
            "account": slot.ref.account,
            "mode": _plain(slot.plan.mode if slot.plan else None),
            "next_poll": _plain(slot.plan.at if slot.plan else None),
            "activity": slot.track.activity.value,
            "online": slot.online,
            "last_success": _plain(slot.last_success_at),
            "last_upload": _plain(slot.track.upload_at),
            "last_error": slot.last_error,
            "failures": guard.failures,
            "blocked_until": _plain(block.until if block else None),
            "block_reason": block.reason if block else None,
            "reauth_required": guard.reauth_required,
            "budget": {
                "calls_used_today": usage.used_day,
                "calls_left_today": usage.left_day,
                "calls_used_hour": usage.used_hour,
                "calls_left_hour": usage.left_hour,
                "reserve_left": usage.reserve_left,
            },
        }

    # -- one run of a vehicle's job ------------------------------------------------------------

    async def _run(self, slug: str) -> None:
        slot = self._slots[slug]
        slot.running = True
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            now = self._clock()
            # Woken early only to re-check availability (see _plan): no call then.
            if slot.plan is None or now >= slot.plan.at:
                await self._poll(slot, now)
            self._check_stale(slot, self._clock())
        except Exception as exc:
            # A bug must not turn into a tight loop: treat it as a failure, then let the
            # scheduler's error listener log the traceback.
            self._guards[slot.ref.account].on_failure(self._clock(), "internal_error")
            slot.last_error = repr(exc)
            raise
        finally:
            slot.running = False
            self._inflight.discard(task)
            self._plan(slot)

    async def _poll(self, slot: _Slot, now: datetime) -> None:
        if self._guards[slot.ref.account].block(now) is not None:
            return
        confirming, slot.confirm = slot.confirm, False
        slot.track = attempted(slot.track, now=now)
        try:
            state = await self._read(slot, confirming=confirming)
        except ProviderError as exc:
            self._failed(slot, exc, self._clock())
            return
        except StateError as exc:
            # Our own side (the state database, a full disk): nothing was asked of the car, and
            # the next poll tries again at its time. Not the provider's failure, so no backoff.
            slot.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("poll.skipped", vehicle=slot.slug, error=slot.last_error)
            return
        if state is not None:
            self._succeeded(slot, state, self._clock())

    async def _read(self, slot: _Slot, *, confirming: bool) -> VehicleState | None:
        """The vehicle's state, or None when the refresh before it ran into a block."""
        provider = self._providers[slot.ref.account]
        plan = slot.plan
        if plan is not None and plan.refresh:
            await self._refresh(slot, provider)
            # Its status polls may have met a 429 or 403 (reported through `refused`, not raised):
            # then nothing more goes to the account before the block lifts.
            if self._guards[slot.ref.account].block(self._clock()) is not None:
                return None
        if confirming:
            with self._budget.reads_as_commands():
                return await provider.read(slot.ref.vehicle_id)
        return await provider.read(slot.ref.vehicle_id)

    async def _refresh(self, slot: _Slot, provider: Provider) -> None:
        """The owner-configured scheduled status refresh (wakes the modem) before the read."""
        outcome = await provider.execute(slot.ref.vehicle_id, Operation.REFRESH)
        slot.track = replace(slot.track, last_refresh_at=self._clock())
        log.info("poll.refreshed", vehicle=slot.slug, status=outcome.status.value)

    def _succeeded(self, slot: _Slot, state: VehicleState, now: datetime) -> None:
        was = slot.track.activity
        slot.track = observe(slot.track, state, now=now, tuning=self._tuning)
        # Only a state the poller could fold in clears the breaker: one it chokes on is counted
        # as a failure (in _run), and resetting first would retry it every 30 s for good.
        self._guards[slot.ref.account].on_success()
        if was is Activity.PARKED and slot.track.activity in ACTIVE:
            self._started(slot, state.updated_at or now)
        slot.last_success_at = now
        slot.last_error = None
        slot.missing = slot.failures = slot.forbidden = 0
        self._on_state(slot.slug, state)
        self._set_online(slot, online=True)

    def _started(self, slot: _Slot, at: datetime) -> None:
        """The car set off or began charging: learn the hour, for the activity prior."""
        if self._history is not None:
            self._history.record(slot.slug, at)
            slot.prior = None  # rebuilt at the next plan

    def _prior_of(self, slot: _Slot, now: datetime) -> ActivityPrior:
        stale = slot.prior_at is None or now - slot.prior_at >= PRIOR_REFRESH
        if slot.prior is None or stale:
            slot.prior, slot.prior_at = self._learn_prior(slot, now), now
        return slot.prior

    def _learn_prior(self, slot: _Slot, now: datetime) -> ActivityPrior:
        if self._history is None or slot.observed_since is None:
            return ActivityPrior.default(self._tz)
        since = max(slot.observed_since, now - KEEP)
        days = (now - since).total_seconds() / 86_400.0
        starts = self._history.starts(slot.slug, since)
        weekend = weekend_days(since, now, self._tz)
        return ActivityPrior.learned(starts, days=days, weekend_days=weekend, tz=self._tz)

    def _failed(self, slot: _Slot, exc: ProviderError, now: datetime) -> None:
        guard = self._guards[slot.ref.account]
        slot.last_error = f"{type(exc).__name__}: {exc}"
        log.info("poll.failed", vehicle=slot.slug, error=slot.last_error)
        if isinstance(exc, BudgetExhausted):
            return  # our own refusal: the plan waits for the budget (no failure, no alert here)
        if isinstance(exc, NotFound):
            # This vehicle is not (or no longer) in the account's consent, or its id is wrong:
            # its own trouble, not the account's. Fed to the account's guard, it blocked every
            # car of the account, and it won the race for each reopening, so they were never
            # read again. It goes offline and is looked at ever more rarely (`_vehicle_wait`).
            slot.missing += 1
            self._set_online(slot, online=False)
            return
        if isinstance(exc, Forbidden):
            slot.forbidden += 1
            if not self._account_refused(slot.ref.account):
                # A 403 on one car while another car of the account is still served: that car
                # is refused (no longer authorised), not the account, so only it backs off, as
                # for "not found". Pausing the account for a day left its healthy cars unread.
                log.warning("poll.vehicle_forbidden", vehicle=slot.slug, error=slot.last_error)
                self._set_online(slot, online=False)
                return
        if self._held_back(slot.ref.account, exc, now):
            self._show_block(slot.ref.account)
            return
        if isinstance(exc, ReauthRequired):
            self._reauth(slot.ref.account, now)
        else:
            # The account's guard backs off the account; the vehicle's own count keeps one car
            # that always fails (its modem, say) from being polled first at each reopening and
            # blocking the account again, which left its healthy siblings unread for good.
            slot.failures += 1
            guard.on_failure(now, type(exc).__name__)
            if isinstance(exc, AuthUnavailable):
                # No token: none of the account's cars can be read until the login service is
                # back, so their last states are shown as such (each is back with a good read).
                self._account_offline(slot.ref.account)

    def _account_refused(self, account: str) -> bool:
        """Whether a 403 is the account's: every vehicle of the account has now been refused (a
        suspended account refuses them all; a one-car account, such as a FordConnect Query
        consent, cannot tell the two apart, so its 403 stays a suspension)."""
        return all(s.forbidden for s in self._slots.values() if s.ref.account == account)

    def _held_back(self, account: str, exc: ProviderError, now: datetime) -> bool:
        """Feed a 429 (Retry-After) or a 403 (suspension) to the account's guard; False for any
        other error. Reads and the command path (`refused`) both come through here."""
        if isinstance(exc, RateLimited):
            self._guards[account].on_rate_limited(now, exc.retry_after)
        elif isinstance(exc, Forbidden):
            self._suspended(account, now)
        else:
            return False
        self._keep_hold(account, now)
        return True

    # -- holds kept across restarts (bridge.polling.holds) ------------------------------------

    def _restore_hold(self, account: str, now: datetime) -> None:
        try:
            hold = None if self._holds is None else self._holds.current(account, now)
        except StateError as exc:
            log.warning("poll.hold_unreadable", account=account, error=str(exc))
            return
        if hold is not None:
            log.info("poll.hold_restored", account=account, until=hold.block.until.isoformat())
            self._guards[account].restore(hold.block, hold.retry_after)

    def _keep_hold(self, account: str, now: datetime) -> None:
        guard = self._guards[account]
        block = guard.block(now)
        if self._holds is None or block is None:
            return
        try:
            self._holds.keep(account, block, guard.retry_after_until(now))
        except StateError as exc:  # the hold still holds in this run; only a restart forgets it
            log.warning("poll.hold_not_kept", account=account, error=str(exc))

    def _forget_hold(self, account: str) -> None:
        try:
            if self._holds is not None:
                self._holds.forget(account)
        except StateError as exc:
            log.warning("poll.hold_not_forgotten", account=account, error=str(exc))

    def _suspended(self, account: str, now: datetime) -> None:
        guard = self._guards[account]
        already = guard.block(now)
        block = guard.on_suspended(now, self._config.suspension_pause_s)
        if already is not None and already.mode is Mode.SUSPENDED:
            return  # one alert per suspension
        self._alerts.emit(
            Alert(
                kind=AlertKind.ACCOUNT_SUSPENDED,
                message=f"the provider refuses account {account} (403); polling "
                f"pauses until {block.until.isoformat()}",
                ts=now,
                account=account,
                details={"until": block.until.isoformat()},
            )
        )

    def _reauth(self, account: str, now: datetime) -> None:
        """Polling waits for a new login (`resume`, or a rare look in case it happened in another
        process); the data cannot be trusted meanwhile. The token manager raised the alert."""
        self._guards[account].on_reauth(now)
        self._account_offline(account)
        self._show_block(account)

    def _account_offline(self, account: str) -> None:
        for slot in self._slots.values():
            if slot.ref.account == account:
                self._set_online(slot, online=False)

    # -- planning and availability --------------------------------------------------------------

    def _plan(self, slot: _Slot, not_before: datetime | None = None) -> None:
        if self._stopping:
            return
        now = self._clock()
        usage: BudgetUsage | None = None
        try:
            usage = self._budget.usage(slot.ref.account, now)
            plan = self._next_plan(slot, now, usage)
        except Exception:  # a vehicle left without a next poll would never be polled again
            log.exception("poll.plan_failed", vehicle=slot.slug)
            plan = self._fallback_plan(now)
        if not_before is not None and plan.at < not_before:
            plan = replace(plan, at=not_before)
        slot.plan = plan
        # A partial of the coroutine function (not a lambda): APScheduler awaits only those.
        job = functools.partial(self._run, slot.slug)
        self._timer.schedule(slot.slug, self._wake_at(slot, plan.at), job)
        if usage is not None:
            self._on_budget(slot.slug, budget_document(usage, plan))

    def _next_plan(self, slot: _Slot, now: datetime, usage: BudgetUsage) -> PollPlan:
        account = slot.ref.account
        plan = next_poll(
            replace(slot.track, confirm_pending=slot.confirm),
            now=now,
            budget=usage,
            config=self._config,
            vehicles=self._vehicles_of(account),
            prior=self._prior_of(slot, now),
            block=self._guards[account].block(now),
            tuning=self._tuning,
        )
        wait = self._vehicle_wait(slot)
        if wait is None or plan.mode is Mode.CONFIRMING:
            return plan
        block = self._guards[account].block(now)
        if block is not None:
            # Behind the vehicles the block merely held back: they go first when it lifts.
            wait = max(wait, block.until + timedelta(seconds=START_STAGGER_S))
        return PollPlan(wait, Mode.BACKING_OFF) if wait > plan.at else plan

    def _vehicle_wait(self, slot: _Slot) -> datetime | None:
        """When a vehicle whose own reads keep failing may be asked again, whatever its
        account's other vehicles do. "Not found" or refused (403) while another car of the
        account is served: the shortest parked interval, doubling with each one, at most the
        sleeping interval (a car added back to the consent is found again within that). Other
        failures: the breaker's first delay, doubling, at most its longest."""
        last = slot.track.last_poll_at
        if last is None or not (slot.missing or slot.forbidden or slot.failures):
            return None
        cfg, breaker = self._config, self._breaker
        if refused := slot.missing or slot.forbidden:
            seconds = doubled(cfg.parked_min_interval_s, refused, cfg.sleeping_interval_s)
        else:
            seconds = doubled(breaker.first_delay_s, slot.failures, breaker.max_delay_s)
        return last + timedelta(seconds=seconds)

    def _fallback_plan(self, now: datetime) -> PollPlan:
        """When planning itself failed (a bug, nonsense in the state it plans from): look again
        after the longest parked interval; the guard and the budget still have their say when
        that poll runs."""
        return PollPlan(
            now + timedelta(seconds=self._config.parked_max_interval_s), Mode.BACKING_OFF
        )

    def _wake_at(self, slot: _Slot, at: datetime) -> datetime:
        """The plan, or earlier if the data turns stale first (availability must flip on time)."""
        deadline = self._stale_deadline(slot)
        if slot.online is not False and deadline is not None and deadline < at:
            return deadline
        return at

    def _stale_deadline(self, slot: _Slot) -> datetime | None:
        since = slot.last_success_at or self._started_at
        return None if since is None else since + timedelta(seconds=self._config.stale_after_s)

    def _check_stale(self, slot: _Slot, now: datetime) -> None:
        deadline = self._stale_deadline(slot)
        if deadline is not None and now >= deadline:
            self._set_online(slot, online=False)

    def _set_online(self, slot: _Slot, *, online: bool) -> None:
        if slot.online is not online:
            slot.online = online
            log.info("poll.availability", vehicle=slot.slug, online=online)
            self._on_availability(slot.slug, online)

    def _missed(self, slug: str) -> None:
        slot = self._slots.get(slug)
        if slot is not None and not slot.running:
            slot.plan = None  # the old plan is moot: plan afresh from what is known now
            self._plan(slot)

    def _vehicles_of(self, account: str) -> int:
        return self._per_account[account]


def _plain(value: datetime | Mode | None) -> str | None:
    if value is None:
        return None
    return value.value if isinstance(value, Mode) else value.isoformat()
