"""The adversarial review (issue 15): each test is one way to break the service, sent the
way an attacker would — raw sockets for headers a polite client never writes, hand-made
multipart and compressed bodies, Pillow images with broken metadata or many frames,
links spelled differently from how they were signed, chat events out of order."""

from __future__ import annotations

import asyncio
import gzip
import io
import struct
import time
import zlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from file_svc.domain.files import blob_key
from switchyard.envelope import new_envelope, utcnow
from switchyard.events.chat import MessageDeleted, MessageSent
from switchyard.testing import eventually

from ..conftest import Stack, leftovers, stored_objects
from ..support import MultipartBody, file_part, generated, generated_bytes, png, purpose_part

pytestmark = pytest.mark.integration

SIZE = 5000


async def raw_request(url: str, request: bytes, *, timeout: float = 20.0) -> tuple[int, bytes]:
    """Send ``request`` as bytes on a new connection; the status and the whole answer."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not chunk:
                break
            answer += chunk
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


def get_with(path: str, host: str, token: str, extra: bytes) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n".encode()
        + extra
        + b"Connection: close\r\n\r\n"
    )


async def _uploaded(stack: Stack, token: str, size: int = SIZE) -> str:
    reply = await stack.api.upload(generated(size), "report.pdf", token=token)
    assert reply.status == 201, reply.body
    return str(reply.json()["id"])


# -- 1. Range digits are ASCII digits ---------------------------------------------------------


async def test_range_with_unicode_digits_is_ignored_not_parsed_or_a_500(stack: Stack) -> None:
    """``int()`` reads "١" (Arabic-Indic one) as 1 and chokes on "²" (a digit to
    ``str.isdigit``): neither may select bytes or crash the download."""
    token = stack.token("u-ada")
    file_id = await _uploaded(stack, token)
    data = generated_bytes(SIZE)
    for url in (stack.service.url, stack.gateway.url):
        host = urlsplit(url).netloc
        for spec in ("bytes=١-".encode(), "bytes=0-١٠".encode(), "bytes=²-".encode()):
            status, answer = await raw_request(
                url,
                get_with(
                    f"/api/v1/files/{file_id}/content", host, token, b"Range: " + spec + b"\r\n"
                ),
            )
            assert status == 200, (url, spec, answer[:300])
            assert answer.endswith(data), (url, spec)  # the whole file: the range is ignored
        # Range twice: invalid (one field); the first was served as 206 before.
        status, answer = await raw_request(
            url,
            get_with(
                f"/api/v1/files/{file_id}/content",
                host,
                token,
                b"Range: bytes=0-9\r\nRange: bytes=10-19\r\n",
            ),
        )
        assert status == 200 and answer.endswith(data), (url, answer[:300])


# -- 2. Content-Disposition -----------------------------------------------------------------


async def test_content_disposition_fallback_is_plain_ascii_without_paths_or_quotes(
    stack: Stack,
) -> None:
    """Compatibility forms of ``/``, ``"`` and ``;`` (fullwidth, "℀" = "a/c") must not come
    back as ASCII separators in the ``filename=`` fallback; the exact name is in
    ``filename*``."""
    token = stack.token("u-ada")
    for name, fallback in (
        ("отчёт.txt", "download.txt"),
        ("a／b.txt", "a_b.txt"),
        ("℀.txt", "a_c.txt"),
        ("x＂; filename=evil.exe.txt", "x__ filename=evil.exe.txt"),
    ):
        created = await stack.api.upload(b"hello\n", name, token=token)
        assert created.status == 201, (name, created.body)
        reply = await stack.api.content(created.json()["id"], token=token)
        header = reply.headers["Content-Disposition"]
        kind, ascii_part, extended = header.split("; ")
        assert kind == "attachment", header
        assert ascii_part == f'filename="{fallback}"', (name, header)
        assert extended.startswith("filename*=UTF-8''"), header
        assert header.isascii() and "\r" not in header and "\n" not in header
    # CR/LF cannot reach a header at all: such a name is refused at upload.
    body = MultipartBody([purpose_part("attachment"), file_part(b"hi\n", "a.txt", "text/plain")])
    body.parts[1].filename = None
    body.parts[
        1
    ].raw_disposition = b"form-data; name=\"file\"; filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x.txt"
    refused = await stack.api.send(body, token=token)
    assert refused.status == 422, refused.body


# -- 3. one spelling per signed link --------------------------------------------------------


async def test_a_signed_link_is_accepted_only_as_it_was_issued(stack: Stack) -> None:
    ada = stack.token("u-ada")
    file_id = await _uploaded(stack, ada)
    shared = await stack.api.request(
        "POST", f"/api/v1/files/{file_id}/share", token=ada, json={"expires_in": 3600}
    )
    url = shared.json()["url"]
    assert (await stack.api.request("GET", url)).status == 200
    query = parse_qs(urlsplit(url).query)
    expires, signature = query["expires"][0], query["signature"][0]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last of 43 characters carries 4 bits of the MAC and 2 unused ones.
    low_bits = signature[:-1] + alphabet[alphabet.index(signature[-1]) ^ 1]
    base = f"/api/v1/files/{file_id}/content"
    for spelling in (
        f"expires=0{expires}&signature={signature}",  # leading zero: same number
        f"expires={expires}&signature={signature}%3D",  # base64 padding
        f"expires={expires}&signature={low_bits}",  # unused bits set
        f"expires={expires}&signature={signature}&signature=AAAA",  # repeated parameter
        f"expires={expires}&expires=1&signature={signature}",
    ):
        for api in (stack.api, stack.direct):
            reply = await api.request("GET", f"{base}?{spelling}")
            assert reply.status == 403, (spelling, reply.status)
            assert reply.json()["type"].endswith("/invalid-link")


# -- 4. ids are checked whole ----------------------------------------------------------------


async def test_a_file_id_with_a_trailing_newline_is_not_an_id(stack: Stack) -> None:
    ada = stack.token("u-ada")
    file_id = await _uploaded(stack, ada)
    for path in (f"/api/v1/files/{file_id}%0A/content", f"/api/v1/files/{file_id}%0A"):
        reply = await stack.direct.request("GET", path, token=ada)
        assert reply.status == 404, (path, reply.status)
    deleted = await stack.direct.request("DELETE", f"/api/v1/files/{file_id}%0A", token=ada)
    assert deleted.status == 404
    assert (await stack.api.content(file_id, token=ada)).status == 200


# -- 5. text is text all the way ------------------------------------------------------------


async def test_text_that_turns_binary_after_the_sniffed_window_is_refused(stack: Stack) -> None:
    ada = stack.token("u-ada")
    # 300,000 bytes of text: more than is sniffed, more than one chunk of the reader
    head = b"just some harmless notes\n" * 12_000
    for tail in (b"\x00\x01\x02MZ\x90\x00binary", b"caf\xe9 is not UTF-8\n", b"\x1b[2J\x07"):
        reply = await stack.api.upload(head + tail, "notes.txt", token=ada)
        assert reply.status == 415, (tail, reply.status, reply.body[:200])
        assert reply.json()["type"].endswith("/unsupported-file-type")
    # A multi-byte character cut between two chunks is still text.
    text = ("x" * 8191 + "é" + "ü" * 100_000).encode()

    async def chunks() -> Any:
        for at in range(0, len(text), 8192):
            yield text[at : at + 8192]

    ok = await stack.api.upload(chunks, "notes.txt", token=ada)
    assert ok.status == 201, ok.body
    assert (await stack.api.content(ok.json()["id"], token=ada)).body == text
    assert await stored_objects(stack.deps) == {blob_key(ok.json()["id"])}


# -- 6. every frame counts -------------------------------------------------------------------


def apng(width: int, height: int, frames: int, *, hide: bool = False) -> bytes:
    """An animated PNG; ``hide``: with a 9 KB text chunk before its ``acTL`` chunk, so
    the first 8 KiB (what the type is sniffed from) look like a still PNG."""
    images = [Image.new("RGB", (width, height), (i * 7 % 256, 80, 160)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "PNG", save_all=True, append_images=images[1:], duration=50, loop=0)
    data = out.getvalue()
    if not hide:
        return data
    body = b"Comment\x00" + b"x" * 9000
    text = struct.pack(">I", len(body)) + b"tEXt" + body
    text += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    after_ihdr = 8 + 8 + 13 + 4
    return data[:after_ihdr] + text + data[after_ihdr:]


async def test_animated_png_frames_count_against_the_pixel_limit(
    start_stack: Any,
) -> None:
    """An APNG is refused by its signature (415); one whose ``acTL`` chunk is pushed past
    the sniffed window is still many frames: they count against the pixel limit (422),
    and within the limit it is refused like any APNG, never stored as its first frame."""
    stack: Stack = await start_stack(image_max_pixels=1_000_000)
    ada = stack.token("u-ada")
    plain = await stack.api.upload(apng(100, 100, 5), "anim.png", token=ada, purpose="portfolio")
    assert plain.status == 415, plain.body
    bomb = apng(400, 400, 40, hide=True)  # 6.4 million pixels in 40 frames
    with Image.open(io.BytesIO(bomb)) as opened:
        assert opened.format == "PNG" and opened.n_frames == 40
    refused = await stack.api.upload(bomb, "anim.png", token=ada, purpose="portfolio")
    assert refused.status == 422, refused.body
    assert refused.json()["type"].endswith("/image-too-large")
    small = apng(100, 100, 5, hide=True)  # 50,000 pixels
    hidden = await stack.api.upload(small, "anim.png", token=ada, purpose="portfolio")
    assert hidden.status == 415, hidden.body
    assert hidden.json()["type"].endswith("/unsupported-file-type")
    assert await stored_objects(stack.deps) == set()


# -- 7. broken EXIF ---------------------------------------------------------------------------


def jpeg_with_broken_exif(width: int = 64, height: int = 32) -> bytes:
    """A JPEG whose EXIF turns it (orientation 6) and also holds an ImageDescription of
    the wrong type (a rational where text belongs), which Pillow cannot write back."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    data = out.getvalue()
    entries = [
        struct.pack("<HHI", 0x010E, 5, 1) + struct.pack("<I", 8 + 2 + 2 * 12 + 4),
        struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<HH", 6, 0),
    ]
    tiff = (
        b"II\x2a\x00\x08\x00\x00\x00"
        + struct.pack("<H", len(entries))
        + b"".join(entries)
        + b"\x00\x00\x00\x00"
        + struct.pack("<II", 1, 0)  # a rational with a zero denominator
    )
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment + data[2:]


def exif_with_negative_offset() -> bytes:
    """EXIF whose sub-IFD pointer points before the start of the block."""
    image = Image.new("RGB", (40, 20), "green")
    out = io.BytesIO()
    image.save(out, "JPEG")
    data = out.getvalue()
    tiff = (
        b"II\x2a\x00\x08\x00\x00\x00"
        + struct.pack("<H", 2)
        + struct.pack("<HHI", 0x0112, 3, 1)
        + struct.pack("<HH", 6, 0)
        + struct.pack("<HHI", 0x8769, 4, 1)
        + struct.pack("<i", -40)
        + b"\x00\x00\x00\x00"
    )
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment + data[2:]


async def test_an_image_with_broken_exif_is_kept_without_exif(stack: Stack) -> None:
    ada = stack.token("u-ada")
    for name, data in (
        ("turned.jpg", jpeg_with_broken_exif()),
        ("neg.jpg", exif_with_negative_offset()),
    ):
        reply = await stack.api.upload(data, name, token=ada, purpose="avatar")
        assert reply.status == 201, (name, reply.status, reply.body[:300])
        stored = (await stack.api.content(reply.json()["id"], token=ada)).body
        with Image.open(io.BytesIO(stored)) as image:
            assert image.format == "JPEG"
            assert not image.getexif() and "exif" not in image.info
            original = Image.open(io.BytesIO(data))
            assert image.size in (original.size, original.size[::-1])


# -- 8. compressed request bodies -------------------------------------------------------------


async def test_compressed_upload_bodies_are_refused_with_415(stack: Stack) -> None:
    """aiohttp inflates ``Content-Encoding: gzip``/``deflate`` request bodies by itself: a
    100 KiB body could become gigabytes. The file service takes identity bodies only."""
    ada = stack.token("u-ada")
    body = MultipartBody([purpose_part("attachment"), file_part(b"A" * 50_000, "a.txt")])
    plain = await body.read()
    for encoding, packed in (
        ("gzip", gzip.compress(plain)),
        ("deflate", zlib.compress(plain)),
        ("br", b"\x00"),
    ):
        for api in (stack.direct, stack.api):
            reply = await api.request(
                "POST",
                "/api/v1/files",
                token=ada,
                data=packed,
                headers={"Content-Type": body.content_type, "Content-Encoding": encoding},
            )
            assert reply.status == 415, (encoding, reply.status, reply.body[:300])
            assert reply.json()["type"].endswith("/unsupported-content-encoding")
    # A zip bomb: 64 MiB of zeros in a 64 KiB gzip body, sent on a raw socket.
    bomb_body = MultipartBody(
        [purpose_part("attachment"), file_part(b"\x00" * (64 * 1024 * 1024), "z.pdf")]
    )
    bomb = gzip.compress(await bomb_body.read(), compresslevel=9)
    host = urlsplit(stack.service.url).netloc
    request = (
        f"POST /api/v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ada}\r\n"
        f"Content-Type: {bomb_body.content_type}\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(bomb)}\r\nConnection: close\r\n\r\n"
    ).encode() + bomb
    status, answer = await raw_request(stack.service.url, request)
    assert status == 415, answer[:300]
    assert b"Accept-Encoding: identity" in answer
    assert await stored_objects(stack.deps) == set()
    assert (await stack.deps.records.collection.count_documents({})) == 0


# -- 9. deleted messages stay deleted ---------------------------------------------------------


def _sent(message_id: str, file_id: str) -> Any:
    return new_envelope(
        MessageSent(
            message_id=message_id,
            conversation_id="c1",
            seq=1,
            sender_id="u-ada",
            recipient_ids=["u-grace"],
            offline_recipient_ids=[],
            preview="look",
            attachment_ids=[file_id],
            sent_at=utcnow(),
        ),
        service="chat",
    )


def _deleted(message_id: str) -> Any:
    return new_envelope(
        MessageDeleted(
            message_id=message_id,
            conversation_id="c1",
            seq=1,
            sender_id="u-ada",
            deleted_at=utcnow(),
        ),
        service="chat",
    )


async def test_a_deleted_message_grants_nothing_even_when_its_sent_event_comes_late(
    stack: Stack,
    publish,  # type: ignore[no-untyped-def]
) -> None:
    """Retry tiers and redeliveries reorder events: ``chat.message.deleted`` may be handled
    before the ``chat.message.sent`` it undoes. The deletion is remembered (a tombstone),
    so the late ``sent`` grants nothing."""
    ada, grace = stack.token("u-ada"), stack.token("u-grace")
    secret = (await stack.api.upload(png(50, 50), "secret.png", token=ada)).json()["id"]
    marker = (await stack.api.upload(png(20, 20), "marker.png", token=ada)).json()["id"]
    inbox = stack.deps.records.collection.database["inbox"]

    def handled(count: int) -> Any:
        async def check() -> bool:
            return await inbox.count_documents({"status": "done"}) >= count

        return check

    await publish(_deleted("m-late"))
    await eventually(handled(1))  # the deletion is handled first, for certain
    await publish(_sent("m-late", secret))
    await publish(_sent("m-marker", marker))

    async def marker_granted() -> bool:
        return (await stack.api.content(marker, token=grace)).status == 200

    await eventually(marker_granted)
    await eventually(handled(3))
    assert (await stack.api.content(secret, token=grace)).status == 404
    assert (await stack.api.content(secret, token=ada)).status == 200
    # The grant documents of the deleted message are gone too, whatever the order.
    grants = stack.deps.grants.collection
    assert await grants.count_documents({"message_id": "m-late"}) == 0


# -- further attacks: multipart framing -------------------------------------------------------


def _multipart(parts: list[tuple[bytes, bytes]], boundary: str = "BND") -> bytes:
    out = b""
    for head, data in parts:
        out += b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


async def test_multipart_framing_tricks_are_400_never_500_or_stored(stack: Stack) -> None:
    ada = stack.token("u-ada")
    host = urlsplit(stack.service.url).netloc
    purpose = (b'Content-Disposition: form-data; name="purpose"', b"attachment")
    text = (b'Content-Disposition: form-data; name="file"; filename="a.txt"', b"hello\n")
    for name, body, content_type in (
        # aiohttp reads a leading _charset_ part itself: too long was a RuntimeError (500)
        (
            "long _charset_",
            _multipart(
                [(b'Content-Disposition: form-data; name="_charset_"', b"x" * 40), purpose, text]
            ),
            "multipart/form-data; boundary=BND",
        ),
        # an empty boundary makes any line starting with "--" in the file a delimiter
        ("empty boundary", _multipart([purpose, text], ""), "multipart/form-data; boundary="),
        (
            "two boundaries",
            _multipart([purpose, text]),
            "multipart/form-data; boundary=BND; boundary=X",
        ),
        # two Content-Disposition headers: aiohttp reads the first, a scanner may read the other
        (
            "repeated part header",
            _multipart(
                [
                    purpose,
                    (
                        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                        b'Content-Disposition: form-data; name="file"; filename="a.exe"',
                        b"hello\n",
                    ),
                ]
            ),
            "multipart/form-data; boundary=BND",
        ),
    ):
        request = (
            f"POST /api/v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ada}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body
        status, answer = await raw_request(stack.service.url, request)
        assert status == 400, (name, answer[:400])
        assert b"/malformed-multipart" in answer, name
    assert await stored_objects(stack.deps) == set()
    assert await stack.deps.records.collection.count_documents({}) == 0


# -- further attacks: a stalled upload --------------------------------------------------------


async def test_an_upload_that_stalls_is_ended_with_408_and_leaves_nothing(
    start_stack: Any,
) -> None:
    """A slowloris: the body starts, then nothing more comes. Without an idle limit the
    upload (its record, temporary object and socket) stayed until the client gave up."""
    stack: Stack = await start_stack(upload_idle=1.0)
    ada = stack.token("u-ada")
    host = urlsplit(stack.service.url).netloc
    head = (
        b'--BND\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nattachment\r\n'
        b'--BND\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n" + generated_bytes(300_000)
    )
    parts = urlsplit(stack.service.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            (
                f"POST /api/v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ada}\r\n"
                "Content-Type: multipart/form-data; boundary=BND\r\n"
                "Content-Length: 10000000\r\n\r\n"
            ).encode()
            + head
        )
        await writer.drain()
        started = time.monotonic()

        async def stored_a_part() -> bool:
            return (await stack.deps.records.collection.count_documents({})) == 1

        await eventually(stored_a_part)
        answer = await asyncio.wait_for(reader.read(65536), 30)
        waited = time.monotonic() - started
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"/upload-timeout" in answer
    assert waited < 15, waited
    assert await stored_objects(stack.deps) == set()
    left = await leftovers(stack.deps)
    assert left == {"temporaries": [], "scratch": [], "uploading": 0}, left


# -- further attacks: one Idempotency-Key, many uploads at once --------------------------------


async def test_many_uploads_under_one_idempotency_key_store_one_file(stack: Stack) -> None:
    ada = stack.token("u-ada")
    headers = {"Idempotency-Key": "burst-1"}

    async def send(data: bytes) -> Any:
        body = MultipartBody([purpose_part("attachment"), file_part(data, "same.pdf")])
        return await stack.api.send(body, token=ada, headers=headers)

    same = generated_bytes(200_000)
    replies = await asyncio.gather(*(send(same) for _ in range(8)))
    created = [r for r in replies if r.status == 201]
    assert created and all(r.status in (201, 409) for r in replies), [r.status for r in replies]
    assert len({r.json()["id"] for r in created}) == 1
    assert sum(1 for r in created if "Idempotent-Replayed" not in r.headers) == 1
    file_id = created[0].json()["id"]
    assert await stored_objects(stack.deps) == {blob_key(file_id)}
    other = await send(generated_bytes(200_000, seed=9))
    assert other.status == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    assert await stack.deps.records.collection.count_documents({}) == 1


# -- further attacks: content that would run if a browser rendered it --------------------------


async def test_script_carriers_are_never_served_as_something_a_browser_runs(stack: Stack) -> None:
    ada = stack.token("u-ada")
    script = b"<html><body><script>alert(document.cookie)</script></body></html>\n"
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>\n"
    gif = io.BytesIO()
    Image.new("P", (16, 16)).save(gif, "GIF")
    for name, data, purpose, status in (
        ("page.html", script, "attachment", 415),  # text, but not as .html
        ("logo.svg", svg, "attachment", 415),
        ("logo.png", svg, "avatar", 415),  # text named as an image
        ("page.txt", script, "attachment", 201),  # stored as text/plain
        ("paper.pdf", b"%PDF-1.4\n" + script, "attachment", 201),  # a PDF/HTML polyglot
        ("anim.gif", gif.getvalue() + script, "avatar", 201),  # GIF + trailing HTML
    ):
        reply = await stack.api.upload(data, name, token=ada, purpose=purpose)
        assert reply.status == status, (name, reply.status, reply.body[:200])
        if status != 201:
            continue
        served = await stack.api.content(reply.json()["id"], token=ada)
        headers = served.headers
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert "sandbox" in headers["Content-Security-Policy"], name
        content_type = headers["Content-Type"].split(";")[0]
        assert content_type in ("text/plain", "application/pdf", "image/gif"), name
        if content_type == "image/gif":
            assert b"<script>" not in served.body  # re-encoded from its pixels
            assert headers["Content-Disposition"].startswith("inline;")
        else:
            assert headers["Content-Disposition"].startswith("attachment;"), name


# -- further attacks: a burst of requests for a thumbnail not made yet --------------------------


async def _thumbnail_misses(stack: Stack) -> float:
    text = (await stack.direct.request("GET", "/metrics")).body.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("file_thumbnails_total{") and 'cache="miss"' in line
    )


async def test_a_burst_of_thumbnail_requests_makes_the_thumbnail_once(stack: Stack) -> None:
    """Each miss downloaded the whole image to local scratch and decoded it: N requests
    (a link holder needs no account) were N downloads and N decodes of the same image."""
    ada = stack.token("u-ada")
    created = await stack.api.upload(png(1600, 1200), "big.png", token=ada)
    file_id = created.json()["id"]
    before = await _thumbnail_misses(stack)
    path = f"/api/v1/files/{file_id}/thumbnail?size=1024"
    replies = await asyncio.gather(*(stack.api.request("GET", path, token=ada) for _ in range(12)))
    assert [r.status for r in replies] == [200] * 12
    assert len({r.body for r in replies}) == 1
    assert await _thumbnail_misses(stack) - before == 1


# -- further attacks: an account deleted while its upload finishes -----------------------------


async def test_an_upload_finishing_while_its_account_is_deleted_does_not_survive(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload checks the directory, then becomes ``ready``; ``auth.user.deleted``
    marks the directory, then deletes the account's *ready* files. Handled between the
    two steps of the upload, the deletion skipped it and the upload's check had passed:
    a file of a deleted account lived on. The interleaving is forced by running the real
    handler of the event inside the upload's next step (the quota reservation)."""
    from file_svc.handlers import forget_user
    from switchyard.directory import apply_user_event
    from switchyard.events.auth import UserDeleted

    doomed = stack.token("u-doomed")
    reserve = stack.deps.usage.reserve

    async def deleted_meanwhile(*args: Any, **kwargs: Any) -> bool:
        deleted = UserDeleted(user_id="u-doomed", deleted_at=utcnow())
        await apply_user_event(stack.deps.directory, deleted)  # what handle_user_event does
        await forget_user(deleted.user_id, deleted.deleted_at, deps=stack.deps)
        return await reserve(*args, **kwargs)

    monkeypatch.setattr(stack.deps.usage, "reserve", deleted_meanwhile)
    reply = await stack.api.upload(b"last words\n", "last.txt", token=doomed)
    monkeypatch.undo()
    if reply.status == 201:
        assert (await stack.api.content(reply.json()["id"], token=doomed)).status == 404
    else:
        assert reply.status == 403 and reply.json()["type"].endswith("/account-deleted")
    ready = await stack.deps.records.collection.count_documents(
        {"owner_id": "u-doomed", "status": "ready"}
    )
    assert ready == 0
    await stack.sweep()
    assert await stored_objects(stack.deps) == set()


# -- further attacks: data smuggled in the one metadata block that is kept ---------------------


async def test_only_a_plausible_icc_profile_survives_re_encoding(stack: Stack) -> None:
    """The ICC profile is kept (colour); anything else in its place — 2 MB of HTML in the
    profile's APP2 segments — went through re-encoding untouched."""
    from PIL import ImageCms

    ada = stack.token("u-ada")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    payload = b"<html><script>alert(document.cookie)</script></html>" * 40_000
    for name, profile, kept in (("colour.jpg", srgb, True), ("smuggled.jpg", payload, False)):
        out = io.BytesIO()
        Image.new("RGB", (32, 32), "orange").save(out, "JPEG", icc_profile=profile)
        reply = await stack.api.upload(out.getvalue(), name, token=ada, purpose="avatar")
        assert reply.status == 201, (name, reply.body[:200])
        stored = (await stack.api.content(reply.json()["id"], token=ada)).body
        with Image.open(io.BytesIO(stored)) as image:
            assert (image.info.get("icc_profile") == profile) is kept, name
        assert b"<script>" not in stored
        assert reply.json()["size"] < 100_000
