"""Delivery ids order by creation (they drive pagination); cursors carry only ids we issued."""

from __future__ import annotations

from notification_svc.adapters.deliveries import DeliveryIds, is_delivery_id


def test_ids_are_strictly_increasing_even_within_one_clock_tick() -> None:
    ids = DeliveryIds()
    made = [ids.next() for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)


def test_only_issued_ids_are_delivery_ids() -> None:
    assert is_delivery_id(DeliveryIds().next())
    for junk in ("not-an-id", "dlv_" + "z" * 28, "dlv_" + "0" * 27):
        assert not is_delivery_id(junk)
