import asyncio

from switchyard.bus import Bus, Consumer, Subscription
from switchyard.envelope import new_envelope
from switchyard.metrics import Metrics

from ..support import TEST_CATALOG, ThingHappened


async def test_publish_consume(settings_overrides, broker_cleanup):
    s = settings_overrides
    bus = Bus(
        url=s["amqp_url"],
        exchange=s["bus_exchange"],
        service="svc",
        metrics=Metrics("svc"),
        queue_prefix=s["bus_queue_prefix"],
        retry_delays=[0.2],
        queue_expires_ms=60000,
    )
    await bus.connect()
    got = asyncio.Queue()

    async def handler(event):
        await got.put(event)

    consumer = Consumer(
        bus, Subscription("things", ("test.thing.*",), handler), catalog=TEST_CATALOG
    )
    await consumer.start()
    env = new_envelope(ThingHappened(thing_id="a"), service="svc", catalog=TEST_CATALOG)
    await bus.publish(env)
    event = await asyncio.wait_for(got.get(), 5)
    assert event.data == ThingHappened(thing_id="a")
    await consumer.stop()
    await bus.close()
