"""The DLQ tool on the real RabbitMQ: one pass, one message held at a time."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from switchyard.bus.headers import H_ORIGINAL_QUEUE, H_REASON
from switchyard.dlq import DeadLetters
from switchyard.envelope import new_envelope

from ..support import TEST_CATALOG, Recorder, ThingHappened, make_bus, start_consumer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("broker_cleanup")]
PARKED = 200


async def park(settings_overrides, name: str) -> tuple[str, list[str]]:
    """A declared topology for ``name`` with PARKED messages in its DLQ."""
    bus = make_bus(settings_overrides)
    await bus.connect()
    consumer = await start_consumer(bus, name, ("test.thing.happened",), Recorder())
    await consumer.stop()
    ids = []
    for n in range(PARKED):
        envelope = new_envelope(
            ThingHappened(thing_id=f"p{n}"), service="svc", catalog=TEST_CATALOG
        )
        await bus.send_to_queue(
            f"{consumer.queue_name}.dlq",
            envelope.to_json(),
            headers={H_REASON: "retries-exhausted", H_ORIGINAL_QUEUE: consumer.queue_name},
            properties={"message_id": envelope.id},
        )
        ids.append(envelope.id)
    await bus.close()
    return consumer.queue_name, ids


async def ready_depths(amqp_url: str, queue: str, stop: asyncio.Event) -> list[int]:
    """Ready messages in ``queue`` (unacked ones are not counted), sampled until ``stop``."""
    connection = await aio_pika.connect(amqp_url)
    seen = []
    try:
        channel = await connection.channel()
        while not stop.is_set():
            declared = await channel.declare_queue(queue, passive=True)
            seen.append(int(declared.declaration_result.message_count or 0))
            await asyncio.sleep(0.005)
    finally:
        await connection.close()
    return seen


@pytest.mark.parametrize("operation", ["replay", "purge"])
async def test_replay_and_purge_by_id_hold_one_message_at_a_time(settings_overrides, operation):
    queue, ids = await park(settings_overrides, f"deep_{operation}")
    tool = DeadLetters(settings_overrides["amqp_url"], queue)
    stop = asyncio.Event()
    sampler = asyncio.create_task(
        ready_depths(settings_overrides["amqp_url"], f"{queue}.dlq", stop)
    )
    await asyncio.sleep(0.05)
    target = ids[-1]  # the last one: the whole queue is walked
    done = await getattr(tool, operation)(target)
    stop.set()
    depths = await sampler
    assert done == 1
    assert len(depths) >= 5
    # Draining into memory would take the ready count to 0; walking one at a time keeps
    # all but the one in hand (and the one re-published but not yet counted) ready.
    assert min(depths) >= PARKED - 2, min(depths)
    remaining = [m.message_id for m in await tool.peek(limit=None)]
    assert remaining == ids[:-1]  # order kept, the target gone
