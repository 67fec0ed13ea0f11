"""Final results a crash kept from the broker are sent again on the next start (delivery.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bridge.audit.chain import read_records
from bridge.commands.delivery import REPUBLISH_WINDOW_S, ResultDelivery, undelivered
from bridge.commands.recover import after_a_stop
from bridge.config import MqttConfig
from bridge.mqtt.client import InboundMessage
from bridge.mqtt.topics import Publish, Topics
from bridge.store import Store
from tests.commands.fakes import T0, make_rig
from tests.conftest import BrokerAddress
from tests.mqtt.conftest import Inbox, running
from tests.mqtt.helpers import mqtt_config


class HeldSink:
    """A ConfirmingSink whose broker never answers until told to: a kill before the PUBACK."""

    def __init__(self) -> None:
        self.sent: list[Publish] = []
        self.waiting: list[Callable[[], None]] = []

    def publish_confirmed(self, message: Publish, on_confirmed: Callable[[], None]) -> None:
        self.sent.append(message)
        self.waiting.append(on_confirmed)

    def confirm(self, index: int) -> None:
        self.waiting[index]()


def record(seq: int, kind: str, minutes_ago: float = 1, **fields: Any) -> dict[str, Any]:
    ts = (T0 - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")
    base = {"source": "mqtt", "app": "ha", "vehicle": "car", "id": f"c{seq}", "command": "lock"}
    return {"seq": seq, "ts": ts, "kind": kind, **base, **fields}


def test_owed_results_are_outcomes_and_refusals_for_mqtt_apps_after_the_mark() -> None:
    records = [
        record(1, "command.outcome", status="succeeded", reason="ok"),  # before the mark
        record(3, "command.decision", decision="allowed", reason="ok"),  # not an ending
        record(4, "command.decision", decision="refused", reason="scope_not_granted"),
        record(5, "command.outcome", status="timed_out", reason="interrupted"),
        record(6, "command.outcome", status="succeeded", reason="ok", source="owner"),
        record(7, "command.decision", decision="refused", reason="malformed", app=None),
        record(8, "command.outcome", status="failed", reason="x", minutes_ago=16),  # too old
        record(9, "owner.login", outcome="success"),
    ]
    owed = undelivered(records, after_seq=2, now=T0)
    assert [(seq, r.status.value, r.reason) for seq, r in owed] == [
        (4, "rejected", "scope_not_granted"),
        (5, "timed_out", "interrupted"),
    ]
    assert REPUBLISH_WINDOW_S == 15 * 60


def test_one_pass_over_the_log_finds_owed_results_and_interrupted_commands() -> None:
    """After a stop, the log is read once, as a stream: the owed results and the commands left
    without an outcome both come from it, and only the records those need are kept."""
    records = [
        record(1, "command.decision", decision="allowed", reason="ok", id="a"),
        record(2, "command.outcome", status="succeeded", reason="ok", id="a"),
        record(3, "command.decision", decision="allowed", reason="ok", id="b"),  # no outcome
        record(4, "command.decision", decision="refused", reason="scope_not_granted", id="c"),
        record(5, "owner.login", outcome="success"),
    ]
    results, interrupted = after_a_stop(iter(records), after_seq=1)
    assert [r["seq"] for r in results] == [2, 4]
    assert [r["id"] for r in interrupted] == ["b"]
    owed = undelivered(results, after_seq=1, now=T0)
    assert owed == undelivered(records, after_seq=1, now=T0)


def test_a_long_read_keeps_only_the_results_young_enough_to_be_sent_again() -> None:
    """A start that reads a long log past an old mark (the first after an upgrade) kept every
    final result in it until `undelivered` dropped all but the last 15 minutes': 20,000
    results of a month's log held at once. Only the ones it may send are kept now."""
    oldest = T0 - timedelta(seconds=REPUBLISH_WINDOW_S)
    old = [
        record(n, "command.outcome", minutes_ago=60 * 24, status="succeeded", reason="ok")
        for n in range(1, 20_001)
    ]
    young = record(20_001, "command.outcome", minutes_ago=1, status="succeeded", reason="ok")
    results, _ = after_a_stop(iter([*old, young]), after_seq=0, oldest=oldest)
    assert results == [young]
    assert undelivered(results, after_seq=0, now=T0) == undelivered(
        [*old, young], after_seq=0, now=T0
    )


def test_the_mark_moves_only_past_confirmed_results_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    sink = HeldSink()
    delivery = ResultDelivery(store=store, sink=sink, topics=Topics(base="ol"))
    assert delivery.start(head_seq=4) == 4  # first start: nothing older is owed
    results = undelivered(
        [record(s, "command.outcome", status="succeeded", reason="ok") for s in (5, 7, 9)],
        after_seq=4,
        now=T0,
    )
    delivery.republish(results)
    sink.confirm(1)  # seq 7 before seq 5: the mark must not pass 5
    assert ResultDelivery(store=store, sink=sink, topics=Topics(base="ol")).start(20) == 4
    sink.confirm(0)  # 5 and 7 confirmed, 9 not: every result up to 8 is with the broker
    assert ResultDelivery(store=store, sink=sink, topics=Topics(base="ol")).start(20) == 8
    sink.confirm(2)
    assert ResultDelivery(store=store, sink=sink, topics=Topics(base="ol")).start(20) == 9
    # A log shorter than the mark (restored from a backup): start again at its head.
    assert ResultDelivery(store=store, sink=sink, topics=Topics(base="ol")).start(3) == 3
    store.close()


async def test_results_a_kill_kept_from_the_broker_arrive_after_the_restart(
    tmp_path: Path, broker: BrokerAddress, base_topic: str
) -> None:
    """A refusal and a succeeded LOCK whose results never reached the broker (the daemon was
    killed first) are published on the next start, byte for byte as they would have been; once
    the broker confirmed them, a third start owes nothing."""
    held = HeldSink()
    rig_store = Store.open(tmp_path)
    first = ResultDelivery(store=rig_store, sink=held, topics=Topics(base="ol"))
    first.start(head_seq=0)
    rig = await make_rig(tmp_path, delivery=first)
    refused = await rig.send("reader", "lock", '{"action": "LOCK", "id": "r1"}')
    done = await rig.send("locker", "lock", '{"action": "LOCK", "id": "l1"}')
    assert (refused.status.value, done.status.value) == ("rejected", "succeeded")
    lost = [json.loads(m.payload) for m in held.sent]
    assert [r["id"] for r in lost] == ["r1", "l1"]
    await rig.pipeline.stop()
    rig.audit.close()
    rig.store.close()
    rig_store.close()

    # The restart: the audit log says how both ended; the broker never heard.
    config = mqtt_config(broker.host, broker.port, base_topic)
    inbox = Inbox()
    async with running(config, inbox) as client:
        client.subscribe(f"{base_topic}/app/+/car/result")
        await asyncio.sleep(0.3)
        store = Store.open(tmp_path)
        records = list(read_records(tmp_path / "audit"))
        second = ResultDelivery(store=store, sink=client, topics=Topics(base=base_topic))
        mark = second.start(head_seq=records[-1]["seq"])
        assert second.republish(undelivered(records, after_seq=mark, now=rig.clock())) == 2
        topic = f"{base_topic}/app/{{}}/car/result"
        got = [await inbox.wait_for(topic.format(app)) for app in ("reader", "locker")]
        assert [json.loads(m.payload) for m in got] == lost
        await wait_for_mark(store, records[-1]["seq"])
        third = ResultDelivery(store=store, sink=client, topics=Topics(base=base_topic))
        mark = third.start(head_seq=records[-1]["seq"])
        assert undelivered(records, after_seq=mark, now=rig.clock()) == []
        store.close()


async def wait_for_mark(store: Store, seq: int) -> None:
    async with asyncio.timeout(5):
        while True:
            rows = store.query("SELECT seq FROM result_delivery")
            if rows and rows[0][0] >= seq:
                return
            await asyncio.sleep(0.02)


async def test_publish_confirmed_calls_back_on_the_loop_after_the_puback(
    broker: BrokerAddress, base_topic: str
) -> None:
    config = mqtt_config(broker.host, broker.port, base_topic)
    loop_thread: list[bool] = []
    confirmed = asyncio.Event()

    def on_confirmed() -> None:
        loop_thread.append(asyncio.get_running_loop() is not None)
        confirmed.set()

    inbox: Callable[[InboundMessage], None] = Inbox()
    async with running(config, inbox) as client:
        client.publish_confirmed(Publish(f"{base_topic}/x", "1", qos=1), on_confirmed)
        await asyncio.wait_for(confirmed.wait(), 5)
    assert loop_thread == [True]


async def test_confirmations_keep_up_with_a_burst_without_deadlock(
    broker: BrokerAddress, base_topic: str
) -> None:
    """Thousands of confirmed publishes back to back: paho's thread acknowledges some while
    the loop is inside publish() for the next, the lock order must never let them wait on each
    other, and every message is confirmed exactly once."""
    config = mqtt_config(broker.host, broker.port, base_topic)
    confirmed: list[int] = []
    # Switch threads as often as the interpreter can, so the two threads interleave inside
    # publish() and the acknowledgement callback the way a rare moment in life does.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        await publish_burst(config, confirmed)
    finally:
        sys.setswitchinterval(interval)
    assert sorted(confirmed) == list(range(3000))


async def publish_burst(config: MqttConfig, confirmed: list[int]) -> None:
    async with running(config) as client:
        for n in range(3000):
            message = Publish(f"{config.base_topic}/burst", str(n), qos=1)
            client.publish_confirmed(message, lambda n=n: confirmed.append(n))
            if n % 200 == 0:
                await asyncio.sleep(0)  # let confirmations handed to the loop run
        async with asyncio.timeout(20):
            while len(confirmed) < 3000:
                await asyncio.sleep(0.05)
