"""The shared user directory: auth's events applied out of order and twice, tombstones."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from switchyard.directory import UserDirectory, apply_user_event
from switchyard.events.auth import UserDeleted, UserRegistered, UserUpdated

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def user_id() -> str:
    return uuid.uuid4().hex


async def test_profile_and_status_follow_the_newest_event_whatever_the_arrival_order(
    mongo_db,
) -> None:
    directory = UserDirectory(mongo_db["users"])
    uid = user_id()
    later = T0 + dt.timedelta(minutes=5)
    # The update arrives before the registration it follows.
    assert await directory.record_profile(
        uid, email="new@example.com", display_name="New", as_of=later
    )
    assert not await directory.record_profile(
        uid, email="old@example.com", display_name="Old", as_of=T0
    )
    assert await directory.record_status(uid, "pending_verification", as_of=T0)
    assert await directory.record_status(uid, "active", as_of=later)
    assert not await directory.record_status(uid, "pending_verification", as_of=T0)  # replayed
    user = await directory.get(uid)
    assert user is not None
    assert (user.email, user.display_name, user.status) == (
        "new@example.com",
        "New",
        "active",
    )


async def test_a_stale_event_for_one_user_never_touches_another(mongo_db) -> None:
    """The guard (no newer profile known) concerns this user's document only: written as a
    bare ``$or`` beside ``_id``, the embedded store applied a stale event of one user to
    *another* user whose profile was older — their email address replaced."""
    directory = UserDirectory(mongo_db["users"])
    older, newer = user_id(), user_id()
    await directory.record_profile(older, email="older@example.com", display_name="O", as_of=T0)
    later = T0 + dt.timedelta(hours=1)
    await directory.record_profile(newer, email="newer@example.com", display_name="N", as_of=later)
    stale = T0 + dt.timedelta(minutes=30)  # older than newer's profile, newer than older's
    assert not await directory.record_profile(
        newer, email="stale@example.com", display_name="S", as_of=stale
    )
    first, second = await directory.get(older), await directory.get(newer)
    assert first is not None and first.email == "older@example.com"
    assert second is not None and second.email == "newer@example.com"


async def test_a_deleted_user_stays_a_tombstone_no_late_event_revives(mongo_db) -> None:
    directory = UserDirectory(mongo_db["users"])
    uid = user_id()
    await directory.record_profile(uid, email="a@example.com", display_name="A", as_of=T0)
    await directory.erase(uid, deleted_at=T0 + dt.timedelta(minutes=1))
    assert not await directory.record_profile(
        uid, email="a@example.com", display_name="A", as_of=T0 + dt.timedelta(minutes=2)
    )
    assert not await directory.record_status(uid, "active", as_of=T0 + dt.timedelta(minutes=2))
    doc = await mongo_db["users"].find_one({"_id": uid})
    assert doc is not None and doc["status"] == "deleted"
    assert "email" not in doc and "display_name" not in doc


async def test_roles_follow_the_newest_profile_and_events_apply_in_any_order(mongo_db) -> None:
    directory = UserDirectory(mongo_db["users"])
    uid = user_id()
    later = T0 + dt.timedelta(minutes=5)
    update = UserUpdated(
        user_id=uid,
        email="ada@example.com",
        display_name="Ada",
        roles=["customer", "contractor"],
        updated_at=later,
    )
    registered = UserRegistered(
        user_id=uid,
        email="ada@example.com",
        display_name="Ada",
        roles=["customer"],
        registered_at=T0,
    )
    for data in (update, registered, update, registered):  # out of order, twice
        await apply_user_event(directory, data)
    user = await directory.get(uid)
    assert user is not None and user.roles == ("customer", "contractor")
    assert user.has_role("contractor") and user.status == "pending_verification"
    await apply_user_event(directory, UserDeleted(user_id=uid, deleted_at=later))
    await apply_user_event(directory, update)
    gone = await directory.get(uid)
    assert gone is not None and gone.deleted and gone.roles == () and not gone.has_role("customer")
    assert set(await directory.get_many([uid, "nobody"])) == {uid}


async def test_one_users_event_never_changes_another_users_record(mongo_db) -> None:
    """A registration with a newer time must not land on an older user's document (a bare
    ``$or`` next to ``_id`` did exactly that on the embedded store)."""
    directory = UserDirectory(mongo_db["users"])
    first, second = user_id(), user_id()
    await apply_user_event(
        directory,
        UserRegistered(
            user_id=first,
            email="first@example.com",
            display_name="First",
            roles=["customer"],
            registered_at=T0,
        ),
    )
    await apply_user_event(
        directory,
        UserRegistered(
            user_id=second,
            email="second@example.com",
            display_name="Second",
            roles=["contractor"],
            registered_at=T0 + dt.timedelta(seconds=1),
        ),
    )
    one, two = await directory.get(first), await directory.get(second)
    assert one is not None and two is not None
    assert (one.email, one.roles) == ("first@example.com", ("customer",))
    assert (two.email, two.roles) == ("second@example.com", ("contractor",))


async def test_users_with_a_role_page_in_id_order_and_tombstones_drop_out(mongo_db) -> None:
    directory = UserDirectory(mongo_db["users"])
    ids = sorted(user_id() for _ in range(5))
    for n, uid in enumerate(ids):
        roles = ["contractor"] if n % 2 == 0 else ["customer"]
        await directory.record_profile(
            uid, email=f"{uid}@example.com", display_name="U", roles=roles, as_of=T0
        )
    await directory.record_profile(
        ids[1],
        email="x@example.com",
        display_name="U",
        roles=["customer", "contractor"],
        as_of=T0 + dt.timedelta(minutes=1),
    )
    await directory.erase(ids[4], deleted_at=T0 + dt.timedelta(minutes=2))
    first = await directory.with_role("contractor", limit=2)
    assert [u.user_id for u in first] == [ids[0], ids[1]]
    rest = await directory.with_role("contractor", after=first[-1].user_id, limit=2)
    assert [u.user_id for u in rest] == [ids[2]]  # ids[4] was erased: a tombstone, no roles
    assert await directory.with_role("admin") == []
