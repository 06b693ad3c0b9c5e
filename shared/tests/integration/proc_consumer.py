"""A consumer in its own process, for crash tests: ``python proc_consumer.py '<json config>'``.

Handles ``test.thing.happened``: records ``started`` then (when ``amount`` is 1 and
``slow`` is set) sleeps, then records ``done``. Records go to the ``effects`` collection.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient  # noqa: E402
from support import make_bus, start_consumer  # noqa: E402

from switchyard.bus.inbox import Inbox  # noqa: E402


async def main(config: dict) -> None:
    client = AsyncMongoClient(config["mongo_url"])
    db = client[config["db"]]
    effects = db["effects"]
    bus = make_bus(config["overrides"])
    await bus.connect()

    async def handler(event) -> None:
        await effects.insert_one(
            {"_id": uuid.uuid4().hex, "event_id": event.id, "pid": os.getpid(), "stage": "started"}
        )
        if config.get("slow") and event.data.amount == 1:
            await asyncio.sleep(60)
        await effects.insert_one(
            {"_id": uuid.uuid4().hex, "event_id": event.id, "pid": os.getpid(), "stage": "done"}
        )

    # A short lease: a redelivered copy waits for a live one, so a killed holder's event is
    # taken over once its lease (no longer renewed) runs out.
    inbox = Inbox(db["inbox"], owner=f"pid-{os.getpid()}", lease_seconds=3.0)
    await start_consumer(bus, "crashy", ("test.thing.happened",), handler, inbox=inbox)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
