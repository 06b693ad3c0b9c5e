"""Test-only event types, in their own catalog so they never leak into the contracts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from switchyard.envelope import EventCatalog

TEST_CATALOG = EventCatalog()


@TEST_CATALOG.register("test.thing.happened")
class ThingHappened(BaseModel):
    """Something happened to a thing."""

    model_config = ConfigDict(extra="forbid")
    thing_id: str
    amount: int = 0


@TEST_CATALOG.register("test.thing.happened", version=2)
class ThingHappenedV2(BaseModel):
    """Something happened to a thing (v2 adds a reason)."""

    model_config = ConfigDict(extra="forbid")
    thing_id: str
    reason: str
