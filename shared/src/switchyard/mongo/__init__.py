"""MongoDB through PyMongo's async API: client lifecycle, indexes, stored times, the embedded
server."""

from switchyard.mongo.client import Index, connect_mongo, ensure_indexes, mongo_context
from switchyard.mongo.dates import loaded_time, stored_time, time_range, time_sort_key, ttl_index

__all__ = [
    "Index",
    "connect_mongo",
    "ensure_indexes",
    "loaded_time",
    "mongo_context",
    "stored_time",
    "time_range",
    "time_sort_key",
    "ttl_index",
]
