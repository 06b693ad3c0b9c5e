"""Times in stored documents: one shape that behaves alike on MongoDB and the embedded store.

A stored time is a sub-document ``{"at": <BSON date>, "unix_us": <int>}`` named for the
moment it records; it reads back exactly as written (microseconds, UTC)::

    {"$set": {"sent": stored_time(now)}}                   # write: always the whole value
    delivery.sent_at = loaded_time(doc["sent"])             # read
    find(time_range("lease_expires", before=now))           # compare: exact, on unix_us
    find(...).sort(time_sort_key("created"), -1)            # order
    ttl_index("codes", "expires")                           # expire: TTL on the BSON date

Why two values (measured on nx-27017 0.8.1, pinned in ``shared/tests/store``):

- a bare datetime written by ``$set``/``$max`` into an existing document, also through a
  dotted path (``{"$set": {"sent.at": now}}``), is stored as a *string*; inside a
  sub-document set as a whole it stays a date — hence a sub-document, set whole;
- the embedded store compares dates through SQLite ``datetime()``, which drops the
  fractional second: dates 100 ms apart are equal to ``$eq``, neither ``$lt`` nor ``$gt``
  each other. Integers compare exactly on both backends — hence ``unix_us`` (microseconds
  since the epoch, as exact as Python's datetime) for reading, queries and sorting;
- a TTL index needs a real BSON date on MongoDB (numbers never expire); the embedded
  store expires dates too (lazily, on the next read) — hence ``at``, the BSON date (it
  holds milliseconds), for TTL indexes and for people reading the documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from switchyard.mongo.client import Document, Index

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
DATE_KEY = "at"
ORDER_KEY = "unix_us"


def _unix_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"a stored time needs a UTC offset, got the naive {moment!r}")
    return (moment - _EPOCH) // _MICROSECOND


def stored_time(moment: datetime) -> Document:
    """The value to store for ``moment`` (timezone-aware); set it whole, never by a dotted path."""
    unix_us = _unix_us(moment)
    return {DATE_KEY: _EPOCH + (unix_us // 1000) * 1000 * _MICROSECOND, ORDER_KEY: unix_us}


def loaded_time(value: Mapping[str, Any]) -> datetime:
    """The UTC datetime of a value written by :func:`stored_time`, to the microsecond."""
    return _EPOCH + int(value[ORDER_KEY]) * _MICROSECOND


def time_sort_key(field: str) -> str:
    """The path to sort or index ``field`` by (``created`` → ``created.unix_us``)."""
    return f"{field}.{ORDER_KEY}"


def time_range(
    field: str,
    *,
    after: datetime | None = None,
    at_or_after: datetime | None = None,
    before: datetime | None = None,
    at_or_before: datetime | None = None,
) -> Document:
    """A filter on ``field``'s stored time, exact to the microsecond on every backend.

    ``time_range("lease_expires", before=now)`` → ``{"lease_expires.unix_us": {"$lt": …}}``;
    combine bounds for a window. A document without ``field`` never matches.
    """
    bounds = {"$gt": after, "$gte": at_or_after, "$lt": before, "$lte": at_or_before}
    condition = {op: _unix_us(moment) for op, moment in bounds.items() if moment is not None}
    if not condition:
        raise ValueError("time_range needs at least one bound")
    return {time_sort_key(field): condition}


def ttl_index(collection: str, field: str, *, expire_after: timedelta = timedelta(0)) -> Index:
    """A TTL index removing a document ``expire_after`` past ``field``'s stored time.

    Expiry is lazy on every backend (MongoDB's monitor runs once a minute; the embedded
    store purges on the next read), so readers still check the time themselves.
    """
    return Index(
        collection,
        [(f"{field}.{DATE_KEY}", 1)],
        expire_after_seconds=int(expire_after.total_seconds()),
    )


__all__ = ["loaded_time", "stored_time", "time_range", "time_sort_key", "ttl_index"]
