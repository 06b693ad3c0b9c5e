"""``Idempotency-Key`` on uploads (DESIGN §4), without buffering: a retried upload (a phone
that lost the answer) gets the file it created; the key with another file is a 422; two at
once are a 409; keys are per user and free again once the file is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from switchyard.testing import eventually

from ..conftest import Stack, leftovers, stored_objects
from ..support import MultipartBody, file_part, jpeg_with_gps, purpose_part

pytestmark = pytest.mark.integration


async def test_a_retried_upload_gets_the_file_it_created(stack: Stack) -> None:
    ada, grace = stack.token("u-ada"), stack.token("u-grace")
    photo = jpeg_with_gps()  # stored re-encoded: the replay compares what was received

    async def send(token: str, key: str, data: bytes = photo, name: str = "me.jpg") -> object:
        body = MultipartBody([purpose_part("avatar"), file_part(data, name, "image/jpeg")])
        return await stack.api.send(body, token=token, headers={"Idempotency-Key": key})

    first = await send(ada, "k-1")
    assert first.status == 201 and "Idempotent-Replayed" not in first.headers  # type: ignore[attr-defined]
    again = await send(ada, "k-1")
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"  # type: ignore[attr-defined]
    assert again.json() == first.json()  # type: ignore[attr-defined]
    assert len(await stored_objects(stack.deps)) == 1

    other_file = await send(ada, "k-1", data=photo + b"\x00", name="me.jpg")
    assert other_file.status == 422  # type: ignore[attr-defined]
    assert other_file.json()["type"].endswith("/idempotency-key-reused")  # type: ignore[attr-defined]
    renamed = await send(ada, "k-1", name="you.jpg")
    assert renamed.status == 422  # type: ignore[attr-defined]
    theirs = await send(grace, "k-1")  # keys are per user
    assert theirs.status == 201 and theirs.json()["id"] != first.json()["id"]  # type: ignore[attr-defined]
    bad = await send(ada, "bad key with spaces")
    assert bad.status == 400 and bad.json()["type"].endswith("/invalid-idempotency-key")  # type: ignore[attr-defined]

    file_id = first.json()["id"]  # type: ignore[attr-defined]
    assert (await stack.api.request("DELETE", f"/api/v1/files/{file_id}", token=ada)).status == 204
    fresh = await send(ada, "k-1")
    assert fresh.status == 201 and fresh.json()["id"] != file_id  # type: ignore[attr-defined]
    assert stack.deps.metrics.value("file_uploads_total", outcome="replayed") == 1


async def test_the_same_key_twice_at_once_is_a_conflict(stack: Stack) -> None:
    ada = stack.token("u-ada")
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"%PDF-1.7\n" + b"x" * 100_000
        await release.wait()
        yield b"y" * 100_000

    body = MultipartBody([purpose_part("attachment"), file_part(slow, "a.pdf")])
    headers = {"Idempotency-Key": "same"}
    first = asyncio.create_task(stack.api.send(body, token=ada, headers=headers))

    async def running() -> bool:
        return await stack.deps.records.collection.count_documents({"status": "uploading"}) == 1

    await eventually(running)
    second = await stack.api.send(
        MultipartBody([purpose_part("attachment"), file_part(b"%PDF-1.7\nz", "a.pdf")]),
        token=ada,
        headers=headers,
    )
    assert second.status == 409 and second.headers["Retry-After"]
    assert second.json()["type"].endswith("/idempotency-key-in-use")
    release.set()
    done = await first
    assert done.status == 201, done.body
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}
