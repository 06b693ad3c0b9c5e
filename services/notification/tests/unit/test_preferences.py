"""Preferences: per category × channel, sign-up and security always on, marketing opt-in."""

from __future__ import annotations

import pytest

from notification_svc.domain.preferences import (
    ALWAYS_SENT,
    CATEGORIES,
    CHANNELS,
    CannotOptOut,
    Preferences,
)


def test_defaults_everything_on_except_marketing() -> None:
    prefs = Preferences("u1")
    matrix = prefs.matrix()
    assert set(matrix) == set(CATEGORIES)
    for category, channels in matrix.items():
        assert set(channels) == set(CHANNELS)
        assert all(channels.values()) is (category != "marketing")
        assert any(channels.values()) is not (category == "marketing")


@pytest.mark.parametrize("category", sorted(ALWAYS_SENT))
@pytest.mark.parametrize("channel", CHANNELS)
def test_signup_and_security_cannot_be_turned_off(category: str, channel: str) -> None:
    prefs = Preferences("u1")
    with pytest.raises(CannotOptOut) as raised:
        prefs.changed({category: {channel: False}})  # type: ignore[dict-item]
    assert (raised.value.category, raised.value.channel) == (category, channel)
    assert prefs.allows(category, channel)  # type: ignore[arg-type]


def test_always_sent_categories_ignore_whatever_was_stored() -> None:
    # Even a document written by an older version that stored an opt-out does not stop them.
    prefs = Preferences("u1", {"security": {"email": False}, "signup": {"email": False}})
    assert prefs.allows("security", "email") and prefs.allows("signup", "email")


def test_turning_on_an_always_sent_category_is_accepted_and_stores_nothing() -> None:
    changed = Preferences("u1").changed({"security": {"email": True}})
    assert changed.choices == {}
    assert changed.version == 1


def test_opting_out_of_one_cell_leaves_the_others() -> None:
    prefs = Preferences("u1").changed({"chat": {"email": False}, "marketing": {"push": True}})
    assert not prefs.allows("chat", "email")
    assert prefs.allows("chat", "push")
    assert prefs.allows("marketing", "push") and not prefs.allows("marketing", "email")
    again = prefs.changed({"chat": {"email": True}})
    assert again.allows("chat", "email") and again.version == 2
    assert prefs.allows("chat", "email") is False  # the original is unchanged (immutable)


def test_a_rejected_change_applies_nothing() -> None:
    prefs = Preferences("u1")
    with pytest.raises(CannotOptOut):
        prefs.changed({"chat": {"email": False}, "security": {"push": False}})
    assert prefs.allows("chat", "email") and prefs.version == 0


@pytest.mark.parametrize("change", [{"news": {"email": False}}, {"chat": {"sms": False}}])
def test_unknown_categories_and_channels_are_refused(change: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="unknown"):
        Preferences("u1").changed(change)
