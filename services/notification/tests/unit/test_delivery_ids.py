"""Delivery ids order by creation (they drive pagination) and cursors carry them opaquely."""

from __future__ import annotations

import pytest

from notification_svc.adapters.deliveries import (
    DeliveryIds,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
)


def test_ids_are_strictly_increasing_even_within_one_clock_tick() -> None:
    ids = DeliveryIds()
    made = [ids.next() for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)


def test_a_cursor_round_trips_and_junk_is_refused() -> None:
    delivery_id = DeliveryIds().next()
    cursor = encode_cursor(delivery_id)
    assert delivery_id not in cursor
    assert decode_cursor(cursor) == delivery_id
    for junk in ("bm90LWFuLWlk", "!!!", encode_cursor("dlv_" + "z" * 28)):
        with pytest.raises(InvalidCursor):
            decode_cursor(junk)
