from __future__ import annotations

from gateway_svc.domain.breaker import CircuitBreaker, CircuitState


def test_opens_after_consecutive_failures_and_recovers_through_one_probe() -> None:
    breaker = CircuitBreaker(failures=3, open_seconds=10)
    breaker.failure(0)
    breaker.success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow(1)
        breaker.failure(1)
    assert breaker.state is CircuitState.OPEN and breaker.opened == 1
    assert not breaker.allow(5)
    assert breaker.retry_after(5) == 6
    assert breaker.allow(11)  # half-open: the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow(11)  # only one probe at a time
    breaker.success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow(11)


def test_a_failed_probe_opens_again() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=2)
    breaker.failure(0)
    assert breaker.allow(2)
    breaker.failure(2)
    assert breaker.state is CircuitState.OPEN and breaker.opened == 2
    assert not breaker.allow(3)


def test_an_abandoned_probe_frees_the_slot() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=1)
    breaker.failure(0)
    assert breaker.allow(1)
    breaker.release_probe()
    assert breaker.allow(1)


def test_open_time_doubles_with_each_opening_up_to_the_cap() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=1, max_open_seconds=5)
    now = 0.0
    seen = []
    for _ in range(5):
        breaker.failure(now)  # a first failure, or the half-open request failing
        assert breaker.state is CircuitState.OPEN
        seen.append(breaker.retry_after(now))
        now = breaker.opened_until
        assert breaker.allow(now)  # half-open once the open time is over
    assert seen == [1, 2, 4, 5, 5]
    assert breaker.opened == 5


def test_a_successful_response_resets_the_open_time() -> None:
    breaker = CircuitBreaker(failures=2, open_seconds=1, max_open_seconds=30)
    breaker.failure(0)
    breaker.failure(0)
    assert breaker.allow(1)
    breaker.failure(1)  # the half-open request failed: 2 s now
    assert breaker.retry_after(1) == 2
    assert breaker.allow(3)
    breaker.success()
    assert breaker.state is CircuitState.CLOSED
    breaker.failure(10)
    assert breaker.state is CircuitState.CLOSED  # one failure of two: still closed
    breaker.failure(10)
    assert breaker.retry_after(10) == 1  # back to the base open time


def test_a_passing_readiness_probe_closes_but_keeps_the_backoff() -> None:
    """The prober's 200 closes the circuit at once; the backoff waits for a real success, so
    a host whose readiness lies reopens for longer each time instead of flapping."""
    breaker = CircuitBreaker(failures=1, open_seconds=1, max_open_seconds=30)
    breaker.failure(0)
    assert not breaker.allow(0.5)
    breaker.recovered()
    assert breaker.state is CircuitState.CLOSED and breaker.allow(0.5)
    breaker.failure(0.6)
    assert breaker.retry_after(0.6) == 2
    breaker.recovered()
    breaker.success()
    breaker.failure(5)
    assert breaker.retry_after(5) == 1


def test_failures_while_open_do_not_extend_the_opening() -> None:
    """Requests that were in flight when the circuit opened (or were routed to it in panic)
    fail too: they neither push the reopening back nor count as another opening."""
    breaker = CircuitBreaker(failures=1, open_seconds=1, max_open_seconds=30)
    breaker.failure(0)
    breaker.failure(0.9)
    breaker.failure(0.95)
    assert breaker.opened == 1 and breaker.opened_until == 1
    assert breaker.allow(1)


def test_the_cap_is_never_below_the_base() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=3, max_open_seconds=1)
    breaker.failure(0)
    assert breaker.retry_after(0) == 3
    assert CircuitBreaker(failures=1, open_seconds=3).max_open_seconds == 3
