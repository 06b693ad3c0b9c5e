import asyncio

from switchyard.bus import Consumer, Subscription
from switchyard.envelope import new_envelope
from switchyard.testing import service_bus

from ..support import TEST_CATALOG, ThingHappened


async def test_publish_consume(settings_overrides, broker_cleanup):
    bus = service_bus(settings_overrides, "svc", retry_delays=[0.2])
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
