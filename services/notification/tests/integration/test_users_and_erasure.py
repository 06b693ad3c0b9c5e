"""The read model of users, kept from auth's events (out of order, twice), and erasure."""

from __future__ import annotations

import datetime as dt

import pytest

from notification_svc import keys
from notification_svc.adapters import deliveries
from notification_svc.adapters.deliveries import DeliveryStore, delivery_indexes
from notification_svc.adapters.preferences import PreferencesConflict, PreferenceStore
from notification_svc.domain.deliveries import ERASED_RECIPIENT, NewDelivery
from switchyard.envelope import utcnow
from switchyard.mongo import ensure_indexes
from switchyard.testing import eventually

from ..support import deleted, event, otp, registered, updated, user_id, verified

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def test_preferences_are_saved_with_a_version_guard(mongo_db) -> None:
    store = PreferenceStore(mongo_db["prefs"])
    uid = user_id()
    first = await store.get(uid)
    await store.save(first.changed({"chat": {"email": False}}))
    with pytest.raises(PreferencesConflict):  # a second writer derived from the same read
        await store.save(first.changed({"files": {"push": False}}))
    current = await store.get(uid)
    assert (
        current.version == 1
        and not current.allows("chat", "email")
        and current.allows("files", "push")
    )
    await store.save(current.changed({"files": {"push": False}}))
    with pytest.raises(PreferencesConflict):
        await store.save(current.changed({"marketing": {"email": True}}))
    assert not (await store.get(uid)).allows("files", "push")


async def test_delivery_claims_are_exclusive_until_the_lease_runs_out(mongo_db) -> None:
    await ensure_indexes(mongo_db, delivery_indexes())
    store = DeliveryStore(mongo_db[deliveries.COLLECTION])
    new = NewDelivery(
        "evt-1", "auth.otp.requested", "email", "a@example.com", "u1", "signup_code", "signup"
    )
    opened = await store.open(new)
    assert (await store.open(new)).id == opened.id  # the unique (event, channel, recipient)
    claimed = await store.claim(opened.id, owner="a", lease=dt.timedelta(seconds=60))
    assert claimed is not None and claimed.status == "sending" and claimed.attempts == 1
    assert await store.claim(opened.id, owner="b", lease=dt.timedelta(seconds=60)) is None
    await store.release(opened.id, owner="a", response="421 try later")
    again = await store.claim(opened.id, owner="b", lease=dt.timedelta(seconds=0))
    assert again is not None and again.attempts == 2
    # b's lease (zero seconds) has run out: a crashed holder's claim can be taken over.
    taken = await store.claim(opened.id, owner="c", lease=dt.timedelta(seconds=60))
    assert taken is not None and taken.attempts == 3
    assert not await store.mark_failed(opened.id, owner="b", response="550")  # b lost its claim
    await store.mark_sent(opened.id, response="250 OK")
    final = await store.get(opened.id)
    assert final is not None and final.status == "sent" and final.sent_at is not None
    assert await store.claim(opened.id, owner="d", lease=dt.timedelta(seconds=60)) is None


async def test_a_claim_concerns_its_own_delivery_only(mongo_db) -> None:
    """Claiming a delivery that is already sent must not take over *another* delivery whose
    lease ran out (a bare ``$or`` beside ``_id`` did, on the embedded store)."""
    await ensure_indexes(mongo_db, delivery_indexes())
    store = DeliveryStore(mongo_db[deliveries.COLLECTION])

    def new(event_id: str) -> NewDelivery:
        return NewDelivery(
            event_id, "auth.otp.requested", "email", "a@example.com", "u1", "signup_code", "signup"
        )

    abandoned, _ = await store.open_claimed(new("evt-a"), owner="gone", lease=dt.timedelta(0))
    sent = await store.open(new("evt-b"))
    await store.mark_sent(sent.id, response="250 OK")
    assert await store.claim(sent.id, owner="me", lease=dt.timedelta(seconds=60)) is None
    other = await store.get(abandoned.id)
    assert other is not None and other.attempts == 1  # nobody took it over


async def test_user_events_build_the_read_model_and_deletion_erases_everything(
    start_service, smtp_sink
) -> None:
    service = await start_service(smtp_port=smtp_sink.port)
    directory = service.app[keys.DIRECTORY]
    preferences = service.app[keys.PREFERENCES]
    uid = user_id()
    await service.publish(event(registered(uid, display_name="Grace", at=utcnow())))
    await service.publish(event(verified(uid, display_name="Grace")))

    async def active() -> bool:
        contact = await directory.get(uid)
        return contact is not None and contact.status == "active"

    await eventually(active)
    await service.publish(
        event(
            updated(
                uid,
                email="grace@example.org",
                display_name="Grace H.",
                at=utcnow() + dt.timedelta(seconds=1),
            )
        )
    )

    async def renamed() -> bool:
        contact = await directory.get(uid)
        return contact is not None and contact.display_name == "Grace H."

    await eventually(renamed)
    contact = await directory.get(uid)
    assert contact is not None and contact.email == "grace@example.org"

    code = event(otp(uid))
    await service.publish(code)
    await service.wait_delivery(code.id)
    await preferences.save((await preferences.get(uid)).changed({"marketing": {"email": True}}))

    await service.publish(event(deleted(uid)))

    async def erased() -> bool:
        contact = await directory.get(uid)
        return contact is not None and contact.deleted

    await eventually(erased)
    delivery = await service.delivery_of(code.id)
    assert (
        delivery is not None
        and delivery.recipient == ERASED_RECIPIENT
        and delivery.provider_response is None
    )
    assert await preferences.collection.find_one({"_id": uid}) is None
    stored = await directory.collection.find_one({"_id": uid})
    assert stored is not None and set(stored) <= {"_id", "status", "erased", "updated"}

    # A late code for the deleted account is recorded as suppressed and never mailed.
    sent_before = len(smtp_sink.messages)
    late = event(otp(uid))
    await service.publish(late)
    suppressed = await service.wait_delivery(late.id)
    assert suppressed.status == "suppressed" and suppressed.reason == "user-deleted"
    assert suppressed.recipient == ERASED_RECIPIENT
    assert len(smtp_sink.messages) == sent_before
