"""The event bus on RabbitMQ (aio-pika): topology, publishing, consuming, retries, DLQ."""

from switchyard.bus.app import bus_context, consumers_context
from switchyard.bus.connection import Bus, PublishFailed, UnroutableEvent
from switchyard.bus.consumer import Consumer, HandlerRegistry, Subscription, decode_event
from switchyard.bus.errors import (
    ClaimLost,
    HandlerTimeout,
    PermanentError,
    PoisonMessage,
    RetryLater,
)
from switchyard.bus.inbox import Inbox, inbox_indexes

__all__ = [
    "Bus",
    "ClaimLost",
    "Consumer",
    "HandlerTimeout",
    "HandlerRegistry",
    "Inbox",
    "PermanentError",
    "PoisonMessage",
    "PublishFailed",
    "RetryLater",
    "Subscription",
    "UnroutableEvent",
    "bus_context",
    "consumers_context",
    "decode_event",
    "inbox_indexes",
]
