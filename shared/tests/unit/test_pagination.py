"""Cursors round-trip, and anything else a client sends is a 400 problem."""

import base64

import pytest

from switchyard.pagination import decode_cursor, encode_cursor, page, read_cursor
from switchyard.problems import Problem


def test_a_cursor_round_trips_its_position():
    cursor = encode_cursor({"after": "dlv_0001", "seq": 41})
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor, after=str, seq=int) == {"after": "dlv_0001", "seq": 41}


def test_no_cursor_is_the_first_page():
    assert read_cursor(None, after=str) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        encode_cursor({"after": 5}),  # wrong type
        encode_cursor({"before": "x"}),  # wrong field
        encode_cursor({"after": "x", "extra": "y"}),  # more than asked for
        base64.urlsafe_b64encode(b'{"after": true}').decode(),
    ],
)
def test_a_foreign_or_tampered_cursor_is_a_400_problem(cursor):
    with pytest.raises(Problem) as caught:
        decode_cursor(cursor, after=str)
    assert caught.value.status == 400
    assert caught.value.slug == "invalid-cursor"


@pytest.mark.parametrize("seq", [2**63, -(2**63) - 1, 10**30])
def test_an_integer_the_store_cannot_hold_is_a_400_not_a_500(seq):
    cursor = base64.urlsafe_b64encode(f'{{"seq": {seq}}}'.encode()).decode()
    with pytest.raises(Problem) as caught:
        decode_cursor(cursor, seq=int)
    assert caught.value.status == 400
    assert decode_cursor(encode_cursor({"seq": 2**63 - 1}), seq=int) == {"seq": 2**63 - 1}


def test_page_carries_the_next_cursor_only_when_there_is_more():
    assert page([1, 2], None) == {"items": [1, 2], "next_cursor": None}
    body = page([1, 2], {"after": "b"})
    assert decode_cursor(body["next_cursor"], after=str) == {"after": "b"}
