"""Writes a state change with its event into the outbox, then dies by SIGKILL.

No relay runs in this process: the event is left for the next relay to publish.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import MongoClient  # noqa: E402
from support import TEST_CATALOG, ThingHappened  # noqa: E402

from switchyard.envelope import new_envelope  # noqa: E402
from switchyard.outbox import with_events  # noqa: E402

config = json.loads(sys.argv[1])
client = MongoClient(config["mongo_url"])
envelope = new_envelope(
    ThingHappened(thing_id="crash", amount=5), service="svc", catalog=TEST_CATALOG
)
client[config["db"]]["things"].insert_one(with_events({"_id": "crash", "amount": 5}, [envelope]))
print(envelope.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
