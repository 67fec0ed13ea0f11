"""The FordConnect Query provider: read-only, one consent = one vehicle, no id in the path.

The access token *is* the vehicle, so `read(vehicle_id)` ignores the id for routing and only uses
it to label the state. Commands do not exist on this API.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bridge.errors import (
    AuthUnavailable,
    BudgetExhausted,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    Unsupported,
)
from bridge.logs import get_logger
from bridge.model import CommandOutcome, Operation, VehicleInfo, VehicleState
from bridge.providers.base import CallKind, OnAccepted
from bridge.providers.http import AuthorizedApi
from bridge.providers.query_map import garage_to_info, telemetry_to_state, vehicle_id_of
from bridge.providers.stamps import epoch_time
from bridge.providers.values import dig, text

QUERY_BASE_URL = "https://api.vehicle.ford.com/fcon-query/v1"

log = get_logger(__name__)


class FordConnectQueryProvider:
    """FordConnect Query for one account (one vehicle)."""

    def __init__(
        self,
        account: str,
        *,
        api: AuthorizedApi,
        base_url: str = QUERY_BASE_URL,
        read_alerts: bool = False,
        wall_clock: Callable[[], float] | None = time.time,
    ) -> None:
        self.account = account
        self._api = api
        self._base = base_url.rstrip("/")
        # Health alerts are a second call per read; off unless the budget can afford it.
        self._read_alerts = read_alerts
        # The last alerts read: what a read shows when its alerts call fails after the telemetry
        # call succeeded (the alerts do not vanish because one call failed).
        self._last_alerts: tuple[str, ...] = ()
        # Epoch seconds: what a car's upload stamp is checked against (None: only that it is
        # after 2000, for a simulator whose clock may run ahead of ours).
        self._wall_clock = wall_clock

    async def list_vehicles(self) -> list[VehicleInfo]:
        """The one vehicle this consent covers, from `garage` (its VIN is never carried over)."""
        doc = await self._api.call("GET", f"{self._base}/garage", kind=CallKind.READ)
        entry = _garage_entry(doc)
        if entry is None:
            return []
        return [garage_to_info(entry, vehicle_id_of(entry) or self._derived_id())]

    def _derived_id(self) -> str:
        # The garage document names the vehicle only by VIN, which must never become an id; one
        # account is one vehicle, so an id derived from the account name is stable and harmless.
        return "q-" + hashlib.sha256(self.account.encode()).hexdigest()[:16]

    async def read(self, vehicle_id: str) -> VehicleState:
        """The latest telemetry, normalised; with `read_alerts` also the health alerts."""
        doc = await self._api.call("GET", f"{self._base}/telemetry", kind=CallKind.READ)
        state = telemetry_to_state(doc, vehicle_id, now=epoch_time(self._wall_clock))
        if not self._read_alerts:
            return state
        alerts = await self._alerts()
        return replace(state, health=replace(state.health, alerts=alerts))

    async def _alerts(self) -> tuple[str, ...]:
        """The active alerts' headlines; the last ones read when this call fails, so a failed
        second call never throws away the telemetry the first one paid for. A 429 and a lost
        login still raise: they are about the account, and its guard must hear of them."""
        try:
            doc = await self._api.call(
                "GET", f"{self._base}/vehicle-health/alerts", kind=CallKind.READ
            )
        except (Forbidden, NotFound) as exc:
            # Not in this consent (or not on this API): asking again every read only spends budget.
            self._read_alerts = False
            log.warning("provider.alerts_unavailable", account=self.account, error=str(exc))
            return self._last_alerts
        except BudgetExhausted:
            return self._last_alerts
        except ProviderUnavailable as exc:
            if isinstance(exc, AuthUnavailable):
                raise
            log.info("provider.alerts_not_read", account=self.account, error=str(exc))
            return self._last_alerts
        self._last_alerts = alert_headlines(doc)
        return self._last_alerts

    def supported_operations(self, info: VehicleInfo) -> frozenset[Operation]:
        """Nothing: FordConnect Query cannot send commands."""
        return frozenset()

    async def execute(
        self, vehicle_id: str, operation: Operation, *, on_accepted: OnAccepted | None = None
    ) -> CommandOutcome:
        raise Unsupported("FordConnect Query is read-only; it has no commands")

    async def aclose(self) -> None:
        await self._api.aclose()


def _garage_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The garage answer is one vehicle object; tolerate a wrapped list of one as well. A
    wrapped list that is empty is an answer too: the consent covers no vehicle (None)."""
    for key in ("vehicles", "garage"):
        items = doc.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            return items[0]
        if isinstance(items, list) and not items:
            return None
    if not doc:
        raise ProviderUnavailable("GET garage: empty answer")
    return doc


def alert_headlines(doc: dict[str, Any]) -> tuple[str, ...]:
    """The headline of every active alert in a `vehicle-health/alerts` answer."""
    out: list[str] = []
    for vehicle in _list(doc.get("VehicleAlertList")):
        for alert in _list(dig(vehicle, "ActiveAlerts")):
            if headline := text(dig(alert, "Headline")):
                out.append(headline)
    return tuple(out)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
