"""Ledger workers in their own processes, killed by SIGKILL where the test says.

This script imports the ledger once and then, for each JSON line on stdin, forks a child
process that executes a plan of transfers in order (its own event loop and store
connection). The child prints ``pid <n>``, ``ready`` and then every ledger step it passes;
it dies by SIGKILL at the Nth step (``"kill": "step:7"``), at the first step of a name
(``"name:debited"``), or when the test kills it by pid. The parent then prints
``exit <status>`` (``-9`` for SIGKILL). Forking keeps a run from paying the imports again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from payments_svc.adapters.ledger import Ledger
from payments_svc.domain.accounts import TransferSpec


async def work(config: dict[str, Any], plan: list[TransferSpec]) -> None:
    kill = config.get("kill", "never")
    seen = 0

    def observe(step: str, tid: str) -> None:
        nonlocal seen
        seen += 1
        print(step, flush=True)
        if kill in (f"step:{seen}", f"name:{step}"):
            os.kill(os.getpid(), signal.SIGKILL)

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(config["mongo_url"], tz_aware=True)
    ledger = Ledger(client[config["db"]], observer=observe)
    print("ready", flush=True)
    for spec in plan:
        await ledger.execute(spec)
    print("done", flush=True)
    await client.close()


def main() -> None:
    for line in sys.stdin:
        config = json.loads(line)
        plan = [
            TransferSpec.from_document(item)
            for item in json.loads(Path(config["plan"]).read_text())
        ]
        child = os.fork()
        if child == 0:
            print(f"pid {os.getpid()}", flush=True)
            asyncio.run(work(config, plan))
            os._exit(0)
        _, status = os.waitpid(child, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        # On a line of its own even when the child died in the middle of printing a step.
        print(f"\nexit {code}", flush=True)


if __name__ == "__main__":
    main()
