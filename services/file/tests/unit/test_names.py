"""File names: kept as sent when harmless, refused with a reason otherwise; downloads
carry them per RFC 6266."""

from __future__ import annotations

import pytest

from file_svc.domain.names import BadFilename, clean_filename, content_disposition


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("report.pdf", "report.pdf"),
        ("  a b.txt ", "a b.txt"),
        ("Cafe\u0301.txt", "Café.txt"),
        ("日本.png", "日本.png"),
    ],
)
def test_accepted(raw: str, clean: str) -> None:
    assert clean_filename(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "../x",
        "a/b.txt",
        "C:\\x\\y.txt",
        ".",
        "..",
        "a\x00b",
        "a\nb",
        "x" * 256,
        "a\u202egnp.exe",
        "bad\udcff.txt",
        "bad\ufffd.txt",
    ],
)
def test_refused(raw: str | None) -> None:
    with pytest.raises(BadFilename):
        clean_filename(raw)


def test_content_disposition_has_an_ascii_fallback_and_the_exact_name() -> None:
    assert content_disposition("report.pdf", inline=False) == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )
    assert content_disposition('naïve "quote";%.txt', inline=True) == (
        'inline; filename="naive _quote___.txt"; '
        "filename*=UTF-8''na%C3%AFve%20%22quote%22%3B%25.txt"
    )
    assert content_disposition("日本", inline=False).startswith('attachment; filename="download";')


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("a／b.txt", "a_b.txt"),
        ("℀.txt", "a_c.txt"),
        ("x＂；y.txt", "x__y.txt"),
        ("a＼b.txt", "a_b.txt"),
    ],
)
def test_the_fallback_never_holds_separators_that_compatibility_forms_decompose_to(
    name: str, fallback: str
) -> None:
    header = content_disposition(clean_filename(name), inline=False)
    assert header.split("; ")[1] == f'filename="{fallback}"'
