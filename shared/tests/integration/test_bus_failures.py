"""The bus when processes die and connections drop, on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.bus import PublishFailed
from switchyard.testing import TcpProxy, eventually

from ..support import (
    Recorder,
    make_bus,
    start_consumer,
    thing,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]
PROC = Path(__file__).with_name("proc_consumer.py")


async def spawn_consumer(config: dict) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROC), json.dumps(config), stdout=asyncio.subprocess.PIPE
    )
    line = await asyncio.wait_for(process.stdout.readline(), 90)  # a loaded machine: > 30 s
    assert line.strip() == b"ready"
    return process


async def test_consumer_killed_mid_handler_loses_nothing(settings_overrides, mongo_url, mongo_db):
    config = {
        "mongo_url": mongo_url,
        "db": mongo_db.name,
        "overrides": settings_overrides,
        "slow": True,
    }
    first = await spawn_consumer(config)
    bus = make_bus(settings_overrides)
    await bus.connect()
    slow = thing("slow", amount=1)
    await bus.publish(slow)
    effects = mongo_db["effects"]

    async def started() -> bool:
        return await effects.count_documents({"event_id": slow.id, "stage": "started"}) == 1

    await eventually(started, timeout=15)
    first.send_signal(signal.SIGKILL)
    await first.wait()

    second = await spawn_consumer({**config, "slow": False})
    try:

        async def done() -> bool:
            return await effects.count_documents({"event_id": slow.id, "stage": "done"}) == 1

        await eventually(done, timeout=20)
        finished = await effects.find_one({"event_id": slow.id, "stage": "done"})
        assert finished["pid"] == second.pid  # redelivered to the survivor and processed there
        await asyncio.sleep(0.5)
        assert await effects.count_documents({"event_id": slow.id, "stage": "done"}) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
        await bus.close()


def _close_connections(marker: str) -> int:
    listing = subprocess.run(
        [
            "rabbitmqctl",
            "list_connections",
            "pid",
            "client_properties",
            "--quiet",
            "--no-table-headers",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    closed = 0
    for line in listing.splitlines():
        if marker in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "test: connection cut"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            closed += 1
    return closed


@pytest.mark.skipif(
    not os.path.exists("/usr/sbin/rabbitmqctl"), reason="needs rabbitmqctl of a local broker"
)
async def test_publisher_and_consumer_survive_cut_connections(settings_overrides):
    publisher = make_bus(settings_overrides, service="pub")
    consumer_bus = make_bus(settings_overrides, service="sub")
    await publisher.connect()
    await consumer_bus.connect()
    recorder = Recorder()
    consumer = await start_consumer(consumer_bus, "survivor", ("test.thing.happened",), recorder)
    confirmed: list[str] = []

    async def publish_stream() -> None:
        for n in range(60):
            envelope = thing(f"n{n}")
            try:
                await publisher.publish(envelope)
                confirmed.append(envelope.id)
            except PublishFailed:
                continue  # not confirmed: the caller knows it may not be delivered
            await asyncio.sleep(0.05)

    stream = asyncio.create_task(publish_stream())
    await asyncio.sleep(0.6)
    closed = await asyncio.to_thread(_close_connections, settings_overrides["bus_queue_prefix"])
    # The publisher's connection, and the consumer bus's publishing and consuming ones.
    assert closed == 3
    await stream
    assert len(confirmed) == 60  # publishes waited out the reconnect

    async def all_delivered() -> bool:
        return set(confirmed) <= {e.id for e in recorder.events}

    await eventually(all_delivered, timeout=20)
    await consumer.stop()
    await publisher.close()
    await consumer_bus.close()


async def test_publish_waits_for_a_broker_that_comes_back(settings_overrides):
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    url = settings_overrides["amqp_url"].replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    bus = make_bus(settings_overrides, url=url)
    await bus.connect()
    listener = make_bus(settings_overrides, service="sub")
    await listener.connect()
    recorder = Recorder()
    consumer = await start_consumer(listener, "later", ("test.thing.happened",), recorder)
    await proxy.cut()
    await eventually(lambda: _not(bus.connected))
    envelope = thing("late")
    publishing = asyncio.create_task(bus.publish(envelope))
    await asyncio.sleep(1.0)
    assert not publishing.done()  # waiting for the broker, not failing or dropping
    await proxy.restore()
    await asyncio.wait_for(publishing, 20)
    await recorder.wait_for(1)
    assert recorder.events[0].id == envelope.id
    await consumer.stop()
    await listener.close()
    await bus.close()
    await proxy.close()


async def _not(value: bool) -> bool:
    return not value


async def test_store_outage_during_the_inbox_claim_retries_on_the_tiers_not_in_a_hot_loop(
    settings_overrides, mongo_url
):
    from pymongo import AsyncMongoClient

    from switchyard.bus.inbox import Inbox

    host, port = mongo_url.split("//", 1)[1].rstrip("/").split(":")
    proxy = await TcpProxy(host, int(port)).start()
    client = AsyncMongoClient(f"mongodb://127.0.0.1:{proxy.port}/", serverSelectionTimeoutMS=300)
    bus = make_bus(settings_overrides, retry_delays=[0.5, 0.5, 0.5, 5.0])
    await bus.connect()
    recorder = Recorder()
    inbox = Inbox(client[settings_overrides["mongo_database"]]["inbox"], owner="t")
    consumer = await start_consumer(
        bus, "storeless", ("test.thing.happened",), recorder, inbox=inbox
    )
    await proxy.cut()
    envelope = thing("while-store-down")
    await bus.publish(envelope)

    def retries() -> float:
        return bus.metrics.events_consumed.labels("svc", consumer.queue_name, "retry")._value.get()

    await asyncio.sleep(2.0)
    assert retries() <= 4  # paced by the tiers, not redelivered as fast as the broker can
    # At least one retry: polled, as a loaded machine may not get to it within the 2 s.
    await eventually(lambda: _true(retries() >= 1), timeout=20)
    assert recorder.events == []
    await proxy.restore()
    await recorder.wait_for(1, timeout=20)
    assert [e.id for e in recorder.events] == [envelope.id]
    await consumer.stop()
    await bus.close()
    await client.close()
    await proxy.close()


async def test_a_message_that_cannot_be_settled_is_requeued_at_a_bounded_pace(settings_overrides):
    """A failure outside the handler (here: the retry tier cannot be written) must not
    turn into a hot redelivery loop."""
    from switchyard.bus import consumer as consumer_module

    bus = make_bus(settings_overrides)
    await bus.connect()
    recorder = Recorder(always_fail=True)
    consumer = await start_consumer(bus, "unsettled", ("test.thing.happened",), recorder)

    async def broken_send(*args, **kwargs):
        raise RuntimeError("retry tier unwritable")

    bus.send_to_queue = broken_send  # the failure happens while settling, not in the handler
    await bus.publish(thing("stuck"))
    await asyncio.sleep(2.5)
    assert len(recorder.events) <= 4  # ≈ one delivery per REQUEUE_PAUSE, not hundreds
    # Delivered at all: polled, as a loaded machine may not get to it within the 2.5 s.
    await eventually(lambda: _true(len(recorder.events) >= 1), timeout=20)
    assert consumer_module.REQUEUE_PAUSE >= 0.5
    await consumer.stop()
    await bus.close()


async def test_a_consumer_acks_while_the_publishing_connection_is_down(settings_overrides):
    """Publishing and consuming use separate connections (a memory alarm blocks publishing
    connections; a consumer sharing one could no longer ack). Cutting the publisher's
    connection mid-handler must not cost the consumer its ack."""
    bus = make_bus(settings_overrides)
    await bus.connect()
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(event) -> None:
        handled.append(event.id)
        await release.wait()

    consumer = await start_consumer(bus, "acks", ("test.thing.happened",), handler)
    envelope = thing("in-flight")
    await bus.publish(envelope)
    await eventually(lambda: _true(bool(handled)))
    marker = f"{settings_overrides['bus_queue_prefix']}) publish"
    assert await asyncio.to_thread(_close_connections, marker) == 1
    release.set()

    def acked() -> float:
        return bus.metrics.value("events_consumed_total", queue=consumer.queue_name, outcome="ok")

    await eventually(lambda: _true(acked() >= 1), timeout=20)
    await asyncio.sleep(1.5)  # room for a wrong redelivery
    assert handled == [envelope.id]  # acked on its own connection: no redelivery
    assert acked() == 1
    await consumer.stop()
    await bus.close()


async def _true(value: bool) -> bool:
    return value
