from __future__ import annotations

import multiprocessing

from gateway_svc.adapters.limiter_store import LocalStore
from gateway_svc.domain.ratelimit import gcra, retry_after_seconds, state_header
from gateway_svc.domain.routes import RateLimitPolicy, Route, RouteTable, load_route_file
from gateway_svc.settings import DEFAULT_ROUTES_FILE

POLICY = RateLimitPolicy("login", 5, 60)  # one request per 12 s, bursts of 5


def test_gcra_allows_the_burst_then_refuses_until_one_interval_passed() -> None:
    tat, now = 0.0, 1000.0
    remaining = []
    for _ in range(5):
        decision, tat = gcra(POLICY, tat, now)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [4, 3, 2, 1, 0]
    refused, same_tat = gcra(POLICY, tat, now)
    assert not refused.allowed and same_tat == tat
    assert refused.retry_after == 12.0
    assert retry_after_seconds(refused) == 12
    assert refused.reset == 60.0
    later, _ = gcra(POLICY, tat, now + 12.0)
    assert later.allowed and later.remaining == 0
    full, _ = gcra(POLICY, tat, now + 60.0)
    assert full.allowed and full.remaining == 4


def test_headers_follow_the_ietf_draft() -> None:
    decision, _ = gcra(POLICY, 0.0, 10.0)
    assert state_header(POLICY, decision) == (
        b'RateLimit-Policy: "login";q=5;w=60\r\nRateLimit: "login";r=4;t=12\r\n'
    )


def test_local_store_keys_are_independent() -> None:
    store = LocalStore(1024)
    assert [store.check(b"a", POLICY).allowed for _ in range(6)] == [True] * 5 + [False]
    assert store.check(b"b", POLICY).allowed


def test_local_store_memory_is_bounded_and_live_keys_survive_churn() -> None:
    store = LocalStore(64)
    for _ in range(5):
        store.check(b"hot", POLICY)
    for index in range(10_000):  # far more keys than slots
        store.check(b"cold-%d" % index, RateLimitPolicy("login", 1000, 1))
    assert len(store._memory) == 64 * 16
    # the hot key's TAT is a minute ahead, so churn of short-lived keys evicted others first
    assert not store.check(b"hot", POLICY).allowed


def _hammer(store: LocalStore, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    allowed = sum(store.check(b"shared", RateLimitPolicy("p", 100, 60)).allowed for _ in range(200))
    results.put(allowed)


def test_one_table_for_forked_workers() -> None:
    store = LocalStore(1024, shared=True)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_hammer, args=(store, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sum(results.get(timeout=5) for _ in workers) == 100


# -- costs: a check priced as a failure at the door, paid back on success (issue 12) --------


def test_cost_zero_asks_without_spending_and_debit_settles_after_the_fact() -> None:
    policy = RateLimitPolicy("p", 10, 10)  # one per second
    now = 100.0
    decision, tat = gcra(policy, 0.0, now, 5)
    assert decision.allowed and decision.remaining == 5 and tat == now + 5
    asked, same = gcra(policy, tat, now, 0)
    assert asked.allowed and same == tat  # room for one more: nothing spent
    _, tat = gcra(policy, tat, now, -4, debit=True)  # a success gives 4 back
    assert tat == now + 1
    _, tat = gcra(policy, tat, now, 50, debit=True)  # spent even past the limit...
    assert tat == now + 20  # ...up to one more window of debt
    refused, _ = gcra(policy, tat, now + 10, 0)
    assert not refused.allowed and refused.retry_after == 1.0
    _, tat = gcra(policy, now + 3, now, -10, debit=True)  # never below "full"
    assert tat == now


def test_the_local_store_takes_costs_and_debits() -> None:
    store = LocalStore(1024)
    policy = RateLimitPolicy("p", 10, 60)
    assert store.check(b"k", policy, 5).allowed
    assert store.check(b"k", policy, 5).allowed
    assert not store.check(b"k", policy, 5).allowed
    store.check(b"k", policy, -4, debit=True)
    assert store.check(b"k", policy, 0).allowed
    assert not store.check(b"k", policy, 5).allowed  # 4 given back: room for 4, not 5
    assert store.check(b"k", policy, 4).allowed


class Door:
    """The production credential policies, replayed on GCRA's arithmetic: admission spends
    the route's cost on the address, the answer pays back or charges the account."""

    def __init__(self) -> None:
        table = RouteTable(load_route_file(DEFAULT_ROUTES_FILE))
        route = table.match(b"POST", b"/api/v1/auth/login", b"")
        codes = table.match(b"POST", b"/api/v1/auth/verify-email", b"")
        assert route is not None and route.outcome is not None
        assert codes is not None and codes.outcome is not None
        self.route, self.codes = route, codes
        self.tats: dict[str, float] = {}

    def spend(self, key: str, policy: RateLimitPolicy, now: float, cost: int, debit: bool) -> bool:
        decision, self.tats[key] = gcra(policy, self.tats.get(key, 0.0), now, cost, debit=debit)
        return decision.allowed

    def attempt(
        self, now: float, address: str, account: str, right: bool, route: Route | None = None
    ) -> str:
        """One check answered at once: "door" (refused at admission), "held" (answer
        replaced by 429), or "answered"."""
        route = route or self.route
        outcome = route.outcome
        assert outcome is not None
        if not self.spend(address, route.policy, now, route.cost, False):
            return "door"
        if right:
            self.spend(address, route.policy, now, -outcome.refund, True)
        key = account + ("@" + address if outcome.per_address else "")
        if not self.spend(key, outcome.account, now, 0 if right else 1, False):
            return "held"
        return "answered"


def test_production_numbers_let_a_campus_in() -> None:
    door = Door()
    # 100 people behind one address within a minute, 20 of them mistyping first
    typos = [door.attempt(i * 0.1, "nat", f"a{i}", right=False) for i in range(20)]
    logins = [door.attempt(2 + i * 0.5, "nat", f"a{i}", right=True) for i in range(100)]
    assert typos == ["answered"] * 20 and logins == ["answered"] * 100
    # even all at once (nothing refunded yet), 60 checks fit in flight from one address
    crowd = Door()
    assert all(
        crowd.spend("nat", crowd.route.policy, 0.0, crowd.route.cost, False) for _ in range(60)
    )


def test_production_numbers_stop_guessing_one_account() -> None:
    door = Door()
    # 20 wrong passwords for one account from one address, spread over a minute
    verdicts = [door.attempt(i * 3.0, "x", "alice", right=False) for i in range(20)]
    assert verdicts.count("answered") <= 12 and verdicts[-1] == "held"
    assert door.attempt(59.0, "x", "alice", right=True) == "held"
    assert door.attempt(59.0, "y", "alice", right=True) == "answered"  # from elsewhere


def test_production_numbers_stop_credential_stuffing() -> None:
    door = Door()
    # 200 wrong passwords across 200 accounts from one address, evenly within a minute
    verdicts = [door.attempt(i * 0.3, "x", f"victim{i}", right=False) for i in range(200)]
    assert verdicts.count("door") >= 70  # 60 at once, then one a second
    assert "held" not in verdicts  # each account was tried once: the address is what stops it


def test_production_numbers_limit_codes_per_account_from_any_address() -> None:
    door = Door()
    verdicts = [
        door.attempt(i * 1.0, f"addr{i}", "carol", right=False, route=door.codes) for i in range(8)
    ]
    assert verdicts[:5] == ["answered"] * 5 and set(verdicts[5:]) == {"held"}
