"""Per-upstream circuit breaker, which is also the passive health check.

closed → (``failures`` consecutive failures or timeouts) → open for ``open_seconds``
(the upstream is out of the rotation) → half-open: exactly one probe request is let
through; its success closes the circuit, its failure opens it again.
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
        "state",
        "consecutive",
        "opened_until",
        "probing",
        "opened",
    )

    def __init__(self, failures: int, open_seconds: float) -> None:
        self.failures = failures
        self.open_seconds = open_seconds
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        self.opened_until = 0.0
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
        self.consecutive = 0
        self.probing = False
        self.state = CircuitState.CLOSED

    def failure(self, now: float) -> None:
        self.consecutive += 1
        self.probing = False
        if self.state is CircuitState.HALF_OPEN or self.consecutive >= self.failures:
            if self.state is not CircuitState.OPEN:
                self.opened += 1
            self.state = CircuitState.OPEN
            self.opened_until = now + self.open_seconds

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. the client went away)."""
        self.probing = False
