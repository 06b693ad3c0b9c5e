"""Commands and event handlers of the file service: plain async functions, keyword-only deps.

Uploads have their own module (``uploads.py``); the sweeper too (``sweeper.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from file_svc.deps import FileDeps
from file_svc.domain.files import StoredFile, blob_key, is_file_id, thumbnail_key
from file_svc.domain.images import thumbnail_webp
from file_svc.domain.links import LinkRefused, SignedLink
from file_svc.domain.types import ALLOWED
from switchyard.bus import PermanentError
from switchyard.directory import USER_EVENTS, apply_user_event
from switchyard.envelope import Event, new_envelope, utcnow
from switchyard.events.auth import UserDeleted
from switchyard.events.chat import MessageDeleted, MessageSent
from switchyard.events.file import FileDeleted

log = logging.getLogger("file.handlers")

_IMAGE_TYPES = {t.content_type: t for t in ALLOWED["avatar"]}


# -- reading -------------------------------------------------------------------------------


async def readable_file(file_id: str, user_id: str, *, deps: FileDeps) -> StoredFile | None:
    """The file if ``user_id`` may read it: its owner, or a recipient of a chat message it
    was attached to. None otherwise — the caller answers 404 either way (no existence leak)."""
    if not is_file_id(file_id):
        return None
    stored = await deps.records.get(file_id)
    if stored is None:
        return None
    if stored.owner_id == user_id or await deps.grants.may_read(file_id, user_id):
        return stored
    return None


async def linked_file(
    file_id: str, expires: str, signature: str, *, deps: FileDeps
) -> StoredFile | None:
    """The file a signed link points to; :class:`LinkRefused` for a forged or expired link
    (checked before anything is looked up), None when the file is gone."""
    deps.signer.verify(file_id, expires, signature, now=utcnow().timestamp())
    if not is_file_id(file_id):
        raise LinkRefused("invalid-link", "The link's signature is not valid.")
    return await deps.records.get(file_id)


def share_link(stored: StoredFile, expires_in: int, *, deps: FileDeps) -> SignedLink:
    expires = int(utcnow().timestamp()) + expires_in
    return deps.signer.link(stored.id, expires)


async def thumbnail(stored: StoredFile, size: int, *, deps: FileDeps) -> bytes:
    """The WebP thumbnail, from storage when it was made before, else made and kept.

    Requests that miss while the same thumbnail is being made wait for that one instead of
    downloading and decoding the image again each (a burst through a share link would be
    N downloads and N decodes). The work runs as its own task: a requester that goes
    away does not cancel it for the others.
    """
    key = thumbnail_key(stored.id, size)
    cached = await deps.storage.get(key)
    if cached is not None:
        deps.metrics.thumbnail("hit")
        return cached
    running = deps.thumbnail_work.get(key)
    if running is not None:
        deps.metrics.thumbnail("hit")
        return await asyncio.shield(running)
    deps.metrics.thumbnail("miss")
    work = asyncio.create_task(_make_thumbnail(stored, size, key, deps=deps))
    deps.thumbnail_work[key] = work
    work.add_done_callback(partial(_thumbnail_done, deps.thumbnail_work, key))
    return await asyncio.shield(work)


def _thumbnail_done(running: dict[str, Any], key: str, work: asyncio.Task[bytes]) -> None:
    running.pop(key, None)
    if not work.cancelled():
        work.exception()  # retrieved: the requesters that still wait get it raised


async def _make_thumbnail(stored: StoredFile, size: int, key: str, *, deps: FileDeps) -> bytes:
    source = deps.spool.path(stored.id, f"thumb{size}")
    try:
        await deps.storage.download(blob_key(stored.id), source)
        data = await deps.images.run(
            thumbnail_webp,
            source,
            _IMAGE_TYPES[stored.content_type],
            size,
            max_pixels=deps.settings.image_max_pixels,
        )
    finally:
        await deps.spool.remove(source)
    try:
        await deps.storage.put(key, data)
        if await deps.records.status(stored.id) != "ready":
            await deps.storage.delete(key)  # deleted meanwhile: the sweeper may have passed
    except asyncio.CancelledError:
        # Stopped (at shutdown) between storing and checking: a thumbnail is only a cache,
        # so drop it rather than risk keeping one of a file deleted meanwhile.
        await deps.storage.delete(key)
        raise
    return data


async def finish_thumbnails(deps: FileDeps, *, timeout: float) -> int:
    """At shutdown, before storage and the image pool close: wait up to ``timeout`` seconds
    for the thumbnails being made (their requesters may be gone; the work is not theirs),
    then cancel the rest and wait for them to unwind. A cancelled one leaves its spool copy
    removed and no thumbnail stored: the next request makes it. Returns how many were
    cancelled."""
    running = list(deps.thumbnail_work.values())
    if not running:
        return 0
    log.info(
        "waiting for the thumbnails being made",
        extra={"thumbnails": len(running), "timeout": timeout},
    )
    _, pending = await asyncio.wait(running, timeout=timeout)
    for work in pending:
        work.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        log.warning(
            "thumbnails still being made at shutdown were cancelled",
            extra={"thumbnails": len(pending), "timeout": timeout},
        )
    return len(pending)


# -- deleting ------------------------------------------------------------------------------


def _deleted_event(at: datetime) -> Callable[[StoredFile], Any]:
    def build(stored: StoredFile) -> Any:
        return new_envelope(
            FileDeleted(
                file_id=stored.id,
                owner_id=stored.owner_id,
                purpose=stored.purpose,
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
                deleted_at=at,
            ),
            service="file",
            subject=stored.id,
        )

    return build


async def delete_file(file_id: str, owner_id: str, *, deps: FileDeps) -> bool:
    """Soft-delete at once (the record says ``deleted``, with the ``file.deleted`` event);
    the sweeper removes the blob. False when the owner has no such file."""
    if not is_file_id(file_id):
        return False
    now = utcnow()
    stored = await deps.records.mark_deleted(
        file_id, _deleted_event(now), owner_id=owner_id, now=now
    )
    if stored is None:
        return False
    deps.notify()
    return True


async def forget_user(user_id: str, deleted_at: datetime, *, deps: FileDeps) -> int:
    """Every file of a deleted account is deleted (each with its event); uploads still
    running are refused when they finish and swept. Returns how many files were deleted."""
    count = 0
    now = utcnow()
    async for file_id, status in deps.records.owned_by(user_id):
        if status != "ready":
            continue
        if await deps.records.mark_deleted(file_id, _deleted_event(now), owner_id=None, now=now):
            count += 1
    await deps.grants.forget_user(user_id)
    if count:
        deps.notify()
    log.info("files of a deleted account deleted", extra={"user_id": user_id, "files": count})
    return count


# -- events --------------------------------------------------------------------------------


async def handle_user_event(event: Event[Any], *, deps: FileDeps) -> None:
    """auth.user.*: keep the directory; on ``auth.user.deleted`` delete the user's files."""
    if not isinstance(event.data, USER_EVENTS):
        raise PermanentError(f"the users queue does not handle {event.type}")
    await apply_user_event(deps.directory, event.data)
    if isinstance(event.data, UserDeleted):
        await forget_user(event.data.user_id, event.data.deleted_at, deps=deps)


async def record_attachments(data: MessageSent, *, deps: FileDeps) -> None:
    """Recipients of a message may read the files its sender attached — files of the
    sender only: attaching someone else's file id grants nothing."""
    now = utcnow()
    for file_id in dict.fromkeys(data.attachment_ids):
        stored = await deps.records.get(file_id) if is_file_id(file_id) else None
        if stored is None or stored.owner_id != data.sender_id:
            log.info(
                "attachment not granted (unknown file, or not the sender's)",
                extra={"file_id": file_id, "message_id": data.message_id},
            )
            continue
        await deps.grants.grant(
            message_id=data.message_id, file_id=file_id, user_ids=data.recipient_ids, now=now
        )


async def revoke_attachments(data: MessageDeleted, *, deps: FileDeps) -> None:
    """The message's grants go, and stay gone: a ``sent`` handled later grants nothing."""
    await deps.grants.revoke_message(data.message_id, now=utcnow())


CHAT_EVENT_HANDLERS: Mapping[type[Any], Callable[..., Awaitable[None]]] = {
    MessageSent: record_attachments,
    MessageDeleted: revoke_attachments,
}


async def handle_chat_event(event: Event[Any], *, deps: FileDeps) -> None:
    handler = CHAT_EVENT_HANDLERS.get(type(event.data))
    if handler is None:
        raise PermanentError(f"the attachments queue does not handle {event.type}")
    await handler(event.data, deps=deps)


__all__ = [
    "CHAT_EVENT_HANDLERS",
    "delete_file",
    "forget_user",
    "handle_chat_event",
    "handle_user_event",
    "linked_file",
    "readable_file",
    "share_link",
    "thumbnail",
]
