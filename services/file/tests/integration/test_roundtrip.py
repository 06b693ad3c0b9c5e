"""Uploads come back byte for byte through the gateway; the size limit and the quota are
enforced while streaming; many uploads at once stay separate. Both backends."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from ..conftest import Stack, leftovers, stored_objects
from ..support import MIB, generated, generated_bytes

pytestmark = pytest.mark.integration


async def test_one_byte_and_one_mib_come_back_identical_through_the_gateway(stack: Stack) -> None:
    token = stack.token("u-ada")
    for data, name, data_source in (
        (b"a", "a.txt", b"a"),
        (generated_bytes(MIB), "data.pdf", generated(MIB)),
    ):
        created = await stack.api.upload(data_source, name, token=token)
        assert created.status == 201, created.body
        meta = created.json()
        assert meta["size"] == len(data)
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert meta["filename"] == name and meta["owner_id"] == "u-ada"
        assert created.headers["Location"] == f"/api/v1/files/{meta['id']}"
        got = await stack.api.content(meta["id"], token=token)
        assert got.status == 200 and got.body == data
        assert got.headers["ETag"] == f'"{meta["sha256"]}"'
        described = await stack.api.request("GET", f"/api/v1/files/{meta['id']}", token=token)
        assert described.status == 200 and described.json() == meta


async def test_limit_is_enforced_while_streaming_and_the_partial_object_removed(
    start_stack: object,
) -> None:
    limit = 6 * MIB + 123  # past one S3 part, so the refused upload had a multipart upload
    stack: Stack = await start_stack(max_bytes=limit)  # type: ignore[operator]
    token = stack.token("u-ada")
    exact = await stack.api.upload(generated(limit), "exact.pdf", token=token)
    assert exact.status == 201, exact.body
    objects_before = await stored_objects(stack.deps)

    over = await stack.api.upload(generated(limit + 1), "over.pdf", token=token)
    assert over.status == 413, over.body
    problem = over.json()
    assert problem["type"].endswith("/file-too-large") and problem["limit_bytes"] == limit
    assert await stored_objects(stack.deps) == objects_before
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}
    assert stack.deps.metrics.value("file_uploads_total", outcome="too-large") == 1


async def test_quota_is_per_user_and_freed_by_deleting(start_stack: object) -> None:
    stack: Stack = await start_stack(quota_bytes=3 * MIB)  # type: ignore[operator]
    ada, grace = stack.token("u-ada"), stack.token("u-grace")
    first = await stack.api.upload(generated(2 * MIB), "one.pdf", token=ada)
    assert first.status == 201
    second = await stack.api.upload(generated(2 * MIB), "two.pdf", token=ada)
    assert second.status == 413 and second.json()["type"].endswith("/quota-exceeded")
    assert (await stack.api.upload(generated(2 * MIB), "two.pdf", token=grace)).status == 201
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}

    file_id = first.json()["id"]
    assert (await stack.api.request("DELETE", f"/api/v1/files/{file_id}", token=ada)).status == 204
    await stack.sweep()
    assert (await stack.api.upload(generated(2 * MIB), "two.pdf", token=ada)).status == 201


async def test_twenty_concurrent_uploads_each_keep_their_own_bytes(stack: Stack) -> None:
    token = stack.token("u-ada")
    sizes = [100_000 + 37_000 * n for n in range(20)]

    async def one(n: int) -> tuple[int, dict[str, object]]:
        reply = await stack.api.upload(generated(sizes[n], seed=n), f"doc-{n}.pdf", token=token)
        assert reply.status == 201, reply.body
        return n, reply.json()

    results = await asyncio.gather(*(one(n) for n in range(20)))
    assert len({meta["id"] for _, meta in results}) == 20
    for n, meta in results:
        expected = generated_bytes(sizes[n], seed=n)
        assert meta["sha256"] == hashlib.sha256(expected).hexdigest()
        got = await stack.api.content(str(meta["id"]), token=token)
        assert got.body == expected
    assert len(await stored_objects(stack.deps)) == 20
