"""Headers the consumer writes on retried and parked messages (read by the DLQ tool)."""

from __future__ import annotations

from switchyard.bus.topology import H_ATTEMPT

# Headers written on a message parked in the DLQ (read by the DLQ tool).
H_REASON = "x-dead-reason"
H_EXC_TYPE = "x-exception-type"
H_EXC_MESSAGE = "x-exception-message"
H_ATTEMPTS = "x-attempts"
H_FIRST_FAILURE = "x-first-failure-at"
H_LAST_FAILURE = "x-last-failure-at"
H_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
H_ORIGINAL_QUEUE = "x-original-queue"
H_ORIGINAL_EXCHANGE = "x-original-exchange"  # events parked because no queue was bound

__all__ = [
    "H_ATTEMPT",
    "H_ATTEMPTS",
    "H_EXC_MESSAGE",
    "H_EXC_TYPE",
    "H_FIRST_FAILURE",
    "H_LAST_FAILURE",
    "H_ORIGINAL_EXCHANGE",
    "H_ORIGINAL_QUEUE",
    "H_ORIGINAL_ROUTING_KEY",
    "H_REASON",
]
