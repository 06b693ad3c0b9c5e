"""How times are stored: RFC 3339 strings for what people read, epoch seconds for what is compared.

Never BSON dates in updates: the embedded store keeps a date written by ``$set``
on an existing document as a string (nx-27017 0.8.1), after which range queries
on it silently stop matching. Strings and numbers mean the same on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime

from switchyard.envelope import format_time


def stored(moment: datetime) -> str:
    """``2026-03-01T12:00:00.123Z``: fixed width, so string order is time order."""
    return format_time(moment)


def loaded(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value)


def epoch(moment: datetime) -> float:
    return moment.timestamp()
