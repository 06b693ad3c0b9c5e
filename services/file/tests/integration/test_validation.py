"""What is refused, and how: the content decides the type; names and declared types may
only agree; hostile multipart shapes each get their own problem. Nothing refused is stored."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.testing import eventually

from ..conftest import Stack, leftovers, stored_objects
from ..support import (
    PDF,
    MultipartBody,
    Part,
    file_part,
    png,
    purpose_part,
    windows_executable,
)

pytestmark = pytest.mark.integration


def problem_type(reply: object) -> str:
    return str(reply.json()["type"]).rsplit("/", 1)[-1]  # type: ignore[attr-defined]


async def nothing_stored(stack: Stack) -> None:
    assert await stored_objects(stack.deps) == set()
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}


async def test_content_decides_and_names_or_types_that_contradict_it_are_refused(
    stack: Stack,
) -> None:
    token = stack.token("u-ada")
    cases = [
        # (data, filename, declared type, purpose, expected status, problem type)
        (windows_executable(), "cat.png", "image/png", "avatar", 415, "unsupported-file-type"),
        (windows_executable(), "cat.png", None, "attachment", 415, "unsupported-file-type"),
        (png(), "scan.pdf", "application/pdf", "attachment", 415, "unsupported-file-type"),
        (png(), "scan.pdf", None, "attachment", 415, "unsupported-file-type"),
        (png(), "scan.png", "application/pdf", "attachment", 415, "unsupported-file-type"),
        (PDF, "cv.pdf", "application/pdf", "avatar", 415, "unsupported-file-type"),
        (
            b"<html><script>alert(1)</script></html>",
            "page.html",
            "text/html",
            "attachment",
            415,
            "unsupported-file-type",
        ),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"/>',
            "logo.svg",
            None,
            "attachment",
            415,
            "unsupported-file-type",
        ),
        (b"\x00\x01\x02binary", "blob.bin", None, "attachment", 415, "unsupported-file-type"),
        (b"", "empty.txt", "text/plain", "attachment", 422, "empty-file"),
    ]
    for data, name, declared, purpose, status, slug in cases:
        reply = await stack.api.upload(
            data, name, token=token, purpose=purpose, content_type=declared
        )
        assert reply.status == status, (name, declared, purpose, reply.body)
        assert problem_type(reply) == slug, (name, reply.body)
        assert reply.headers["Content-Type"] == "application/problem+json"
    await nothing_stored(stack)
    assert stack.deps.metrics.value("file_uploads_total", outcome="unsupported-type") == 9


async def test_accepted_types_per_purpose(stack: Stack) -> None:
    token = stack.token("u-ada")
    accepted = [
        (png(), "me.png", "image/png", "avatar", "image/png"),
        (png(), "me", None, "cover", "image/png"),  # no extension: nothing contradicts
        (PDF, "cv.pdf", "application/pdf", "attachment", "application/pdf"),
        (b"name,amount\nada,1\n", "sums.csv", "text/csv", "attachment", "text/csv"),
        (
            "Grüße, 👋\n".encode(),
            "hello.txt",
            "text/plain; charset=utf-8",
            "attachment",
            "text/plain",
        ),
        (b"# Title\n", "readme.md", None, "attachment", "text/markdown"),
    ]
    for data, name, declared, purpose, content_type in accepted:
        reply = await stack.api.upload(
            data, name, token=token, purpose=purpose, content_type=declared
        )
        assert reply.status == 201, (name, reply.body)
        assert reply.json()["content_type"] == content_type


async def test_hostile_and_malformed_multipart_bodies_get_clear_problems(stack: Stack) -> None:
    token = stack.token("u-ada")
    text = b"hello\n"
    cases: list[tuple[MultipartBody, int, str, str]] = [
        (MultipartBody([purpose_part("attachment")]), 422, "validation-error", "/file"),
        (MultipartBody([file_part(text, "a.txt")]), 422, "validation-error", "/purpose"),
        (
            MultipartBody(
                [purpose_part("attachment"), file_part(text, "a.txt"), file_part(text, "b.txt")]
            ),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody(
                [purpose_part("attachment"), purpose_part("avatar"), file_part(text, "a.txt")]
            ),
            422,
            "validation-error",
            "/purpose",
        ),
        (
            MultipartBody([purpose_part("selfie"), file_part(text, "a.txt")]),
            422,
            "validation-error",
            "/purpose",
        ),
        (
            MultipartBody(
                [
                    purpose_part("attachment"),
                    Part("extra", b"x", content_type=None),
                    file_part(text, "a.txt"),
                ]
            ),
            422,
            "validation-error",
            "/extra",
        ),
        (
            MultipartBody([purpose_part("attachment"), file_part(text, "../../etc/passwd")]),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody([purpose_part("attachment"), file_part(text, "..\\\\win.ini")]),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody([purpose_part("attachment"), file_part(text, "x" * 300 + ".txt")]),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody(
                [
                    purpose_part("attachment"),
                    Part(
                        "file",
                        text,
                        raw_disposition=b"form-data; name=\"file\"; filename*=UTF-8''a%07b.txt",
                    ),
                ]
            ),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody(
                [
                    purpose_part("attachment"),
                    Part(
                        "file",
                        text,
                        raw_disposition=b"form-data; name=\"file\"; filename*=UTF-8''a%E2%80%AEgnp.exe",
                    ),
                ]
            ),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody([purpose_part("attachment"), file_part(text, "a\x07b.txt")]),
            400,
            "malformed-multipart",
            "",
        ),
        (
            MultipartBody([purpose_part("attachment"), Part("file", text, filename=None)]),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody(
                [
                    purpose_part("attachment"),
                    Part(
                        "file",
                        text,
                        raw_disposition=b'form-data; name="file"; filename="caf\xe9.txt"',
                    ),
                ]
            ),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody(
                [
                    purpose_part("attachment"),
                    Part(
                        "file",
                        b"aGVsbG8K",
                        filename="a.txt",
                        headers={"Content-Transfer-Encoding": "base64"},
                    ),
                ]
            ),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody(
                [
                    purpose_part("attachment"),
                    Part("file", text, filename="a.txt", headers={"Content-Encoding": "gzip"}),
                ]
            ),
            422,
            "validation-error",
            "/file",
        ),
        (
            MultipartBody([purpose_part("attachment"), file_part(text, "a.txt")], close=False),
            400,
            "malformed-multipart",
            "",
        ),
        (
            MultipartBody([purpose_part("attachment"), file_part(text, "y" * 20000 + ".txt")]),
            400,
            "malformed-multipart",
            "",
        ),
    ]
    for body, status, slug, location in cases:
        reply = await stack.api.send(body, token=token)
        assert reply.status == status, (status, slug, location, reply.body[:300])
        assert problem_type(reply) == slug, reply.body[:300]
        if location:
            assert location in [e["location"] for e in reply.json()["errors"]], reply.body[:300]
    not_multipart = await stack.api.request(
        "POST", "/api/v1/files", token=token, data=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert not_multipart.status == 415 and problem_type(not_multipart) == "multipart-required"
    no_token = await stack.direct.send(
        MultipartBody([purpose_part("attachment"), file_part(text, "a.txt")]), token=None
    )
    assert no_token.status == 401
    await nothing_stored(stack)


async def test_purpose_after_the_file_and_a_part_without_content_type_are_fine(
    stack: Stack,
) -> None:
    token = stack.token("u-ada")
    later = await stack.api.send(
        MultipartBody([file_part(png(), "me.png", None), purpose_part("avatar")]), token=token
    )
    assert later.status == 201, later.body
    assert later.json()["purpose"] == "avatar"
    named = await stack.api.send(
        MultipartBody(
            [
                purpose_part("attachment"),
                Part(
                    "file",
                    b"hi\n",
                    raw_disposition=b"form-data; name=\"file\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt",
                ),
            ]
        ),
        token=token,
    )
    assert named.status == 201, named.body
    assert named.json()["filename"] == "Grüße.txt"
    # Checked after the stream when the purpose comes last: a PDF is no avatar.
    refused = await stack.api.send(
        MultipartBody([file_part(PDF, "cv.pdf"), purpose_part("avatar")]), token=token
    )
    assert refused.status == 415
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}
    assert len(await stored_objects(stack.deps)) == 2


async def test_a_client_that_disconnects_mid_upload_leaves_nothing(stack: Stack) -> None:
    token = stack.token("u-ada")
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.service.port)
    body = MultipartBody([purpose_part("attachment"), file_part(PDF + b"x" * 2_000_000, "a.pdf")])
    payload = await body.read()
    writer.write(
        (
            "POST /api/v1/files HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {body.content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        + payload[: len(payload) // 2]
    )
    await writer.drain()

    async def recorded() -> bool:
        return await stack.deps.records.collection.count_documents({}) == 1

    await eventually(recorded)
    writer.transport.abort()

    async def cleaned() -> bool:
        return await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}

    await eventually(cleaned)
    await nothing_stored(stack)
