"""Sniffing: the content decides; names and declared types may only agree with it."""

from __future__ import annotations

import io
import zipfile

import pytest

from file_svc.domain.errors import UnsupportedType
from file_svc.domain.types import (
    CSV,
    DOCX,
    JPEG,
    PDF,
    PNG,
    TEXT,
    XLSX,
    TextStream,
    check_claims,
    check_purpose,
    sniff,
)

from ..support import PDF as PDF_BYTES
from ..support import jpeg_with_gps, png, windows_executable


def office(part: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(part, "<x/>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (png(), "a.png", PNG),
        (jpeg_with_gps(), "a.jpg", JPEG),
        (PDF_BYTES, "a.pdf", PDF),
        (office("word/document.xml"), "a.docx", DOCX),
        (office("xl/workbook.xml"), "a.xlsx", XLSX),
        (b"plain words\n", "a.txt", TEXT),
        (b"a,b\n1,2\n", "a.csv", CSV),
        (b"no extension\n", "README", TEXT),
        ("é".encode() * 5000, "long.txt", TEXT),
    ],
)
def test_sniffed(data: bytes, name: str, kind: object) -> None:
    assert sniff(data[:8192], name, complete=len(data) <= 8192) == kind


def test_a_multibyte_character_cut_by_the_window_is_still_text() -> None:
    data = ("a" + "€" * 4000).encode()[:8192]
    assert sniff(data, "a.txt", complete=False) == TEXT
    with pytest.raises(UnsupportedType):
        sniff(data, "a.txt", complete=True)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (windows_executable(), "cat.png"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 60, "run"),
        (office("a.txt"), "a.zip"),  # a plain zip
        (b"text\x00with nul", "a.txt"),
        (b"<svg/>", "a.svg"),
        (b"", "a.txt"),
    ],
)
def test_refused(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedType):
        sniff(data, name, complete=True)


def test_claims_must_agree_with_the_content() -> None:
    check_claims(PNG, "a.PNG", "image/png")
    check_claims(PNG, "a.png", "application/octet-stream")
    check_claims(JPEG, "a.jpeg", "image/pjpeg")
    check_claims(DOCX, "a.docx", "application/zip")
    check_claims(CSV, "a.csv", "text/plain; charset=utf-8")
    for name, declared in (("a.pdf", None), ("a.png", "application/pdf"), ("a.jpg", "image/png")):
        with pytest.raises(UnsupportedType):
            check_claims(PNG, name, declared)


def test_purposes() -> None:
    check_purpose(PNG, "avatar")
    check_purpose(PDF, "attachment")
    with pytest.raises(UnsupportedType):
        check_purpose(PDF, "avatar")
    with pytest.raises(UnsupportedType):
        check_purpose(TEXT, "cover")


def test_a_text_stream_is_checked_to_its_last_byte() -> None:
    text = "ü".encode()
    stream = TextStream()
    stream.feed(b"plain " + text[:1])  # a character cut between two chunks
    stream.feed(text[1:] + b" more\n", final=False)
    stream.feed(b"", final=True)
    for chunks in ([b"ok", b"\x00"], [b"ok", b"\xe9t\xe9"], [b"ok", b"\x07"], [b"ok\xc3"]):
        stream = TextStream()
        with pytest.raises(UnsupportedType):
            for chunk in chunks:
                stream.feed(chunk)
            stream.feed(b"", final=True)
