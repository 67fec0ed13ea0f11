"""A 429's Retry-After holds commands too: none goes to the car maker before it has passed.

The car maker said when it will take calls again. A command sent before then is one more call
while throttled (Ford, like the simulator, suspends accounts that keep calling while limited),
and it would fail anyway; so it is refused at once, on the record, and never sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bridge.audit.chain import read_records
from bridge.audit.log import audit_directory
from bridge.config import Settings
from bridge.daemon import Daemon
from bridge.demo.broker import DemoBroker
from bridge.demo.run import demo_config, login
from bridge.polling.holds import AccountHolds
from bridge.polling.policy import Block, Mode
from bridge.simulator import SimClock, Simulator, Timings, serve_in_thread
from bridge.store import Store
from tests.conftest import BrokerAddress

RETRY_AFTER_S = 30


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(
        vehicles=1,
        seed=3,
        auto_consent=True,
        admin=True,
        clock=SimClock(speed=1),
        timings=Timings(command_delay_s=0.1, fault_retry_after_s=RETRY_AFTER_S),
    )
    with serve_in_thread(simulator) as url:
        yield simulator, url


def set_faults(url: str, spec: str) -> None:
    httpx.post(f"{url}/sim/faults", json={"spec": spec}, timeout=10).raise_for_status()


def executed(url: str) -> list[str]:
    vehicles = httpx.get(f"{url}/sim/vehicles", timeout=10).json()["vehicles"]
    return [e["command"] for v in vehicles for e in v["executed"]]


async def test_no_command_is_sent_before_a_429s_retry_after(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    url = sim[1]
    document = demo_config(
        tmp_path / "state", url, DemoBroker(broker.host, broker.port, "test"), 0, {}
    )
    document["mqtt"]["base_topic"] = base_topic
    document["logging"] = {"level": "warning", "format": "json"}
    document["commands"] = {"status_poll_interval_s": 0.1}
    settings = Settings(**document)
    await login(settings)
    daemon = Daemon(settings, serve_web=False)
    await daemon.start()
    try:
        slug = daemon.vehicles[0].slug
        for _ in range(200):  # the first poll, at start, comes before the throttling
            if slug in daemon.vehicles_view.latest:
                break
            await asyncio.sleep(0.05)
        set_faults(url, "429=1")
        first = await daemon.pipeline.submit_owner(slug, "lock", "LOCK", id="first")
        assert (first.status.value, first.reason) == ("failed", "provider_rate_limited")

        set_faults(url, "")  # the car maker would answer now; it asked us to wait all the same
        second = await daemon.pipeline.submit_owner(slug, "lock", "LOCK", id="second")
        assert (second.status.value, second.reason) == ("rejected", "provider_rate_limited")
        assert "Retry-After" in second.detail
        assert executed(url) == []
    finally:
        await daemon.stop()
    decisions = {
        r["id"]: r
        for r in read_records(audit_directory(settings.state_dir))
        if r["kind"] == "command.decision"
    }
    assert decisions["second"]["decision"] == "refused"
    assert decisions["second"]["reason"] == "provider_rate_limited"


def account_calls(url: str) -> int:
    return sum(a["calls"] for a in httpx.get(f"{url}/sim/accounts", timeout=10).json()["accounts"])


async def test_a_restart_during_a_hold_sends_nothing_to_the_account(
    tmp_path: Path, sim: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> None:
    """The last run met a 429 with an hour's Retry-After (kept in the state database): the next
    start neither lists the account's vehicles nor reads them before the hour is over. Before,
    each start listed and read at once, so a daemon restarted by systemd every few seconds kept
    calling a throttled (or suspended) account."""
    url = sim[1]
    document = demo_config(
        tmp_path / "state", url, DemoBroker(broker.host, broker.port, "test"), 0, {}
    )
    document["mqtt"]["base_topic"] = base_topic
    document["logging"] = {"level": "warning", "format": "json"}
    settings = Settings(**document)
    await login(settings)
    (account,) = settings.accounts
    store = Store.open(settings.state_dir)
    holds = AccountHolds(store=store)
    holds.start()
    until = datetime.now(UTC) + timedelta(hours=1)
    holds.keep(account, Block(until, Mode.BACKING_OFF, "rate_limited"), until)
    store.close()
    before = account_calls(url)
    daemon = Daemon(settings, serve_web=False)
    await daemon.start()
    try:
        await asyncio.sleep(2)  # the first polls are planned within a second of the start
        assert account_calls(url) == before
    finally:
        await daemon.stop()
