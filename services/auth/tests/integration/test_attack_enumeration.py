"""Telling accounts from non-accounts, through the real gateway (issue 11, item 9).

``password/forgot`` and ``otp/resend`` answered known emails measurably slower (medians
2.8-3.2 ms against 1.6-1.8 ms: 20 of 20 emails classified from 5 samples each), and
``password/reset`` judged the new password against the display name only when the account
existed (a 422 revealed the account and its name).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .conftest import AuthClient, settle

pytestmark = pytest.mark.integration

EMAILS_PER_SIDE = 20
SAMPLES = 5
# Two-sided p < 0.001 under "no difference": one false alarm in a thousand runs.
Z_LIMIT = 3.29


def rank_sum_z(first: list[float], second: list[float]) -> float:
    """Mann-Whitney U of ``first`` against ``second`` as a z score (normal approximation)."""
    pooled = sorted([(value, 0) for value in first] + [(value, 1) for value in second])
    rank_first = sum(rank for rank, (_, side) in enumerate(pooled, start=1) if side == 0)
    n1, n2 = len(first), len(second)
    u = rank_first - n1 * (n1 + 1) / 2
    return (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)


Medians = tuple[list[float], list[float]]


# A difference of medians below this share is left to the next layer: the 5 % seen on auth's
# own port for wrong sign-in codes (known addresses ≈0.1 ms slower: one more document
# returned by the embedded store, z 3-5 over 30 + 30 addresses) is under the jitter of one
# hop through the gateway, and registration's 409 already tells verified addresses. The
# leaks this test was written for were 60-75 % (1.7 vs 2.9 ms).
LEAK_SHARE = 0.10


async def assert_same_timing(measure: Callable[[int], Awaitable[Medians]]) -> None:
    """Fail when ``measure(round)`` (per-email medians of known and unknown addresses) tells
    the two apart in two independent rounds (fresh emails, fresh order), by a significant
    (|z| >= Z_LIMIT) difference of at least ``LEAK_SHARE`` of the median. A burst of load from
    a neighbouring test process can fake a difference once (p < 0.001 is per quiet run); a
    leak is in the code and shows in both rounds."""
    summaries = []
    for round_ in (1, 2):
        known, unknown = await measure(round_)
        z = rank_sum_z(known, unknown)
        known_median, unknown_median = statistics.median(known), statistics.median(unknown)
        share = abs(known_median - unknown_median) / min(known_median, unknown_median)
        summary = (
            f"z={z:.2f}, median-split accuracy {median_split_accuracy(known, unknown):.0%}, "
            f"medians {known_median * 1000:.2f} ms (known) vs "
            f"{unknown_median * 1000:.2f} ms (unknown), {share:.0%} apart"
        )
        print(f"round {round_}: {summary}")
        if abs(z) < Z_LIMIT or share < LEAK_SHARE:
            return
        summaries.append(summary)
    pytest.fail("timing tells known from unknown addresses in both rounds: " + "; ".join(summaries))


def median_split_accuracy(known: list[float], unknown: list[float]) -> float:
    """How well "slower than the median means known" classifies (either direction)."""
    cut = statistics.median(known + unknown)
    right = sum(value > cut for value in known) + sum(value <= cut for value in unknown)
    accuracy = right / (len(known) + len(unknown))
    return max(accuracy, 1 - accuracy)


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/password/forgot", {}),
        ("/otp/resend", {"purpose": "reset_password"}),
        ("/otp/resend", {"purpose": "verify_email"}),
        ("/login/code", {}),
    ],
    ids=["forgot", "resend-reset", "resend-verify", "login-code"],
)
async def test_code_requests_do_not_tell_known_emails_by_timing(
    edge: AuthClient, path: str, extra: dict[str, Any]
) -> None:
    async def measure(round_: int) -> Medians:
        known = [f"known{round_}.{n}@example.com" for n in range(EMAILS_PER_SIDE)]
        for n, email in enumerate(known):
            if n % 2:
                await edge.signed_up(email)  # active accounts
            else:
                assert (await edge.register(email)).status == 201  # pending ones
        unknown = [f"unknown{round_}.{n}@example.com" for n in range(EMAILS_PER_SIDE)]
        await settle(edge)

        order = [email for email in known + unknown for _ in range(SAMPLES)]
        random.Random(9 + round_).shuffle(order)
        took: dict[str, list[float]] = {email: [] for email in known + unknown}
        for email in order:
            started = time.perf_counter()
            reply = await edge.post(path, {"email": email, **extra})
            took[email].append(time.perf_counter() - started)
            assert reply.status == 202
        await settle(edge)
        return (
            [statistics.median(took[email]) for email in known],
            [statistics.median(took[email]) for email in unknown],
        )

    await assert_same_timing(measure)


async def test_password_reset_checks_do_not_depend_on_the_account(edge: AuthClient) -> None:
    """A new password built from the display name is weak only for whoever has that name: the
    answer to a wrong code must not depend on it (nor reveal the name)."""
    known = "kettle.owner@example.com"
    reply = await edge.register(known, "violet-harbour-47-kettle", "Bramble Quixotic")
    assert reply.status == 201
    ghost = "kettle.ghost@example.com"
    for new_password in ("BrambleQuixotic", "bramble quixotic 1", "quixoticbramble!"):
        body = {"code": "123456", "new_password": new_password}
        known_reply = await edge.post("/password/reset", {"email": known, **body})
        ghost_reply = await edge.post("/password/reset", {"email": ghost, **body})
        assert known_reply.status == ghost_reply.status == 400, new_password
        assert known_reply.body["type"] == ghost_reply.body["type"]
        assert known_reply.body["detail"] == ghost_reply.body["detail"]
