"""``Idempotency-Key`` for non-idempotent POSTs (DESIGN §4).

Same key + same request ⇒ the original response is replayed (with
``Idempotent-Replayed: true``); same key + a different request ⇒ 422; a request
still running under the key ⇒ 409 (retry shortly); keys are kept ≥ 24 h.

    app.router.add_post("/things", idempotent("create-thing")(create_thing))
    indexes = [..., *idempotency_indexes()]

Keys are scoped by the ``scope`` name and, when the request carries a verified
identity (``switchyard.authn``), by the caller, so two users never share one.

Each key is one document, claimed with an insert (the unique ``_id`` decides who
runs the handler) that records an **owner** and a lock. The owner renews the lock
while the handler runs, so a slow handler is never taken over; a claim whose lock
ran out (its owner crashed or lost the store) is taken over by the next request,
which becomes the owner. Completion and release are guarded on the owner, so a
stalled former owner can neither overwrite the result nor free the key.

Responses below 500 are stored (a 409 or 422 is as much "the original response" as
a 201). A 5xx or an exception releases the key so the client may retry — unless
the handler already told :meth:`IdempotentRequest.committed` that its effect is
done: then the key is kept, and the retry finds ``effect`` on
:func:`idempotent_request` and rolls forward from it to the original success
(instead of running again and answering, say, 409 "email taken" for 24 hours).

The fingerprint is an HMAC-SHA256, keyed with ``IDEMPOTENCY_SECRET``, of a canonical
form of the request: method, path, query string as sent, and the body — JSON
parsed and re-serialised with sorted keys and no whitespace (key order and spacing
do not matter), any other body as its bytes. A stored fingerprint of a body that
carries a password is then no offline guessing oracle.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchyard import keys
from switchyard.authn import IDENTITY
from switchyard.leases import kept_alive
from switchyard.logging import request_id_var
from switchyard.mongo import Index
from switchyard.mongo.client import Document
from switchyard.mongo.dates import stored_time, time_range, ttl_index
from switchyard.problems import Problem, problem_response

log = logging.getLogger("switchyard.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
COLLECTION = "idempotency_keys"
FINGERPRINT_SCHEME = "hmac-sha256-canonical-v1"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_REPLAYED_HEADERS = ("Location", "Content-Type")
# Development and tests without IDEMPOTENCY_SECRET: one key per process.
_EPHEMERAL_SECRET = secrets.token_bytes(32)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def idempotency_indexes(collection: str = COLLECTION) -> list[Index]:
    return [ttl_index(collection, "expires")]


def canonical_body(body: bytes) -> bytes:
    """JSON with sorted keys and no whitespace; anything that is not JSON, as it came."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(secret: bytes, request: web.Request, body: bytes) -> str:
    """HMAC-SHA256 over method, path, raw query string and the canonical body."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (
        request.method.encode(),
        request.rel_url.raw_path.encode(),
        request.rel_url.raw_query_string.encode(),
        canonical_body(body),
    ):
        mac.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        mac.update(part)
    return mac.hexdigest()


def _legacy_fingerprint(request: web.Request, body: bytes) -> str:
    """How keys stored before the keyed fingerprint were compared (read only, never stored)."""
    digest = hashlib.sha256()
    for part in (request.method.encode(), b"\0", request.path.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


def _matches(record: Mapping[str, Any], request: web.Request, body: bytes, keyed: str) -> bool:
    if record.get("fingerprint_scheme") == FINGERPRINT_SCHEME:
        return hmac.compare_digest(str(record.get("fingerprint", "")), keyed)
    return hmac.compare_digest(
        str(record.get("fingerprint", "")), _legacy_fingerprint(request, body)
    )


def _secret(request: web.Request) -> bytes:
    value = request.app[keys.SETTINGS].idempotency_secret
    return _EPHEMERAL_SECRET if value is None else value.get_secret_value().encode()


def _now() -> datetime:
    return datetime.now(UTC)


class Progress(Protocol):
    """What a command needs to roll forward: the effect an earlier attempt committed, and
    a way to record its own (an :class:`IdempotentRequest` satisfies it)."""

    effect: dict[str, Any] | None

    async def committed(self, **effect: Any) -> None: ...


class IdempotentRequest:
    """The request running under an ``Idempotency-Key``, as its handler sees it."""

    def __init__(
        self, store: AsyncCollection[Document], doc_id: str, owner: str, effect: Any
    ) -> None:
        self._store = store
        self._doc_id = doc_id
        self._owner = owner
        # What an earlier attempt recorded as committed; the handler rolls forward from it.
        self.effect: dict[str, Any] | None = dict(effect) if isinstance(effect, Mapping) else None

    async def committed(self, **effect: Any) -> None:
        """Record that this request's effect is committed (e.g. the account row exists).

        From now on a failure keeps the key instead of releasing it, and the retry gets
        ``effect`` to finish from. Values must be storable (strings, numbers, …).
        """
        result = await self._store.update_one(
            {"_id": self._doc_id, "owner": self._owner, "state": "running"},
            {"$set": {"effect": effect}},
        )
        if result.matched_count != 1:
            log.warning("an idempotency key changed owner before its effect was recorded")
        self.effect = dict(effect)


_REQUEST = web.RequestKey("switchyard.idempotent_request", IdempotentRequest)


def idempotent_request(request: web.Request) -> IdempotentRequest | None:
    """The running request's key, when the client sent an ``Idempotency-Key``."""
    return request.get(_REQUEST)


def request_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key`` (None without one); 400 ``invalid-idempotency-key``
    unless it is 1–255 visible ASCII characters, nothing else (not even a trailing newline)."""
    key = request.headers.get(HEADER)
    if key is not None and not _VALID_KEY.fullmatch(key):
        raise Problem(
            400,
            f"{HEADER} must be 1–255 visible ASCII characters.",
            slug="invalid-idempotency-key",
        )
    return key


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
    lock = timedelta(seconds=lock_seconds)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            key = request_key(request)
            if key is None:
                return await handler(request)
            body = await request.read()  # cached: the handler reads it again for free
            identity = request.get(IDENTITY)
            caller = identity.user_id if identity is not None else "-"
            doc_id = f"{scope}:{caller}:{key}"
            store = request.app[keys.MONGO_DB][collection]
            owner = uuid.uuid4().hex
            keyed = fingerprint(_secret(request), request, body)
            claimed = await _claim(store, doc_id, owner, keyed, request, body, lock, ttl)
            if isinstance(claimed, web.Response):
                return claimed
            attempt = IdempotentRequest(store, doc_id, owner, claimed.get("effect"))
            request[_REQUEST] = attempt
            return await _run(handler, request, store, doc_id, owner, attempt, lock)

        return wrapper

    return decorate


async def _claim(
    store: AsyncCollection[Document],
    doc_id: str,
    owner: str,
    keyed: str,
    request: web.Request,
    body: bytes,
    lock: timedelta,
    ttl: timedelta,
) -> Document | web.Response:
    """The claimed record (new, or taken over from an owner whose lock ran out), or the
    stored response to replay. Raises 409/422 problems."""
    now = _now()
    claim: Document = {
        "_id": doc_id,
        "fingerprint": keyed,
        "fingerprint_scheme": FINGERPRINT_SCHEME,
        "state": "running",
        "owner": owner,
        "lock_expires": stored_time(now + lock),
        "created": stored_time(now),
        "expires": stored_time(now + ttl),
    }
    try:
        await store.insert_one(claim)
        return claim
    except DuplicateKeyError:
        existing = await store.find_one({"_id": doc_id})
    if existing is None:  # expired between the insert and the read
        raise Problem(409, "Retry the request.", slug="idempotency-key-in-use")
    if not _matches(existing, request, body, keyed):
        raise Problem(
            422,
            f"This {HEADER} was used with a different request.",
            slug="idempotency-key-reused",
        )
    if existing["state"] == "done":
        return _replay(existing)
    taken = await store.find_one_and_update(
        {"_id": doc_id, "state": "running", **time_range("lock_expires", at_or_before=now)},
        {"$set": {"owner": owner, "lock_expires": stored_time(now + lock)}},
    )
    if taken is None:
        raise Problem(
            409,
            "A request with this Idempotency-Key is still being processed.",
            slug="idempotency-key-in-use",
            headers={"Retry-After": "1"},
        )
    log.info("took over an idempotency key whose lock ran out", extra={"key": doc_id})
    return taken


async def _run(
    handler: Handler,
    request: web.Request,
    store: AsyncCollection[Document],
    doc_id: str,
    owner: str,
    attempt: IdempotentRequest,
    lock: timedelta,
) -> web.StreamResponse:
    mine = {"_id": doc_id, "owner": owner, "state": "running"}

    async def renew() -> bool:
        result = await store.update_one(
            mine, {"$set": {"lock_expires": stored_time(_now() + lock)}}
        )
        return result.matched_count == 1

    async with kept_alive(renew, every=lock.total_seconds() / 3, what=f"idempotency {doc_id}"):
        try:
            response = await handler(request)
        except Problem as problem:
            response = problem_response(
                problem, instance=request.path, request_id=request_id_var.get()
            )
        except BaseException:
            await asyncio.shield(_give_back(store, mine, attempt))
            raise
    if response.status >= 500 or not isinstance(response, web.Response):
        # A server error (or a streamed body) is not a result to replay.
        await _give_back(store, mine, attempt)
        return response
    done = await store.update_one(
        mine,
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
            },
            "$unset": {"owner": "", "lock_expires": ""},
        },
    )
    if done.matched_count != 1:
        log.warning(
            "an idempotency key was taken over while its handler ran; its result stays",
            extra={"key": doc_id},
        )
    return response


async def _give_back(
    store: AsyncCollection[Document], mine: Document, attempt: IdempotentRequest
) -> None:
    """No result: free the key for a retry — or, once the effect is committed, keep it and
    let the retry take it over at once and roll forward."""
    if attempt.effect is None:
        await store.delete_one(mine)
    else:
        await store.update_one(mine, {"$set": {"lock_expires": stored_time(_now())}})


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


__all__ = [
    "FINGERPRINT_SCHEME",
    "HEADER",
    "REPLAYED_HEADER",
    "IdempotentRequest",
    "Progress",
    "canonical_body",
    "fingerprint",
    "idempotency_indexes",
    "idempotent",
    "idempotent_request",
    "request_key",
]
