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
