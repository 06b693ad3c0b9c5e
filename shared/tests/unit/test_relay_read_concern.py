"""The relay reads with majority read concern exactly where a failover can roll back a write."""

from __future__ import annotations

from switchyard.outbox import relay_read_concern


def test_a_replica_set_member_reads_majority() -> None:
    hello = {"isWritablePrimary": True, "setName": "rs0", "hosts": ["mongo:27017"], "ok": 1.0}
    concern = relay_read_concern(hello)
    assert concern is not None and concern.level == "majority"


def test_a_sharded_cluster_router_reads_majority() -> None:
    concern = relay_read_concern({"isWritablePrimary": True, "msg": "isdbgrid", "ok": 1.0})
    assert concern is not None and concern.level == "majority"


def test_a_standalone_server_uses_the_default() -> None:
    # What the embedded server (and a single mongod without --replSet) answers.
    assert relay_read_concern({"isWritablePrimary": True, "maxWireVersion": 17, "ok": 1.0}) is None
