"""The deny-list of revoked sessions and the verifier's one lookup in it."""

from __future__ import annotations

import pytest

from switchyard.revocation import DenyList, revoked_sessions_url
from switchyard.tokens import (
    InvalidToken,
    StaticKeys,
    TokenSigner,
    TokenVerifier,
    generate_signing_key,
)

ISSUER = "https://auth.test"
AUDIENCE = "switchyard"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_is_denied_until_its_tokens_expire_plus_the_leeway() -> None:
    clock = Clock()
    deny = DenyList(leeway=30, clock=clock)
    assert deny.add("s1", clock.now + 900)
    assert "s1" in deny and "s2" not in deny
    clock.now += 929
    deny.prune()
    assert "s1" in deny  # a token is accepted until exp + leeway: so is the denial
    clock.now += 1
    assert deny.prune() == 1
    assert "s1" not in deny and len(deny) == 0


def test_adding_what_has_already_expired_or_is_known_longer_changes_nothing() -> None:
    clock = Clock()
    deny = DenyList(leeway=0, clock=clock)
    assert not deny.add("old", clock.now - 1)
    assert "old" not in deny
    assert deny.add("s", clock.now + 100)
    assert not deny.add("s", clock.now + 50)  # a replayed, older announcement
    assert deny.add("s", clock.now + 200)  # a later expiry extends it
    clock.now += 150
    deny.prune()
    assert "s" in deny  # the stale heap entry of the first expiry removed nothing


def test_listeners_hear_each_newly_denied_session_once_and_a_failing_one_is_contained() -> None:
    clock = Clock()
    deny = DenyList(leeway=0, clock=clock)
    heard: list[str] = []

    def broken(_: str) -> None:
        raise RuntimeError("listener bug")

    deny.listeners.extend([broken, heard.append])
    assert deny.add("s1", clock.now + 100)
    assert deny.add("s1", clock.now + 200)  # extended, not new: no second announcement
    assert not deny.add("s2", clock.now - 1)  # already over: nothing to close
    assert deny.add("s3", clock.now + 100)
    assert heard == ["s1", "s3"]
    assert "s1" in deny and "s3" in deny


def test_at_capacity_the_session_closest_to_expiry_is_dropped_first() -> None:
    clock = Clock()
    deny = DenyList(capacity=3, leeway=0, clock=clock)
    deny.add("late", clock.now + 900)
    deny.add("soon", clock.now + 10)
    deny.add("middle", clock.now + 500)
    deny.add("newest", clock.now + 800)
    assert set(deny.entries) == {"late", "middle", "newest"}
    assert deny.evicted == 1
    clock.now += 600  # "middle" has expired: pruning makes room, nothing live is dropped
    deny.add("another", clock.now + 100)
    assert set(deny.entries) == {"late", "newest", "another"}
    assert deny.evicted == 1


def test_the_list_is_bounded_under_a_flood() -> None:
    clock = Clock()
    deny = DenyList(capacity=1000, leeway=0, clock=clock)
    for number in range(10_000):
        deny.add(f"s{number}", clock.now + 60 + number)
    assert len(deny) == 1000 and len(deny._ends) <= 1000
    assert "s9999" in deny and "s0" not in deny


def test_the_verifier_refuses_a_token_of_a_denied_session() -> None:
    kid, private = generate_signing_key()
    clock = Clock(1_700_000_000.0)
    deny = DenyList(clock=clock)
    verifier = TokenVerifier(
        keys=StaticKeys({kid: private.public_key()}),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=clock,
        denied=deny.entries,
    )
    signer = TokenSigner(private, kid, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    token = signer.issue("u1", ["customer"], extra={"sid": "family-1"}).token
    other = signer.issue("u1", ["customer"], extra={"sid": "family-2"}).token
    without_sid = signer.issue("u1", ["customer"]).token
    assert verifier.verify(token).user_id == "u1"
    deny.add("family-1", clock.now + 900)
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    assert refused.value.reason == "revoked"
    assert verifier.verify(other).user_id == "u1"
    assert verifier.verify(without_sid).user_id == "u1"
    # An unhashable sid is refused, not a crash.
    odd = signer.issue("u1", ["customer"], extra={"sid": ["family-1"]}).token
    with pytest.raises(InvalidToken) as malformed:
        verifier.verify(odd)
    assert malformed.value.reason == "malformed"


def test_auths_list_is_found_beside_its_jwks() -> None:
    assert (
        revoked_sessions_url("http://auth:8081/.well-known/jwks.json")
        == "http://auth:8081/internal/v1/auth/revoked-sessions"
    )


def test_one_users_flood_of_revocations_never_evicts_anothers() -> None:
    """Anyone can revoke sessions of their own (sign in, sign out) as fast as the limits let
    them: at capacity, a user's own oldest entries go first, so a flood from a few accounts
    cannot push a victim's revoked session out and re-admit its stolen tokens."""
    clock = Clock()
    deny = DenyList(capacity=100, per_user=10, leeway=0, clock=clock)
    deny.add("victim-session", clock.now + 300, user_id="victim")
    for number in range(10_000):
        deny.add(f"m{number}", clock.now + 600 + number, user_id=f"mallory-{number % 3}")
    assert "victim-session" in deny
    assert len(deny) == 31  # the victim's one and each of mallory's three accounts' newest 10
    assert {f"m{number}" for number in range(9_970, 10_000)} <= set(deny.entries)
    assert deny.evicted == 10_000 - 30
    # what the per-user bookkeeping holds stays bounded too
    assert sum(len(queue) for queue in deny._by_user.values()) <= 3 * (2 * 10 + 16) + 1
    clock.now += 20_000
    deny.prune()
    assert len(deny) == 0 and not deny._by_user and not deny._owner and not deny._live


def test_one_entry_per_user_keeps_the_newest_and_the_bookkeeping_whole() -> None:
    clock = Clock()
    deny = DenyList(capacity=50, per_user=1, leeway=0, clock=clock)
    for number in range(5):
        deny.add(f"a{number}", clock.now + 100 + number, user_id="alice")
        deny.add(f"b{number}", clock.now + 100 + number, user_id="bob")
    assert set(deny.entries) == {"a4", "b4"}
    assert deny._live == {"alice": 1, "bob": 1} and set(deny._by_user) == {"alice", "bob"}
    clock.now += 1_000
    assert deny.prune() == 2
    assert not deny.entries and not deny._live and not deny._by_user and not deny._owner


@pytest.mark.parametrize("attackers", [10, 11, 50])
def test_at_capacity_many_accounts_flooding_never_evict_a_victims_one_entry(
    attackers: int,
) -> None:
    """capacity // per_user accounts (or more), each at its per-user share, fill the list: at
    capacity the account holding the most loses its oldest entry, never the victim's one."""
    clock = Clock()
    deny = DenyList(capacity=100, per_user=10, leeway=0, clock=clock)
    deny.add("victim-session", clock.now + 300, user_id="victim")
    for number in range(20 * attackers):
        deny.add(f"m{number}", clock.now + 600 + number, user_id=f"mallory-{number % attackers}")
    assert "victim-session" in deny
    assert len(deny) == 100
    assert (
        max(deny._live.values())
        - min(count for user, count in deny._live.items() if user != "victim")
        <= 1
    )
    assert deny.capacity_evicted > 0
    assert deny.evicted == 20 * attackers + 1 - 100
    # entries of no known user count as one more "user": the victim's one stays too
    for number in range(300):
        deny.add(f"anon{number}", clock.now + 400 + number)
    assert "victim-session" in deny and len(deny) == 100
    # and so do accounts of one entry each, however many: the last to get there loses it
    for number in range(300):
        deny.add(f"one{number}", clock.now + 700 + number, user_id=f"single-{number}")
    assert "victim-session" in deny and len(deny) == 100


def test_capacity_eviction_keeps_the_bookkeeping_whole() -> None:
    clock = Clock()
    deny = DenyList(capacity=20, per_user=5, leeway=0, clock=clock)
    for number in range(500):
        user = None if number % 7 == 0 else f"u{number % 9}"
        deny.add(f"s{number}", clock.now + 100 + (number * 37) % 400, user_id=user)
        assert len(deny) <= 20
        assert sum(deny._live.values()) + len(deny._unowned) == len(deny)
        assert set(deny._owner) | deny._unowned == set(deny.entries)
        counts = [*deny._live.values(), len(deny._unowned)]
        assert deny._top == max(counts)
        assert {tier for tier, users in deny._tiers.items() if users} == {c for c in counts if c}
    clock.now += 1_000
    deny.prune()
    assert not deny.entries and not deny._live and not deny._unowned and not deny._tiers


def test_heap_items_of_entries_evicted_per_user_stay_bounded() -> None:
    """A user past their share loses entries that are not next to expire: their heap items
    stay until compacted, never more than twice the live entries (plus a little)."""
    clock = Clock()
    deny = DenyList(capacity=1000, per_user=2, leeway=0, clock=clock)
    deny.add("long", clock.now + 100_000, user_id="someone")
    for number in range(5_000):
        deny.add(f"s{number}", clock.now + 10_000 - number, user_id="flooder")
        assert len(deny._ends) <= 2 * len(deny) + 16 + 1
        assert len(deny._unowned_ends) <= 2 * len(deny._unowned) + 16 + 1
    assert set(deny.entries) == {"long", "s4998", "s4999"}


def test_a_time_without_an_offset_is_utc_whatever_the_hosts_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``expires_at`` without an offset (from the bus or auth's list) is UTC: on a host in
    another zone the session must not be denied hours too long or too short."""
    import time as time_module
    from datetime import UTC, datetime

    from switchyard.revocation import _epoch, _utc_epoch

    monkeypatch.setenv("TZ", "America/New_York")
    time_module.tzset()
    try:
        expected = datetime(2030, 1, 1, 12, tzinfo=UTC).timestamp()
        assert _utc_epoch(datetime(2030, 1, 1, 12)) == expected
        assert _epoch("2030-01-01T12:00:00") == expected
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()
