"""MongoDB through PyMongo's async API: client lifecycle, indexes, the embedded server."""

from switchyard.mongo.client import Index, connect_mongo, ensure_indexes, mongo_context

__all__ = ["Index", "connect_mongo", "ensure_indexes", "mongo_context"]
