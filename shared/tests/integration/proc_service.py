"""A whole service process (new_app + Mongo + bus + consumers), for shutdown tests.

``python proc_service.py '<json settings overrides>' PORT`` — the handler of
``test.thing.happened`` records ``started``, sleeps ``amount`` tenths of a second,
then records ``done`` in the ``effects`` collection.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402
from support import TEST_CATALOG  # noqa: E402

from switchyard import keys  # noqa: E402
from switchyard.bus import HandlerRegistry, bus_context, consumers_context  # noqa: E402
from switchyard.bus.inbox import inbox_indexes  # noqa: E402
from switchyard.logging import configure_logging  # noqa: E402
from switchyard.mongo import mongo_context  # noqa: E402
from switchyard.settings import ServiceSettings  # noqa: E402
from switchyard.web import new_app  # noqa: E402


def create_app(settings: ServiceSettings) -> web.Application:
    app = new_app(settings)
    app.cleanup_ctx.append(mongo_context(inbox_indexes()))
    app.cleanup_ctx.append(bus_context)

    async def handler(event) -> None:
        effects = app[keys.MONGO_DB]["effects"]
        await effects.insert_one(
            {"_id": uuid.uuid4().hex, "event_id": event.id, "stage": "started", "pid": os.getpid()}
        )
        await asyncio.sleep(event.data.amount / 10)
        await effects.insert_one(
            {"_id": uuid.uuid4().hex, "event_id": event.id, "stage": "done", "pid": os.getpid()}
        )

    def registry(app: web.Application) -> HandlerRegistry:
        handlers = HandlerRegistry()
        handlers.add("slow", ["test.thing.happened"], handler)
        return handlers

    app.cleanup_ctx.append(consumers_context(registry, catalog=TEST_CATALOG))
    return app


if __name__ == "__main__":
    overrides = json.loads(sys.argv[1])
    settings = ServiceSettings(
        service_name="svc", port=int(sys.argv[2]), **{**overrides, "shutdown_timeout": 10}
    )
    configure_logging("svc", "INFO", "console")
    web.run_app(
        create_app(settings), host="127.0.0.1", port=settings.port, shutdown_timeout=10, print=None
    )
