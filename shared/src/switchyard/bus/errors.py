"""Exceptions a handler raises to steer what happens to its message."""

from __future__ import annotations


class PermanentError(Exception):
    """The message can never succeed: park it in the DLQ now, without retries."""


class PoisonMessage(PermanentError):
    """The message itself is unusable: not JSON, not an envelope, unknown type or version,
    or data that fails its schema."""


class HandlerTimeout(Exception):
    """The handler did not finish within its timeout; it was cancelled and the message
    goes down the retry tiers like any failure."""


class ClaimLost(Exception):
    """Another delivery took over this event's inbox claim while the handler ran (this
    one's lease could not be renewed); the handler was cancelled."""


class RetryLater(Exception):
    """Try again no sooner than ``after`` seconds (a provider's ``Retry-After``): the message
    takes the first retry tier at least that long, skipping shorter ones; the DLQ once the
    tiers are used up, as for any failure."""

    def __init__(self, message: str, *, after: float) -> None:
        super().__init__(message)
        self.after = max(0.0, after)
