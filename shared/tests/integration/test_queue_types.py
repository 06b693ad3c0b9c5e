"""Queue types on the real broker: quorum in production, classic for throwaway (expiring)
test namespaces (``BUS_QUEUE_TYPE``; see ``switchyard.bus.topology``)."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest

from switchyard.bus.topology import QueueType, declare_consumer_queues, dlq_name
from switchyard.settings import ServiceSettings

pytestmark = pytest.mark.integration


def test_production_settings_declare_quorum_queues() -> None:
    settings = ServiceSettings(environment="development")
    assert settings.bus_queue_type == "quorum"
    assert settings.bus_queue_expires_ms is None


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_the_consumer_topology_declares_on_the_broker_with_each_type(
    amqp_url: str, unique_name: str, queue_type: QueueType
) -> None:
    """The broker accepts the whole topology (queue, retry tiers, DLQ) of either type, and
    a redeclaration with the same arguments (a restarted consumer) is accepted too; the
    quorum-only arguments are left out of classic queues, which refuse them."""
    connection = await aio_pika.connect(amqp_url)
    queue = f"{unique_name}.svc.things"
    names = [queue, f"{queue}.retry.1", f"{queue}.retry.2", dlq_name(queue)]
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{unique_name}.x", "topic", auto_delete=True)
        for _ in range(2):
            declared = await declare_consumer_queues(
                channel, exchange, queue, ["test.#"], [0.5, 1.0], 60_000, 7, queue_type
            )
        arguments: dict[str, Any] = dict(declared.arguments or {})
        assert arguments["x-queue-type"] == queue_type
        assert arguments["x-dead-letter-routing-key"] == dlq_name(queue)
        if queue_type == "quorum":
            assert arguments["x-delivery-limit"] == 7
            assert arguments["x-dead-letter-strategy"] == "at-least-once"
        else:
            assert "x-delivery-limit" not in arguments
            assert "x-dead-letter-strategy" not in arguments
        # every queue of the topology exists (a passive declare fails on a missing one)
        for name in names:
            assert (await channel.declare_queue(name, passive=True)).name == name
    finally:
        cleanup = await connection.channel()
        for name in names:
            await cleanup.queue_delete(name)
        await connection.close()


def test_classic_queues_are_refused_where_queues_do_not_expire() -> None:
    with pytest.raises(ValueError, match="BUS_QUEUE_TYPE=classic"):
        ServiceSettings(environment="development", bus_queue_type="classic")
    settings = ServiceSettings(
        environment="development", bus_queue_type="classic", bus_queue_expires_ms=60_000
    )
    assert settings.bus_queue_type == "classic"
