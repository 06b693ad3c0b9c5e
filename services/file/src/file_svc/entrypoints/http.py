"""HTTP routes under ``/api/v1/files`` (the gateway forwards the same paths).

Reading a file needs a token of its owner (or of a recipient of a chat message it was
attached to), or a signed link (``?expires=&signature=``, for content and thumbnails).
Anyone else gets the same 404 as for a file that never existed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from file_svc import keys
from file_svc.adapters.storage import BlobMissing, StorageError
from file_svc.domain.files import StoredFile, blob_key
from file_svc.domain.links import LinkRefused
from file_svc.domain.names import content_disposition
from file_svc.domain.ranges import ByteRange, Unsatisfiable, parse_range
from file_svc.entrypoints.upload import upload_file
from file_svc.handlers import delete_file, linked_file, readable_file, share_link, thumbnail
from file_svc.settings import MAX_LINK_SECONDS, THUMBNAIL_SIZES
from switchyard.authn import current_identity, require_auth
from switchyard.envelope import format_time
from switchyard.pagination import PageQuery, invalid_cursor, page, read_cursor
from switchyard.problems import Problem
from switchyard.web import (
    JsonInt,
    QueryModel,
    RequestModel,
    json_response,
    read_json,
    read_query,
)

PREFIX = "/api/v1/files"
# Images are shown inline: nothing in them may run or load anything else. Anything else is
# a download, and if a browser renders it anyway (HTML in a .txt), it runs sandboxed.
IMAGE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
OTHER_CSP = "sandbox; default-src 'none'"


def not_found() -> Problem:
    return Problem(404, "No such file.", slug="not-found")


class LinkQuery(QueryModel):
    expires: str | None = Field(None, max_length=20)
    signature: str | None = Field(None, max_length=128)


class ThumbnailQuery(LinkQuery):
    size: int


class ShareRequest(RequestModel):
    expires_in: JsonInt = Field(ge=1, le=MAX_LINK_SECONDS)


async def _file_for_reading(request: web.Request, query: LinkQuery) -> StoredFile:
    deps = request.app[keys.DEPS]
    file_id = request.match_info["file_id"]
    if query.signature is not None or query.expires is not None:
        if any(len(request.query.getall(name, ())) > 1 for name in ("expires", "signature")):
            # One spelling per link: a repeated parameter is not the link that was issued.
            raise Problem(403, "The link is malformed.", slug="invalid-link")
        try:
            stored = await linked_file(
                file_id, query.expires or "", query.signature or "", deps=deps
            )
        except LinkRefused as refused:
            raise Problem(403, refused.detail, slug=refused.slug) from None
    else:
        identity = current_identity(request)
        stored = await readable_file(file_id, identity.user_id, deps=deps)
    if stored is None:
        raise not_found()
    return stored


def _matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _common_headers(stored: StoredFile, etag: str) -> dict[str, str]:
    return {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "Last-Modified": format_datetime(stored.created_at, usegmt=True),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": IMAGE_CSP if stored.is_image else OTHER_CSP,
    }


async def file_content(request: web.Request) -> web.StreamResponse:
    """The file's bytes, streamed; one ``Range`` → 206; ``If-None-Match`` → 304."""
    deps = request.app[keys.DEPS]
    stored = await _file_for_reading(request, read_query(request, LinkQuery))
    headers = _common_headers(stored, stored.etag)
    if _matches(request.headers.get("If-None-Match"), stored.etag):
        return web.Response(status=304, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    headers["Content-Disposition"] = content_disposition(stored.filename, inline=stored.is_image)
    content_type = stored.content_type + (
        "; charset=utf-8" if stored.content_type.startswith("text/") else ""
    )
    ranges = request.headers.getall("Range", [])
    # Range is one field (RFC 9110 §14.2): sent twice it is invalid, and a cache in front
    # may have read the other one — the whole file is always a correct answer.
    requested = ranges[0] if len(ranges) == 1 else None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != stored.etag:
        requested = None  # the client's copy is outdated: send the whole file
    try:
        byte_range = parse_range(requested, stored.size)
    except Unsatisfiable:
        raise Problem(
            416,
            f"The range is outside the file ({stored.size} bytes).",
            slug="range-not-satisfiable",
            headers={"Content-Range": f"bytes */{stored.size}", **headers},
        ) from None
    selected = byte_range or ByteRange(0, stored.size - 1)
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.content_type = content_type
    response.content_length = selected.length
    if byte_range is not None:
        response.headers["Content-Range"] = byte_range.content_range(stored.size)
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    chunks = deps.storage.read(blob_key(stored.id), selected.start, selected.end)
    try:
        first = await anext(chunks, b"")
    except BlobMissing:
        raise not_found() from None
    except StorageError:
        raise _storage_unavailable() from None
    await response.prepare(request)
    sent = len(first)
    await response.write(first)
    try:
        async for chunk in chunks:
            await response.write(chunk)
            sent += len(chunk)
    finally:
        deps.metrics.sent("content", sent)
    await response.write_eof()
    return response


def _storage_unavailable() -> Problem:
    return Problem(
        503,
        "The file cannot be read right now; try again.",
        slug="storage-unavailable",
        headers={"Retry-After": "5"},
    )


async def file_thumbnail(request: web.Request) -> web.Response:
    """A WebP of at most ``size`` (64, 256 or 1024) pixels on its longer side."""
    deps = request.app[keys.DEPS]
    query = read_query(request, ThumbnailQuery)
    if query.size not in THUMBNAIL_SIZES:
        raise Problem(
            422,
            f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}.",
            slug="validation-error",
            extra={
                "errors": [{"location": "/size", "message": "unsupported size", "code": "enum"}]
            },
        )
    stored = await _file_for_reading(request, query)
    if not stored.is_image:
        raise Problem(404, "This file is not an image; it has no thumbnail.", slug="no-thumbnail")
    etag = f'"{stored.sha256}-{query.size}"'
    headers = _common_headers(stored, etag)
    if _matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    try:
        data = await thumbnail(stored, query.size, deps=deps)
    except BlobMissing:
        raise not_found() from None
    except StorageError:
        raise _storage_unavailable() from None
    deps.metrics.sent("thumbnail", len(data))
    return web.Response(body=data, content_type="image/webp", headers=headers)


@require_auth
async def file_metadata(request: web.Request) -> web.Response:
    deps = request.app[keys.DEPS]
    identity = current_identity(request)
    stored = await readable_file(request.match_info["file_id"], identity.user_id, deps=deps)
    if stored is None:
        raise not_found()
    return json_response(stored.view(), headers={"ETag": stored.etag})


@require_auth
async def list_files(request: web.Request) -> web.Response:
    """The caller's own files, newest first."""
    deps = request.app[keys.DEPS]
    identity = current_identity(request)
    query = read_query(request, PageQuery)
    position = read_cursor(query.cursor, after=str)
    after = position["after"] if position else None
    if after is not None and not after.startswith("f_"):
        raise invalid_cursor()
    items, last = await deps.records.page(identity.user_id, limit=query.limit, after=after)
    return json_response(page([i.view() for i in items], {"after": last} if last else None))


@require_auth
async def share_file(request: web.Request) -> web.Response:
    """A link that works without a token until ``expires_in`` seconds (≤ 7 days) from now."""
    deps = request.app[keys.DEPS]
    identity = current_identity(request)
    body = await read_json(request, ShareRequest)
    stored = await readable_file(request.match_info["file_id"], identity.user_id, deps=deps)
    if stored is None or stored.owner_id != identity.user_id:
        raise not_found()
    link = share_link(stored, body.expires_in, deps=deps)
    base = (deps.settings.public_url or "").rstrip("/")
    result: dict[str, Any] = {
        "url": base + link.path,
        "expires_at": format_time(datetime.fromtimestamp(link.expires, UTC)),
    }
    return json_response(result)


@require_auth
async def remove_file(request: web.Request) -> web.Response:
    deps = request.app[keys.DEPS]
    identity = current_identity(request)
    if not await delete_file(request.match_info["file_id"], identity.user_id, deps=deps):
        raise not_found()
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX, upload_file)
    app.router.add_get(PREFIX, list_files)
    app.router.add_get(PREFIX + "/{file_id}", file_metadata)
    app.router.add_delete(PREFIX + "/{file_id}", remove_file)
    app.router.add_get(PREFIX + "/{file_id}/content", file_content, allow_head=True)
    app.router.add_get(PREFIX + "/{file_id}/thumbnail", file_thumbnail, allow_head=True)
    app.router.add_post(PREFIX + "/{file_id}/share", share_file)
