"""build_providers: one provider per configured account, keyed by name, with Ford's defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bridge.events import CollectingAlerts
from bridge.model import Operation, Powertrain, VehicleInfo
from bridge.providers.base import FreeGate
from bridge.providers.factory import build_providers, is_extension_server
from bridge.providers.fordconnect import FordConnectProvider
from bridge.providers.fordconnect_query import FordConnectQueryProvider
from tests.providers.support import (
    V1,
    VEHICLE,
    FakeFord,
    account_config,
    ok,
    rig,
    seed_tokens,
    settings_for,
)


async def test_one_provider_per_account_keyed_by_name(tmp_path: Path) -> None:
    """Two Query accounts and a v1 account give three providers of the right kinds."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    settings = settings_for(
        tmp_path,
        {
            "alice": account_config("fordconnect-query"),
            "bob": account_config("fordconnect-query"),
            "fleet": account_config("fordconnect"),
        },
    )
    providers = build_providers(
        settings,
        gate=FreeGate(),
        alerts=CollectingAlerts(),
        transport=httpx.MockTransport(record),
    )
    assert sorted(providers) == ["alice", "bob", "fleet"]
    assert isinstance(providers["alice"], FordConnectQueryProvider)
    assert isinstance(providers["fleet"], FordConnectProvider)
    assert {p.account for p in providers.values()} == {"alice", "bob", "fleet"}
    assert sent == []  # building touches neither the network nor the token files
    assert not (tmp_path / "tokens").exists()
    for provider in providers.values():
        await provider.aclose()


async def test_a_query_account_reads_health_alerts_only_when_configured(tmp_path: Path) -> None:
    """`health_alerts: true` on a Query account adds the alerts call to every read; without it
    a read is the one telemetry call."""
    ford = FakeFord()
    ford.on("GET", "/fcon-query/v1/telemetry", ok({"vehicle": {"vehicleId": "x"}}))
    ford.on("GET", "/fcon-query/v1/vehicle-health/alerts", ok({"VehicleAlertList": []}))
    accounts = {
        "plain": account_config("fordconnect-query"),
        "alerted": account_config("fordconnect-query", health_alerts=True),
    }
    for name in accounts:
        seed_tokens(tmp_path, name, expires_at=datetime.now(UTC).timestamp() + 1200)
    providers = build_providers(
        settings_for(tmp_path, accounts),
        gate=FreeGate(),
        alerts=CollectingAlerts(),
        transport=httpx.MockTransport(ford),
    )
    for name in ("plain", "alerted"):
        await providers[name].read("car")
    paths = [urlsplit(str(r.url)).path for r in ford.api_requests()]
    assert paths == [
        "/fcon-query/v1/telemetry",
        "/fcon-query/v1/telemetry",
        "/fcon-query/v1/vehicle-health/alerts",
    ]
    for provider in providers.values():
        await provider.aclose()


def test_the_horn_extension_is_never_offered_against_ford() -> None:
    """The simulator's horn/lights extension is on for other hosts, off for Ford's own."""
    assert not is_extension_server(None)
    assert not is_extension_server("https://api.mps.ford.com/api/fordconnect/vehicles/v1")
    assert not is_extension_server("https://api.vehicle.ford.com/fcon-query/v1")
    assert is_extension_server("http://127.0.0.1:8765/api/fordconnect/vehicles/v1")
    assert not is_extension_server("https://notford.com.ford.com/x")
    assert is_extension_server("https://ford.com.evil.example/x")


async def test_fords_default_urls_mean_no_extension(tmp_path: Path) -> None:
    """An account without api_base_url talks to Ford and offers no horn/lights."""
    settings = settings_for(tmp_path, {"home": account_config("fordconnect", api_base_url=None)})
    providers = build_providers(settings, gate=FreeGate(), alerts=CollectingAlerts())
    ops = providers["home"].supported_operations(VehicleInfo("v", powertrain=Powertrain.EV))
    assert Operation.HORN_LIGHTS not in ops and Operation.START_CHARGE in ops
    await providers["home"].aclose()


@pytest.mark.parametrize(
    ("base", "kept"),
    [("https://api.mps.ford.com/api/fordconnect/vehicles/v1", False), (V1, True)],
)
async def test_an_upload_stamp_days_ahead_is_refused_from_ford_only(
    tmp_path: Path, base: str, kept: bool
) -> None:
    """Ford's upload stamp three days ahead of our clock is a wrong car clock: unknown. Another
    host (a simulator, which may run faster than real time) is only held to after 2000."""
    r = rig(tmp_path, api_base_url=base)
    ahead = datetime.fromtimestamp(r.clock.now, UTC).replace(microsecond=0) + timedelta(days=3)
    doc = {"vehicle": {"lastUpdated": ahead.strftime("%m-%d-%Y %H:%M:%S")}}
    r.ford.on("GET", f"{urlsplit(base).path}/{VEHICLE}", ok(doc))
    state = await r.parts.provider.read(VEHICLE)
    assert state.updated_at == (ahead if kept else None)
    await r.parts.api.aclose()
