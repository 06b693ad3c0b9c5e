"""Range headers (RFC 9110 §14): one range served, anything else ignored or 416."""

from __future__ import annotations

import pytest

from file_svc.domain.ranges import ByteRange, Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=10-", ByteRange(10, 999)),
        ("bytes=-1", ByteRange(999, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=990-5000", ByteRange(990, 999)),
        ("Bytes = 5-6", ByteRange(5, 6)),
        ("bytes=0-1,3-4", None),  # several ranges: the whole file
        ("bytes=5-1", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=1", None),
        ("lines=1-2", None),
        ("bytes=99999999999999999999-", None),
        ("bytes=+1-2", None),
    ],
)
def test_parse(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 1000)


def test_content_range() -> None:
    assert ByteRange(10, 19).content_range(100) == "bytes 10-19/100"
    assert ByteRange(10, 19).length == 10


@pytest.mark.parametrize("header", ["bytes=١-", "bytes=0-١٠", "bytes=²-", "bytes=-²", "bytes=0_1-"])
def test_only_ascii_digits_make_a_range(header: str) -> None:
    assert parse_range(header, 1000) is None
