from __future__ import annotations

import multiprocessing

from gateway_svc.adapters.limiter_store import LocalStore
from gateway_svc.domain.ratelimit import gcra, retry_after_seconds, state_header
from gateway_svc.domain.routes import RateLimitPolicy

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
