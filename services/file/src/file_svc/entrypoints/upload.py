"""``POST /api/v1/files``: a multipart/form-data upload, read as a stream.

Fields: ``file`` (exactly one, with a filename) and ``purpose`` (avatar | cover |
portfolio | attachment), in either order; nothing else. Every malformed or hostile
shape gets its own problem: not multipart (415), broken framing (400), a missing,
repeated or unknown field, a name that is a path, too long or not UTF-8, an encoded
part (422). The file itself: too large or over quota (413), refused type (415),
empty, unreadable image or decompression bomb (422).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar, get_args

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.client_exceptions import ClientConnectionError
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from file_svc import keys
from file_svc.adapters.storage import StorageError
from file_svc.domain.errors import (
    EmptyFile,
    FileRejected,
    ImageTooLarge,
    QuotaExceeded,
    TooLarge,
    UnreadableImage,
    UnsupportedType,
)
from file_svc.domain.files import PURPOSES, Purpose
from file_svc.domain.names import BadFilename, clean_filename
from file_svc.metrics import FileMetrics, UploadOutcome
from file_svc.uploads import AccountDeleted, KeyInUse, KeyReused, Replay, Upload
from switchyard.authn import current_identity, require_auth
from switchyard.idempotency import REPLAYED_HEADER, request_key
from switchyard.problems import Problem, validation_problem
from switchyard.web import json_response

log = logging.getLogger("file.upload")

READ_CHUNK = 256 * 1024
# aiohttp's part reader reads ahead to find the boundary: a small read for the small
# field, so the purpose is known without waiting for a quarter MiB of the file behind it.
T = TypeVar("T")
SMALL_READ = 4096
MAX_PURPOSE_BYTES = 64
_IDENTITY_ENCODINGS = ("", "identity", "binary", "8bit", "7bit")

_STATUS: list[tuple[type[FileRejected], int, UploadOutcome]] = [
    (QuotaExceeded, 413, "quota"),
    (TooLarge, 413, "too-large"),
    (UnsupportedType, 415, "unsupported-type"),
    (ImageTooLarge, 422, "bomb"),
    (UnreadableImage, 422, "bad-image"),
    (EmptyFile, 422, "empty"),
    (AccountDeleted, 403, "invalid"),
    (KeyInUse, 409, "invalid"),
    (KeyReused, 422, "invalid"),
]


def _field_problem(field: str, message: str, code: str) -> Problem:
    return validation_problem(
        [{"location": f"/{field}", "message": message, "code": code}], message
    )


def _rejection(error: FileRejected) -> tuple[Problem, UploadOutcome]:
    for kind, status, outcome in _STATUS:
        if isinstance(error, kind):
            extra: dict[str, Any] = {}
            if isinstance(error, TooLarge):
                extra["limit_bytes"] = error.limit
            headers = {"Retry-After": "2"} if isinstance(error, KeyInUse) else {}
            problem = Problem(status, error.detail, slug=error.slug, extra=extra, headers=headers)
            return problem, outcome
    return Problem(422, error.detail, slug=error.slug), "invalid"


class Stalled(Problem):
    """The client sent nothing for ``FILE_UPLOAD_IDLE_SECONDS``."""


async def _within(idle: float, step: Awaitable[T]) -> T:
    """One read of the body, given up after ``idle`` seconds without a byte."""
    try:
        async with asyncio.timeout(idle):
            return await step
    except TimeoutError:
        raise Stalled(
            408,
            f"Nothing arrived for {idle:g} seconds; the upload was ended.",
            slug="upload-timeout",
            headers={"Connection": "close"},
        ) from None


async def _read_purpose(part: BodyPartReader, idle: float) -> Purpose:
    raw = b""
    while len(raw) <= MAX_PURPOSE_BYTES and (
        chunk := await _within(idle, part.read_chunk(SMALL_READ))
    ):
        raw += chunk
    choices = ", ".join(PURPOSES)
    if len(raw) > MAX_PURPOSE_BYTES:
        raise _field_problem("purpose", f"The purpose must be one of: {choices}.", "enum")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _field_problem("purpose", "The purpose is not valid UTF-8.", "enum") from None
    if value not in get_args(Purpose):
        raise _field_problem("purpose", f"The purpose must be one of: {choices}.", "enum")
    return value  # type: ignore[return-value]


_SINGLE_PART_HEADERS = ("Content-Disposition", "Content-Type")


def _check_part_encoding(part: BodyPartReader, name: str) -> None:
    for header in _SINGLE_PART_HEADERS:
        if len(part.headers.getall(header, ())) > 1:
            # aiohttp reads the first; a proxy or scanner in front may read another.
            raise Problem(
                400,
                f"The multipart body is malformed: the {name} part repeats {header}.",
                slug="malformed-multipart",
            )
    for header in ("Content-Transfer-Encoding", "Content-Encoding"):
        value = part.headers.get(header, "").strip().lower()
        if value not in _IDENTITY_ENCODINGS:
            raise _field_problem(
                name,
                f"Send the {name} part unencoded ({header}: {value} is not accepted).",
                "unsupported-encoding",
            )


def _idempotency_key(request: web.Request, user_id: str) -> str | None:
    """The caller's ``Idempotency-Key``, scoped to the caller (DESIGN §4)."""
    key = request_key(request)
    return None if key is None else f"{user_id}:{key}"


async def _new_upload(
    request: web.Request, user_id: str, filename: str, part: BodyPartReader
) -> Upload:
    """A fresh upload, or a replay when the same key already created a file. The body is
    streamed either way, never buffered to compare it: a replay hashes what comes in."""
    deps = request.app[keys.DEPS]
    key = _idempotency_key(request, user_id)
    if key is not None:
        status, original, received_sha256 = await deps.records.by_idempotency_key(key)
        if original is not None:
            return Replay(
                deps,
                owner_id=user_id,
                filename=filename,
                original=original,
                original_sha256=received_sha256,
            )
        if status == "uploading":
            raise KeyInUse("An upload with this Idempotency-Key is still running; retry shortly.")
    return Upload(
        deps,
        owner_id=user_id,
        filename=filename,
        declared_type=part.headers.get("Content-Type"),
        idempotency_key=key,
    )


async def _next_part(reader: MultipartReader, idle: float) -> Any:
    try:
        return await _within(idle, reader.next())
    except RuntimeError as error:
        # aiohttp reads a leading ``_charset_`` part (RFC 7578 §4.6) itself and raises
        # RuntimeError when it is longer than a charset name can be.
        raise Problem(
            400, f"The multipart body is malformed: {error}", slug="malformed-multipart"
        ) from None


async def _stream_file(
    part: BodyPartReader, upload: Upload, metrics: FileMetrics, idle: float
) -> None:
    while chunk := await _within(idle, part.read_chunk(READ_CHUNK)):
        metrics.received(len(chunk))  # every byte that came in, stored or refused
        await upload.feed(chunk)
    await upload.end_of_stream()


@require_auth
async def upload_file(request: web.Request) -> web.Response:
    """Store one file: 201 with its metadata and ``Location``."""
    identity = current_identity(request)
    deps = request.app[keys.DEPS]
    metrics = deps.metrics
    if request.content_type != "multipart/form-data":
        raise Problem(
            415,
            "Send the upload as multipart/form-data with the fields file and purpose.",
            slug="multipart-required",
        )
    boundaries = parse_mimetype(request.headers[hdrs.CONTENT_TYPE]).parameters.getall(
        "boundary", []
    )
    if len(boundaries) != 1 or not 1 <= len(boundaries[0]) <= 70:
        # RFC 2046 §5.1.1: one boundary of 1-70 characters. An empty one makes every line
        # starting with "--" inside the file a delimiter; of two, aiohttp takes the first
        # and something in front of it may take the other (aiohttp refuses only long ones).
        raise Problem(
            400,
            "The multipart body is malformed: it needs one boundary of 1-70 characters.",
            slug="malformed-multipart",
        )
    idle = deps.settings.upload_idle
    upload: Upload | None = None
    purpose: Purpose | None = None
    try:
        try:
            reader = await request.multipart()
            while (part := await _next_part(reader, idle)) is not None:
                if isinstance(part, MultipartReader):
                    raise _field_problem(
                        "file", "Nested multipart parts are not accepted.", "nested"
                    )
                name = part.name
                if name == "purpose":
                    if purpose is not None:
                        raise _field_problem("purpose", "Send the purpose once.", "duplicate")
                    _check_part_encoding(part, "purpose")
                    purpose = await _read_purpose(part, idle)
                    if upload is not None:
                        upload.choose_purpose(purpose)
                elif name == "file":
                    if upload is not None:
                        raise _field_problem("file", "Send one file per request.", "duplicate")
                    _check_part_encoding(part, "file")
                    try:
                        filename = clean_filename(part.filename)
                    except BadFilename as error:
                        raise _field_problem("file", str(error), "invalid-filename") from None
                    upload = await _new_upload(request, identity.user_id, filename, part)
                    await upload.begin()
                    if purpose is not None:
                        upload.choose_purpose(purpose)
                    await _stream_file(part, upload, metrics, idle)
                else:
                    shown = (name or "")[:40]
                    raise _field_problem(
                        shown or "(unnamed)",
                        f"Unknown field {shown!r}: send only file and purpose.",
                        "unknown-field",
                    )
        except (ValueError, HttpProcessingError) as error:
            # aiohttp's multipart parser: framing that does not parse, part headers too long
            detail = getattr(error, "message", None) or str(error)
            raise Problem(
                400, f"The multipart body is malformed: {detail}", slug="malformed-multipart"
            ) from None
        missing = [
            {"location": f"/{field}", "message": "This field is required.", "code": "missing"}
            for field, value in (("file", upload), ("purpose", purpose))
            if value is None
        ]
        if missing:
            raise validation_problem(missing, "The upload needs the fields file and purpose.")
        assert upload is not None
        stored = await upload.finish()
    except FileRejected as error:
        problem, outcome = _rejection(error)
        metrics.upload(outcome)
        if upload is not None:
            await upload.fail()
        raise problem from None
    except Problem as problem:
        metrics.upload("aborted" if isinstance(problem, Stalled) else "invalid")
        if upload is not None:
            await upload.fail()
        raise
    except StorageError as error:
        metrics.upload("storage-error")
        log.error("upload failed in storage", extra={"error": repr(error)})
        if upload is not None:
            await upload.fail()
        raise Problem(
            503,
            "The file could not be stored; try again.",
            slug="storage-unavailable",
            headers={"Retry-After": "5"},
        ) from None
    except asyncio.CancelledError:
        metrics.upload("aborted")
        if upload is not None:
            await asyncio.shield(upload.fail())
        raise
    except (ClientConnectionError, ConnectionError):
        # The client went away mid-body: nobody reads the answer, but it is logged as what
        # it is (a 400), not as a server error.
        metrics.upload("aborted")
        if upload is not None:
            await asyncio.shield(upload.fail())
        raise Problem(400, "The upload was interrupted.", slug="upload-interrupted") from None
    except BaseException:
        if upload is not None:
            await asyncio.shield(upload.fail())
        raise
    metrics.upload("replayed" if upload.replayed else "ok")
    headers = {"Location": f"/api/v1/files/{stored.id}"}
    if upload.replayed:
        headers[REPLAYED_HEADER] = "true"
    return json_response(stored.view(), status=201, headers=headers)
