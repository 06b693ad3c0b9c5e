"""Graceful shutdown: SIGTERM stops consuming, lets the in-flight handler finish and ack."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from switchyard.envelope import new_envelope
from switchyard.testing import eventually
from switchyard.testing.servers import free_port

from ..support import TEST_CATALOG, ThingHappened, make_bus

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]


async def test_sigterm_finishes_the_handler_in_flight_and_acks(settings_overrides, mongo_db):
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("proc_service.py")),
        json.dumps(settings_overrides),
        str(port),
    )
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=90, interval=0.2)  # a loaded machine took > 30 s
    bus = make_bus(settings_overrides)
    await bus.connect()
    slow = new_envelope(
        ThingHappened(thing_id="slow", amount=20), service="svc", catalog=TEST_CATALOG
    )  # 2 s
    await bus.publish(slow)
    effects = mongo_db["effects"]

    async def started() -> bool:
        return await effects.count_documents({"event_id": slow.id, "stage": "started"}) == 1

    await eventually(started, timeout=15)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    assert (
        await effects.count_documents({"event_id": slow.id, "stage": "done"}) == 1
    )  # finished, not cut off
    # … and acked: nothing is left on the queue for the next replica.
    channel = await bus.connection.channel()
    queue = await channel.declare_queue(bus.queue_name("slow"), passive=True)
    assert queue.declaration_result.message_count == 0
    await bus.close()
