"""Exceptions a handler raises to steer what happens to its message."""

from __future__ import annotations


class PermanentError(Exception):
    """The message can never succeed: park it in the DLQ now, without retries."""


class PoisonMessage(PermanentError):
    """The message itself is unusable: not JSON, not an envelope, unknown type or version,
    or data that fails its schema."""
