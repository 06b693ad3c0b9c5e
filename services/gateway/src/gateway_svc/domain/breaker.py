"""Per-upstream circuit breaker, which is also the passive health check.

closed → (``failures`` consecutive failures or timeouts) → open (the host leaves the
rotation) → half-open: exactly one request is let through; its success closes the
circuit, its failure opens it again.

The open time grows with repeated failure: ``open_seconds``, then twice that, four times …
up to ``max_open_seconds``; a successful response resets it. While a circuit is open the
gateway also probes the host's readiness itself (see ``gateway_svc.proxy.upstream``) and
closes the circuit as soon as it answers (:meth:`CircuitBreaker.recovered`): an outage
of the upstream is not extended by the breaker.
"""

from __future__ import annotations

from enum import IntEnum


class CircuitState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    __slots__ = (
        "failures",
        "open_seconds",
        "max_open_seconds",
        "state",
        "consecutive",
        "opened_until",
        "open_for",
        "streak",
        "probing",
        "opened",
    )

    def __init__(
        self, failures: int, open_seconds: float, max_open_seconds: float | None = None
    ) -> None:
        self.failures = failures
        self.open_seconds = open_seconds
        self.max_open_seconds = max(open_seconds, max_open_seconds or open_seconds)
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        self.opened_until = 0.0
        self.open_for = 0.0  # how long the current (or last) opening lasts
        self.streak = 0  # openings since the last successful response: the backoff exponent
        self.probing = False
        self.opened = 0  # times the circuit opened (a counter for metrics)

    def allow(self, now: float) -> bool:
        """May a request go to this upstream now? (Taking the half-open probe slot if so.)"""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            if now < self.opened_until:
                return False
            self.state = CircuitState.HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_after(self, now: float) -> float:
        if self.state is CircuitState.OPEN:
            return max(0.0, self.opened_until - now)
        return 0.0

    def success(self) -> None:
        """A response from the host (not a 502/503/504): closed, and the backoff reset."""
        self.consecutive = 0
        self.streak = 0
        self.probing = False
        self.state = CircuitState.CLOSED

    def recovered(self) -> None:
        """The host's readiness probe answered: closed again, but the backoff is kept
        until a real response succeeds (a host whose probe passes while its requests
        fail reopens for longer each time instead of flapping)."""
        self.consecutive = 0
        self.probing = False
        self.state = CircuitState.CLOSED

    def failure(self, now: float) -> None:
        self.consecutive += 1
        self.probing = False
        state = self.state
        if state is CircuitState.OPEN:
            return  # requests that were in flight (or routed in panic) change nothing
        if state is CircuitState.HALF_OPEN or self.consecutive >= self.failures:
            self.opened += 1
            self.open_for = min(
                self.open_seconds * (1 << min(self.streak, 30)), self.max_open_seconds
            )
            self.streak += 1
            self.state = CircuitState.OPEN
            self.opened_until = now + self.open_for

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. the client went away)."""
        self.probing = False
