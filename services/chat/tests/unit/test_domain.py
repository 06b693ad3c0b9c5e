"""The chat domain's rules: conversation ids, message bodies, views, the flood bucket, settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from chat_svc.domain.conversations import (
    Conversation,
    Message,
    clean_body,
    direct_conversation_id,
    preview,
)
from chat_svc.domain.errors import ChatError
from chat_svc.domain.flood import TokenBucket
from chat_svc.settings import ChatSettings
from switchyard.sockets.chat import SendMessage, Sync

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_direct_ids_do_not_depend_on_who_creates_them() -> None:
    assert direct_conversation_id("ada", "grace") == direct_conversation_id("grace", "ada")
    assert direct_conversation_id("ada", "grace") != direct_conversation_id("ada", "lin")
    # no separator confusion between ("ab", "c") and ("a", "bc")
    assert direct_conversation_id("ab", "c") != direct_conversation_id("a", "bc")


@pytest.mark.parametrize(
    ("body", "code"), [("", "empty-body"), (" \n\t ", "empty-body"), ("x" * 4001, "body-too-long")]
)
def test_bodies_are_trimmed_and_bounded(body: str, code: str) -> None:
    with pytest.raises(ChatError) as refused:
        clean_body(body)
    assert refused.value.code == code


def test_a_body_of_exactly_four_thousand_characters_after_trimming_is_fine() -> None:
    assert clean_body("  " + "y" * 4000 + "  ") == "y" * 4000
    assert len(preview("z" * 500)) == 140


def test_views_hide_what_a_deletion_removed() -> None:
    message = Message("m1", "c1", 3, "ada", "secret", ["f1"], "k", NOW, deleted=True)
    view = message.view(sender_deleted=True)
    assert view["body"] == "" and view["attachments"] == [] and view["deleted"]
    assert view["created_at"] == "2026-03-01T12:00:00.000Z" and view["sender_deleted"]
    conversation = Conversation("c1", "direct", None, ["ada", "grace"], [], "ada", 7, NOW)
    shown = conversation.view(unread_count=1, last_read_seq=5)
    assert (shown["last_seq"], shown["last_read_seq"], shown["unread_count"]) == (7, 5, 1)


def test_the_flood_bucket_refuses_beyond_the_burst_and_refills() -> None:
    bucket = TokenBucket(rate=10, burst=3, updated=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.refused_in_a_row == 1
    assert bucket.allow(0.1) and bucket.refused_in_a_row == 0


def test_socket_payloads_are_strict() -> None:
    with pytest.raises(ValidationError):
        SendMessage.model_validate({"conversation_id": "c", "body": 1, "client_msg_id": "k"})
    with pytest.raises(ValidationError):
        Sync.model_validate({"conversation_id": "c", "after_seq": "1"})
    with pytest.raises(ValidationError):
        Sync.model_validate({"conversation_id": "../x", "after_seq": 1})
    assert Sync.model_validate({"conversation_id": "c_1", "after_seq": 0}).limit == 50


def test_settings_refuse_a_presence_ttl_shorter_than_the_heartbeat() -> None:
    with pytest.raises(ValidationError):
        ChatSettings(environment="test", presence_heartbeat=10, presence_ttl=5)
    assert ChatSettings(
        environment="test", cors_origins="https://a.example, https://b.example"
    ).cors_origins == [
        "https://a.example",
        "https://b.example",
    ]
