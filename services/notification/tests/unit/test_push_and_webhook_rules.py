"""Pure rules: money formatting, which addresses webhooks may reach, patterns, unsubscribe
tokens, who a webhook subscription may see."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notification_svc.domain.notices import format_money
from notification_svc.domain.unsubscribe import UnsubscribeLinks
from notification_svc.domain.webhooks import (
    Subscription,
    address_allowed,
    category_of,
    valid_pattern,
)
from switchyard.events.payments import Money


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (10001, "USD", "$100.01"),
        (123456789, "EUR", "€1,234,567.89"),
        (500, "JPY", "¥500"),
        (1500, "KWD", "1.500 KWD"),
        (1200, "CHF", "12.00 CHF"),
        (5, "USD", "$0.05"),
    ],
)
def test_amounts_are_formatted_with_their_currency(amount: int, currency: str, text: str) -> None:
    assert format_money(Money(amount=amount, currency=currency)) == text


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "::7f00:1",  # IPv4-compatible of 127.0.0.1
        "::ffff:0:7f00:1",  # IPv4-translated (SIIT) of 127.0.0.1
        "64:ff9b:1::808:808",  # local-use NAT64: internal whatever it embeds
        "fec0::1",  # site-local
        "not-an-ip",
    ],
)
def test_private_local_and_embedded_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address)


def test_patterns_and_categories() -> None:
    assert valid_pattern("payments.*") and valid_pattern("*") and valid_pattern("chat.message.sent")
    assert not valid_pattern("Payments.*") and not valid_pattern("a..b") and not valid_pattern("")
    assert category_of("payments.offer.created") == "payments"
    assert category_of("file.uploaded") == "files"
    assert category_of("auth.user.deleted") == "security"


def test_a_subscription_sees_its_owners_events_unless_an_admin_made_it() -> None:
    from types import SimpleNamespace

    def sub(sees_all: bool) -> Subscription:
        return Subscription(
            id="wh_1",
            owner_id="ada",
            url="https://example.com",
            event_types=("payments.*", "chat.message.sent"),
            secret="whsec_x",
            sees_all=sees_all,
            status="active",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )

    mine = SimpleNamespace(customer_id="ada", contractor_id="bob")
    chat = SimpleNamespace(sender_id="bob", recipient_ids=["ada", "eve"])
    theirs = SimpleNamespace(user_id="bob")
    assert sub(False).may_see(mine) and sub(False).may_see(chat)
    assert not sub(False).may_see(theirs) and sub(True).may_see(theirs)
    assert sub(False).wants("payments.deposit.failed") and not sub(False).wants("file.uploaded")


def test_unsubscribe_tokens_are_signed_and_never_for_always_on_categories() -> None:
    links = UnsubscribeLinks(secret=b"k" * 32, base_url="https://app.example.com/")
    token = links.token("ada", "payments")
    assert links.verify(token) == ("ada", "payments")
    assert links.verify(token[:-2] + "xx") is None
    assert UnsubscribeLinks(secret=b"o" * 32, base_url="x").verify(token) is None
    assert links.headers("ada", "security") == {}
    assert links.verify(links.token("ada", "security")) is None  # type: ignore[arg-type]
    headers = links.headers("ada", "marketing")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith(
        "<https://app.example.com/api/v1/notifications/unsubscribe?token="
    )
