"""Images are stored upright and without metadata (GPS never leaks), bombs are refused,
thumbnails come in three sizes and are kept. Checked by reading what storage holds."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from file_svc.domain.files import blob_key, thumbnail_key

from ..conftest import Stack, leftovers, stored_objects
from ..support import GPS_IFD, jpeg_with_gps, png, png_claiming

pytestmark = pytest.mark.integration


async def stored_bytes(stack: Stack, key: str) -> bytes:
    return b"".join([chunk async for chunk in stack.deps.storage.read(key)])


async def test_exif_and_gps_are_stripped_and_the_orientation_applied(stack: Stack) -> None:
    token = stack.token("u-ada")
    original = jpeg_with_gps(64, 32, orientation=6)
    with Image.open(io.BytesIO(original)) as sent:  # the test image really carries them
        assert sent.getexif().get_ifd(GPS_IFD) and sent.getexif()[0x0112] == 6
        assert sent.info.get("comment") == b"shot at home"

    created = await stack.api.upload(original, "holiday.jpg", token=token, purpose="portfolio")
    assert created.status == 201, created.body
    meta = created.json()
    stored = await stored_bytes(stack, blob_key(meta["id"]))
    assert b"Spy Camera" not in stored and b"secret description" not in stored
    assert b"shot at home" not in stored and b"Exif" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG"
        assert not image.getexif(), dict(image.getexif())
        assert "exif" not in image.info and "comment" not in image.info
        assert image.size == (32, 64)  # turned upright: 64×32 with orientation 6
        # Orientation 6 turns the picture 90° clockwise: the red left half ends on top.
        top, bottom = image.getpixel((16, 8)), image.getpixel((16, 56))
        assert top[0] > 200 and top[2] < 60, top
        assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert meta["size"] == len(stored)
    downloaded = await stack.api.content(meta["id"], token=token)
    assert downloaded.body == stored
    assert downloaded.headers["Content-Type"] == "image/jpeg"


async def test_png_text_chunks_are_stripped(stack: Stack) -> None:
    token = stack.token("u-ada")
    created = await stack.api.upload(
        png(20, 10, text={"Location": "52.52,13.40", "Author": "Ada"}), "map.png", token=token
    )
    assert created.status == 201
    stored = await stored_bytes(stack, blob_key(created.json()["id"]))
    assert b"52.52" not in stored and b"tEXt" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert image.size == (20, 10) and not image.text  # type: ignore[attr-defined]


async def test_decompression_bombs_are_refused(start_stack: object) -> None:
    stack: Stack = await start_stack(image_max_pixels=1_000_000)  # type: ignore[operator]
    token = stack.token("u-ada")
    claimed = png_claiming(60_000, 60_000)  # 3.6 billion pixels in a few hundred bytes
    assert len(claimed) < 1000
    bomb = await stack.api.upload(claimed, "bomb.png", token=token, purpose="avatar")
    assert bomb.status == 422 and bomb.json()["type"].endswith("/image-too-large")
    real = await stack.api.upload(png(2000, 1000), "big.png", token=token, purpose="avatar")
    assert real.status == 422 and "2000×1000" in real.json()["detail"]
    truncated = await stack.api.upload(png(50, 50)[:60], "cut.png", token=token)
    assert truncated.status == 422 and truncated.json()["type"].endswith("/unreadable-image")
    assert await stored_objects(stack.deps) == set()
    assert await leftovers(stack.deps) == {"temporaries": [], "scratch": [], "uploading": 0}
    assert stack.deps.metrics.value("file_uploads_total", outcome="bomb") == 2
    ok = await stack.api.upload(png(1000, 1000), "fits.png", token=token, purpose="avatar")
    assert ok.status == 201


async def test_thumbnails_of_each_size_are_made_once_and_kept(stack: Stack) -> None:
    token = stack.token("u-ada")
    created = await stack.api.upload(png(1600, 800, color="green"), "wide.png", token=token)
    file_id = created.json()["id"]
    for size, expected in ((64, (64, 32)), (256, (256, 128)), (1024, (1024, 512))):
        path = f"/api/v1/files/{file_id}/thumbnail?size={size}"
        first = await stack.api.request("GET", path, token=token)
        assert first.status == 200, first.body
        assert first.headers["Content-Type"] == "image/webp"
        with Image.open(io.BytesIO(first.body)) as thumb:
            assert thumb.format == "WEBP" and thumb.size == expected
        assert thumbnail_key(file_id, size) in await stored_objects(stack.deps)
        again = await stack.api.request("GET", path, token=token)
        assert again.body == first.body
        etag = first.headers["ETag"]
        unchanged = await stack.api.request(
            "GET", path, token=token, headers={"If-None-Match": etag}
        )
        assert unchanged.status == 304
    assert stack.deps.metrics.value("file_thumbnails_total", cache="miss") == 3
    assert stack.deps.metrics.value("file_thumbnails_total", cache="hit") == 3

    small = await stack.api.upload(png(40, 30), "small.png", token=token)
    thumb = await stack.api.request(
        "GET", f"/api/v1/files/{small.json()['id']}/thumbnail?size=1024", token=token
    )
    with Image.open(io.BytesIO(thumb.body)) as image:
        assert image.size == (40, 30)  # never enlarged
    wrong = await stack.api.request(
        "GET", f"/api/v1/files/{file_id}/thumbnail?size=100", token=token
    )
    assert wrong.status == 422
    text = await stack.api.upload(b"hello\n", "a.txt", token=token)
    none = await stack.api.request(
        "GET", f"/api/v1/files/{text.json()['id']}/thumbnail?size=64", token=token
    )
    assert none.status == 404 and none.json()["type"].endswith("/no-thumbnail")
