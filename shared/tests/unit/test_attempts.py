"""Reading the attempt count of a delivery: our own header first, ``x-death`` as a fallback."""

from __future__ import annotations

import pytest

from switchyard.bus.topology import H_ATTEMPT, MalformedHeaders, attempts_from_headers

Q = "svc.things"


def death(queue: str, count: object = 1) -> dict[str, object]:
    return {"queue": queue, "count": count, "reason": "expired"}


def test_a_new_message_has_no_attempts() -> None:
    assert attempts_from_headers(Q, None) == 0
    assert attempts_from_headers(Q, {}) == 0
    assert attempts_from_headers(Q, {"cloudEvents_id": "x"}) == 0


def test_our_header_wins_over_x_death() -> None:
    # On RabbitMQ 4.x the republished x-death is dropped: only the last tier's entry is left.
    headers = {H_ATTEMPT: 2, "x-death": [death(f"{Q}.retry.2")]}
    assert attempts_from_headers(Q, headers) == 2


def test_x_death_is_the_fallback_for_messages_of_earlier_versions() -> None:
    headers = {
        "x-death": [
            death(f"{Q}.retry.2"),
            death(f"{Q}.retry.1", 1),
            death("other.queue.retry.1", 5),  # another consumer's tiers do not count
            death(Q, 3),  # nor does the consumer queue itself (delivery limit, rejects)
        ]
    }
    assert attempts_from_headers(Q, headers) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {H_ATTEMPT: "two"},
        {H_ATTEMPT: -1},
        {H_ATTEMPT: True},
        {H_ATTEMPT: 1.5},
        {"x-death": [death(f"{Q}.retry.1", "abc")]},
        {"x-death": [death(f"{Q}.retry.1", None)]},
        {"x-death": "not a list"},
        {"x-death": ["not a table"]},
    ],
    ids=[
        "attempt-text",
        "attempt-negative",
        "attempt-bool",
        "attempt-float",
        "x-death-count-text",
        "x-death-count-null",
        "x-death-not-list",
        "x-death-entry-not-table",
    ],
)
def test_malformed_counts_are_refused(headers: dict[str, object]) -> None:
    with pytest.raises(MalformedHeaders):
        attempts_from_headers(Q, headers)
