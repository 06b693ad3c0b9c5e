"""``Idempotency-Key`` for non-idempotent POSTs (DESIGN §4).

Same key + same body ⇒ the original response is replayed (with
``Idempotent-Replayed: true``); same key + a different body ⇒ 422; a request
still running under the key ⇒ 409 (retry shortly); keys are kept ≥ 24 h.

    app.router.add_post("/things", idempotent("create-thing")(create_thing))
    indexes = [..., *idempotency_indexes()]

Keys are scoped by the ``scope`` name and, when the request carries a verified
identity (``switchyard.authn``), by the caller, so two users never share one.
Each key is one document: claimed with an insert (the unique ``_id`` decides
who runs the handler), completed with a guarded update. Responses below 500
are stored (a 409 or 422 is as much "the original response" as a 201); a 5xx
or an exception releases the key so the client may retry. A claim left behind
by a crashed process is taken over after ``lock_seconds``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pymongo.errors import DuplicateKeyError

from switchyard import keys
from switchyard.authn import IDENTITY
from switchyard.logging import request_id_var
from switchyard.mongo import Index
from switchyard.mongo.client import asc
from switchyard.problems import Problem, problem_response

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
COLLECTION = "idempotency_keys"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_REPLAYED_HEADERS = ("Location", "Content-Type")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def idempotency_indexes(collection: str = COLLECTION) -> list[Index]:
    return [Index(collection, asc("expires_at"), expire_after_seconds=0)]


def _fingerprint(request: web.Request, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def idempotent(
    scope: str,
    *,
    ttl: timedelta = timedelta(hours=24),
    lock_seconds: float = 60.0,
    collection: str = COLLECTION,
) -> Callable[[Handler], Handler]:
    """Decorate an aiohttp handler to honour ``Idempotency-Key`` (the header is optional)."""
    if ttl < timedelta(hours=24):
        raise ValueError("idempotency keys are kept at least 24 hours (DESIGN §4)")

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            key = request.headers.get(HEADER)
            if key is None:
                return await handler(request)
            if not _VALID_KEY.match(key):
                raise Problem(
                    400,
                    f"{HEADER} must be 1–255 visible ASCII characters.",
                    slug="invalid-idempotency-key",
                )
            body = await request.read()  # cached: the handler reads it again for free
            identity = request.get(IDENTITY)
            owner = identity.user_id if identity is not None else "-"
            doc_id = f"{scope}:{owner}:{key}"
            fingerprint = _fingerprint(request, body)
            store = request.app[keys.MONGO_DB][collection]

            now = _now()
            claim = {
                "_id": doc_id,
                "fingerprint": fingerprint,
                "state": "running",
                # Times in sub-documents: the embedded store turns a bare $set datetime to text.
                "lock": {"until": now + timedelta(seconds=lock_seconds)},
                "created_at": now,
                "expires_at": now + ttl,
            }
            try:
                await store.insert_one(claim)
            except DuplicateKeyError:
                existing = await store.find_one({"_id": doc_id})
                if existing is None:  # expired between the insert and the read
                    raise Problem(
                        409, "Retry the request.", slug="idempotency-key-in-use"
                    ) from None
                if existing["fingerprint"] != fingerprint:
                    raise Problem(
                        422,
                        f"This {HEADER} was used with a different request body.",
                        slug="idempotency-key-reused",
                    ) from None
                if existing["state"] == "done":
                    return _replay(existing)
                taken = await store.update_one(
                    {
                        "_id": doc_id,
                        "state": "running",
                        "lock.until": {"$lte": now},
                    },
                    {"$set": {"lock": {"until": now + timedelta(seconds=lock_seconds)}}},
                )
                if taken.modified_count != 1:
                    raise Problem(
                        409,
                        "A request with this Idempotency-Key is still being processed.",
                        slug="idempotency-key-in-use",
                        headers={"Retry-After": "1"},
                    ) from None

            try:
                response = await handler(request)
            except Problem as problem:
                response = problem_response(
                    problem, instance=request.path, request_id=request_id_var.get()
                )
            except BaseException:
                await store.delete_one({"_id": doc_id, "state": "running"})
                raise
            if response.status >= 500 or not isinstance(response, web.Response):
                # A server error (or a streamed body) is not a result to replay.
                await store.delete_one({"_id": doc_id, "state": "running"})
                return response
            await store.update_one(
                {"_id": doc_id, "state": "running"},
                {
                    "$set": {
                        "state": "done",
                        "status": response.status,
                        "body": base64.b64encode(_body_bytes(response)).decode(),
                        "headers": {
                            name: response.headers[name]
                            for name in _REPLAYED_HEADERS
                            if name in response.headers
                        },
                    }
                },
            )
            return response

        return wrapper

    return decorate


def _body_bytes(response: web.Response) -> bytes:
    body = response.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return b""


def _replay(record: dict[str, Any]) -> web.Response:
    headers = dict(record.get("headers") or {})
    content_type = headers.pop("Content-Type", "application/json")
    body = base64.b64decode(record.get("body", ""))
    response = web.Response(status=int(record["status"]), body=body, headers=headers)
    response.headers["Content-Type"] = content_type
    response.headers[REPLAYED_HEADER] = "true"
    return response


__all__ = ["HEADER", "REPLAYED_HEADER", "idempotency_indexes", "idempotent"]
